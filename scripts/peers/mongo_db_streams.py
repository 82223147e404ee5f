"""Database-level change streams (`db.watch()`, `aggregate: 1`) for the nx-27017 emulator.

The emulator serves change streams per collection only: a database-level stream opens on a
collection named "1" and delivers nothing. A real server's database-level stream carries
every collection's events in one order, which is what cartridge-warp's shared feed reads.
The emulator keeps one change log per database (`_neosqlite_changestream`, filled by
triggers per collection, its row ids shared by all collections), so a database-level
stream here reads that log across collections in row-id order:

- every collection of the database is tracked when the stream opens, and a collection
  created while a database stream is open is tracked as it is created, so its first
  writes are in the stream as on a real server;
- resume tokens are the emulator's own (`nx:<row id>`), comparable with its collection
  streams' tokens, as a real server's cluster-time tokens are;
- the emulator prunes its log per collection behind the collection streams; database
  streams hold that pruning back as well;
- `$match` takes the logical operators `$or`, `$and` and `$nor` at its top level, as a
  real server's does (the emulator compares only field paths, so a `$match` with `$or`
  filtered out every event);
- a stream resumed from a token whose later events were pruned is refused with
  `ChangeStreamHistoryLost` (286), as a real server refuses a resume point no longer in
  its oplog (the emulator silently went on from the oldest event it still had). This
  applies to collection streams too.
"""
import logging
import threading

import bson

import neosqlite.collection as neo_collection
import nx_27017.changestream as changestream
import nx_27017.handler as handler

logger = logging.getLogger("nx_27017")

_handle_change_stream = handler.NeoSQLiteHandler._handle_change_stream
_pull_stream = changestream.ChangeStreamManager.pull_stream
_RETENTION = changestream._RESUME_RETENTION_ROWS
_ensure_tracked = changestream.ChangeStreamManager.ensure_tracked
_create = neo_collection.Collection.create
_match_spec = changestream._match_spec
# (manager, database name, database) of every database a database stream was opened on.
_databases = []
_local = threading.local()
# (database, collection) -> the highest change-log row id pruned from it.
_pruned = {}

HISTORY_LOST = (
    "Resume of change stream was not possible, as the resume point may no longer be in "
    "the oplog."
)


def _history_lost(db_name, coll_name, pipeline):
    """Whether events after the pipeline's resume token were pruned."""
    options = changestream.extract_change_stream_options(pipeline)
    token = options.get("resume_after") or options.get("start_after")
    rowid = changestream._wire_rowid(token) if token is not None else None
    if rowid is None:
        return False
    whole_database = _is_database_level(coll_name)
    pruned = [
        top
        for (db, coll), top in _pruned.items()
        if db == db_name and (whole_database or coll == coll_name)
    ]
    return bool(pruned) and rowid < max(pruned)


def _matches(change, spec):
    for key, condition in spec.items():
        if key in ("$or", "$and", "$nor"):
            hits = (isinstance(c, dict) and _matches(change, c) for c in condition)
            ok = any(hits) if key == "$or" else all(hits) if key == "$and" else not any(hits)
        else:
            ok = _match_spec(changestream._get_dotted(change, key), condition)
        if not ok:
            return False
    return True


def pipeline_matches(change, pipeline):
    """The emulator's `$match` of change streams, with top-level logical operators."""
    for stage in pipeline:
        if isinstance(stage, dict) and set(stage) == {"$match"}:
            if isinstance(stage["$match"], dict) and not _matches(change, stage["$match"]):
                return False
    return True


def ensure_tracked(self, db_name, collection_name, get_collection):
    # Collections the tracking itself creates are being tracked already.
    _local.busy = True
    try:
        return _ensure_tracked(self, db_name, collection_name, get_collection)
    finally:
        _local.busy = False


def create(self, *args, **kwargs):
    """Creates the collection, then tracks it for the database streams open on its database."""
    result = _create(self, *args, **kwargs)
    if getattr(_local, "busy", False):
        return result
    for manager, db_name, database in list(_databases):
        if getattr(database, "db", None) is not self.db:
            continue
        streams = list(manager._streams.values())
        if any(getattr(s, "_database_level", False) and not s._closed and s.db_name == db_name
               for s in streams):
            manager.ensure_tracked(db_name, self.name, lambda: self)
    return result


def _is_database_level(coll_name):
    return not isinstance(coll_name, bool) and coll_name in (1, 1.0, "1")


def _track_all(manager, db, db_name):
    for name in db.list_collection_names():
        if name.startswith(("system.", "_neosqlite")):
            continue
        manager.ensure_tracked(db_name, name, lambda name=name: db[name])


def _sqlite(manager, db_name):
    """The SQLite connection of `db_name`'s change log (any tracked collection's)."""
    with manager._lock:
        for (tracked_db, _), tracker in manager._trackers.items():
            if tracked_db == db_name:
                return tracker["collection"].db
    return None


def handle_change_stream(self, request_id, coll_name, pipeline, db, db_name="test", owner=None):
    if _history_lost(db_name, coll_name, pipeline):
        return request_id, {
            "ok": 0,
            "errmsg": HISTORY_LOST,
            "code": 286,
            "codeName": "ChangeStreamHistoryLost",
        }
    if not _is_database_level(coll_name):
        return _handle_change_stream(self, request_id, coll_name, pipeline, db, db_name, owner)
    try:
        manager = self._change_stream_manager
        if not any(m is manager and d is db for m, _, d in _databases):
            _databases.append((manager, db_name, db))
        _track_all(manager, db, db_name)
        options = changestream.extract_change_stream_options(pipeline)
        stream = manager.create_stream(
            collection_name="",
            pipeline=pipeline,
            resume_after=options.get("resume_after"),
            start_at_operation_time=options.get("start_at_operation_time"),
            full_document=options.get("full_document"),
            db_name=db_name,
            owner=owner,
            start_after=options.get("start_after"),
        )
        stream._database = db
        stream._database_level = True
        if options.get("resume_after") is None and options.get("start_after") is None:
            conn = _sqlite(manager, db_name)
            if conn is not None:
                row = conn.execute(
                    "SELECT COALESCE(MAX(id), 0) FROM _neosqlite_changestream"
                ).fetchone()
                stream._watermark = int(row[0]) if row else 0
        return request_id, {
            "ok": 1,
            "cursor": {
                "id": stream._id,
                "ns": f"{db_name}.$cmd.aggregate",
                "firstBatch": [],
                "postBatchResumeToken": stream.get_resume_token(),
            },
        }
    except Exception as e:  # noqa: BLE001 - answered as the server would
        logger.error("database change stream: %s", e)
        return request_id, {"ok": 0, "errmsg": str(e)}


def pull_stream(self, stream, batch_size=101):
    if not getattr(stream, "_database_level", False):
        return _pull_stream(self, stream, batch_size)
    _track_all(self, stream._database, stream.db_name)
    conn = _sqlite(self, stream.db_name)
    batch = []
    if conn is None:
        return batch, stream.get_resume_token()
    from neosqlite.collection.jsonb_support import json_data_column, supports_jsonb

    data = json_data_column(supports_jsonb(conn), "document_data")
    rows = conn.execute(
        "SELECT id, operation, document_id, "
        f"{data} AS document_data, document_id_value, collection_name "
        "FROM _neosqlite_changestream WHERE id > ? ORDER BY id LIMIT ?",
        (stream._watermark, batch_size),
    ).fetchall()
    for row in rows:
        rowid = int(row[0])
        stream._watermark = max(stream._watermark, rowid)
        # The event names its own collection.
        stream.collection_name = row[5]
        try:
            doc = self._translate_row(stream, rowid, row)
        finally:
            stream.collection_name = ""
        if doc is not None and changestream._pipeline_matches(doc, stream.pipeline):
            batch.append(doc)
            stream._last_token_id = rowid
    return batch, stream.get_resume_token()


def prune(self, db_name, collection_name):
    """The emulator's pruning, holding rows any stream of the database still needs."""
    with self._lock:
        tracker = self._trackers.get((db_name, collection_name))
        marks = [
            s._watermark
            for s in self._streams.values()
            if not s._closed
            and s.db_name == db_name
            and (s.collection_name == collection_name or getattr(s, "_database_level", False))
        ]
    if tracker is None or not marks:
        return
    floor = min(marks)
    if floor <= 0:
        return
    try:
        doomed = (
            "FROM _neosqlite_changestream "
            "WHERE collection_name = ? AND id < ? AND id NOT IN ("
            "SELECT id FROM _neosqlite_changestream "
            "WHERE collection_name = ? ORDER BY id DESC LIMIT ?)"
        )
        args = (collection_name, floor, collection_name, _RETENTION)
        conn = tracker["collection"].db
        top = conn.execute("SELECT MAX(id) " + doomed, args).fetchone()
        conn.execute("DELETE " + doomed, args)
        if top and top[0] is not None:
            key = (db_name, collection_name)
            _pruned[key] = max(_pruned.get(key, 0), int(top[0]))
    except Exception as exc:  # noqa: BLE001 - as the emulator's own pruning
        logger.debug("ChangeStream prune skipped: %s", exc)


def current_op(manager, request_id, command):
    """`currentOp` with `idleCursors: true`, as a real server lists open change streams
    between getMores (its other operations are not listed here): what tests count to
    see how many streams a replicator holds."""
    inprog = []
    if command.get("idleCursors"):
        with manager._lock:
            streams = [s for s in manager._streams.values() if not s._closed]
        for s in streams:
            level = getattr(s, "_database_level", False)
            inprog.append({
                "type": "idleCursor",
                "ns": f"{s.db_name}.{'$cmd.aggregate' if level else s.collection_name}",
                "cursor": {
                    "cursorId": bson.Int64(s._id),
                    "originatingCommand": {
                        "aggregate": 1 if level else s.collection_name,
                        "pipeline": list(s.pipeline or []),
                        "$db": s.db_name,
                    },
                },
            })
    return request_id, {"ok": 1, "inprog": inprog}


_invalidate = changestream.ChangeStreamManager.invalidate


def invalidate(self, db_name=None):
    """A dropped database starts its change log (and its tokens) afresh."""
    for key in [k for k in _pruned if db_name is None or k[0] == db_name]:
        del _pruned[key]
    _invalidate(self, db_name)


def install():
    changestream.ChangeStreamManager.invalidate = invalidate
    changestream._pipeline_matches = pipeline_matches
    changestream.ChangeStreamManager.ensure_tracked = ensure_tracked
    neo_collection.Collection.create = create
    handler.NeoSQLiteHandler._handle_change_stream = handle_change_stream
    changestream.ChangeStreamManager.pull_stream = pull_stream
    changestream.ChangeStreamManager._prune = prune
