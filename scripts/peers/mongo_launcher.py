"""Starts the nx-27017 MongoDB wire-protocol emulator in a shape the Rust driver accepts.

- The emulator numbers change-stream cursors from 1000 as Int32; the Rust driver rejects
  Int32 cursor ids, so they start above 2**32 here.
- It supports change streams, like a replica-set member, but its `hello` names no
  replica set, so a client configured with `replicaSet=rs0` (as the seed's ecommerce
  ConfigMap is) refuses it. Here it answers as the primary of a one-member set `rs0`.

See docs/testing.md.
"""
import itertools
import sys

import nx_27017.changestream as changestream
import nx_27017.handler as handler

changestream._cursor_id_counter = itertools.count(1 << 32)

SET_NAME = "rs0"
PORT = sys.argv[sys.argv.index("-p") + 1] if "-p" in sys.argv else "27017"
_handle_command = handler.NeoSQLiteHandler.handle_command


def handle_command(self, msg):
    request_id, response = _handle_command(self, msg)
    if isinstance(response, dict) and "maxWireVersion" in response:
        me = f"127.0.0.1:{PORT}"
        response.update(setName=SET_NAME, setVersion=1, hosts=[me], primary=me, me=me, secondary=False)
    return request_id, response


handler.NeoSQLiteHandler.handle_command = handle_command

from nx_27017.nx_27017 import main  # noqa: E402

sys.exit(main())
