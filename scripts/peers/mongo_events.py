"""Change events typed as a real server types them, for the nx-27017 emulator.

The emulator builds each change event from its change log's stored JSON with a plain JSON
decoder, so a document's ObjectId arrives as `{"__neosqlite_objectid__": true, "id": ...}`
and a date as `{"$date": ...}`; `clusterTime` is a date, not a Timestamp; deletes carry the
deleted document; `updateDescription` is null. Real servers send BSON: ObjectIds, dates,
a Timestamp `clusterTime`, no `fullDocument` on a delete (without pre-images), and no
`updateDescription` on anything but an update. This module decodes the stored document
with the emulator's own storage decoder, converts it to BSON the way its `find` answers
do, and shapes the event accordingly.

A test hook strips the key from events of collections named `undecodable*`.

Not changed here: replace is still reported as `update` (the change log does not record
which it was), and a `$set` of a date still stores a string (a storage quirk, visible to
`find` as well).
"""

import bson
import nx_27017.changestream as changestream
from neosqlite.collection.json_helpers import neosqlite_json_loads
from nx_27017.utils import convert_neo_to_bson_objectids

_translate_row = changestream.ChangeStreamManager._translate_row


def translate_row(self, stream, rowid, row):
    event = _translate_row(self, stream, rowid, row)
    if event is None:
        return None
    data = row[3]
    full = None
    if event.get("fullDocument") is not None and data:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        full = convert_neo_to_bson_objectids(neosqlite_json_loads(data))
    key = convert_neo_to_bson_objectids(event["documentKey"]["_id"])
    if isinstance(full, dict):
        # The stored document's own _id, typed; the trigger's copy is the fallback.
        key = full.get("_id", key)
        full.setdefault("_id", key)
    event["documentKey"] = {"_id": key}
    # Cluster time: seconds, and the log's row id as the ordinal within them.
    wall = event["wallTime"]
    event["clusterTime"] = bson.Timestamp(int(wall.timestamp()), rowid & 0xFFFFFFFF)
    if event["operationType"] == "delete":
        event.pop("fullDocument", None)
    else:
        event["fullDocument"] = full
    if event.get("updateDescription") is None:
        event.pop("updateDescription", None)
    # Test hook: collections named `undecodable*` get row events without their document's
    # key, an event a reader cannot apply (tests of what stops, and what streams on).
    if str(event.get("ns", {}).get("coll", "")).startswith("undecodable"):
        event.pop("documentKey", None)
        event.pop("fullDocument", None)
    return event


def install():
    changestream.ChangeStreamManager._translate_row = translate_row
