"""Starts the nx-27017 MongoDB wire-protocol emulator in a shape the Rust driver accepts.

- The emulator numbers change-stream cursors from 1000 as Int32; the Rust driver rejects
  Int32 cursor ids, so they start above 2**32 here.
- It supports change streams, like a replica-set member, but its `hello` names no
  replica set, so a client configured with `replicaSet=rs0` (as the seed's ecommerce
  ConfigMap is) refuses it. Here it answers as the primary of a one-member set `rs0`,
  advertised as WARP_MONGO_ADVERTISE_HOST (default 127.0.0.1) and the port.
- With WARP_MONGO_TLS_CERT and WARP_MONGO_TLS_KEY it speaks only TLS (as `mongod
  --tlsMode requireTLS`), and with WARP_MONGO_USERS=user:password[,…] it authenticates
  SCRAM-SHA-256 conversations as a real server does (wrong password: error 18
  AuthenticationFailed), so the seed's `ssl=true&authSource=admin&replicaSet=rs0`
  connection string works against it with only host, port and password changed.
- Database-level change streams (`db.watch()`) deliver every collection's events in
  order, as on a real server, and `currentOp` with `idleCursors: true` lists the open
  change streams (mongo_db_streams.py).

See docs/testing.md.
"""
import asyncio
import base64
import hashlib
import hmac
import itertools
import os
import ssl
import sys
import threading

import bson
import nx_27017.changestream as changestream
import nx_27017.handler as handler
import nx_27017.server as server

changestream._cursor_id_counter = itertools.count(1 << 32)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mongo_dates  # noqa: E402
import mongo_db_streams  # noqa: E402
import mongo_events  # noqa: E402

mongo_dates.install()
mongo_db_streams.install()
mongo_events.install()

SET_NAME = "rs0"
PORT = sys.argv[sys.argv.index("-p") + 1] if "-p" in sys.argv else "27017"
ME = f"{os.environ.get('WARP_MONGO_ADVERTISE_HOST', '127.0.0.1')}:{PORT}"
USERS = dict(
    u.split(":", 1) for u in os.environ.get("WARP_MONGO_USERS", "").split(",") if ":" in u
)
ITERATIONS = 15000
_handle_command = handler.NeoSQLiteHandler.handle_command
_conversations = {}
_conversation_ids = itertools.count(1)
_lock = threading.Lock()


def _hmac(key, text):
    return hmac.new(key, text, hashlib.sha256).digest()


def _fields(payload):
    return dict(item.split("=", 1) for item in payload.split(","))


def _failed(request_id):
    return request_id, {"ok": 0, "code": 18, "codeName": "AuthenticationFailed",
                        "errmsg": "Authentication failed."}


def sasl_start(request_id, command):
    if command.get("mechanism") != "SCRAM-SHA-256":
        return request_id, {"ok": 0, "code": 334, "codeName": "MechanismUnavailable",
                            "errmsg": "Received authentication for mechanism "
                                      f"{command.get('mechanism')} which is not enabled"}
    client_first = bytes(command["payload"]).decode()
    bare = client_first.split(",", 2)[2]
    fields = _fields(bare)
    user = fields["n"]
    if user not in USERS:
        return _failed(request_id)
    salt = hashlib.sha256(user.encode()).digest()[:16]
    nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
    with _lock:
        cid = next(_conversation_ids)
        _conversations[cid] = (user, salt, bare, server_first, nonce)
    return request_id, {"ok": 1, "conversationId": cid, "done": False,
                        "payload": bson.Binary(server_first.encode())}


def sasl_continue(request_id, command):
    with _lock:
        state = _conversations.pop(command.get("conversationId"), None)
    if state is None:
        # The driver's closing empty exchange after `done`.
        return request_id, {"ok": 1, "conversationId": command.get("conversationId"),
                            "done": True, "payload": bson.Binary(b"")}
    user, salt, bare, server_first, nonce = state
    client_final = bytes(command["payload"]).decode()
    without_proof, proof = client_final.rsplit(",p=", 1)
    if _fields(without_proof).get("r") != nonce:
        return _failed(request_id)
    salted = hashlib.pbkdf2_hmac("sha256", USERS[user].encode(), salt, ITERATIONS)
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = _hmac(stored_key, auth_message)
    expected = bytes(a ^ b for a, b in zip(client_key, signature))
    if not hmac.compare_digest(expected, base64.b64decode(proof)):
        return _failed(request_id)
    server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
    final = f"v={base64.b64encode(server_signature).decode()}"
    return request_id, {"ok": 1, "conversationId": command["conversationId"], "done": True,
                        "payload": bson.Binary(final.encode())}


def handle_command(self, msg):
    body = next((doc for kind, doc in msg["sections"] if kind == "body"), None) or {}
    if USERS and "saslStart" in body:
        return sasl_start(msg["request_id"], body)
    if USERS and "saslContinue" in body:
        return sasl_continue(msg["request_id"], body)
    if "currentOp" in body:
        return mongo_db_streams.current_op(self._change_stream_manager, msg["request_id"], body)
    request_id, response = _handle_command(self, msg)
    if isinstance(response, dict) and "maxWireVersion" in response:
        response.update(setName=SET_NAME, setVersion=1, hosts=[ME], primary=ME, me=ME,
                        secondary=False)
        if USERS and "saslSupportedMechs" in body:
            response["saslSupportedMechs"] = ["SCRAM-SHA-256"]
    return request_id, response


handler.NeoSQLiteHandler.handle_command = handle_command

if os.environ.get("WARP_MONGO_TLS_CERT"):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["WARP_MONGO_TLS_CERT"], os.environ["WARP_MONGO_TLS_KEY"])
    _start_server = asyncio.start_server

    async def start_tls_server(callback, host, port, **kwargs):
        return await _start_server(callback, host, port, ssl=context, **kwargs)

    server.asyncio.start_server = start_tls_server

from nx_27017.nx_27017 import main  # noqa: E402

sys.exit(main())
