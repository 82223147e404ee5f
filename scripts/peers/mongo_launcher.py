"""Starts the nx-27017 MongoDB wire-protocol emulator in a shape the Rust driver accepts.

The emulator numbers change-stream cursors from 1000 as Int32; the Rust driver rejects
Int32 cursor ids, so they start above 2**32 here (see docs/testing.md).
"""
import itertools
import sys

import nx_27017.changestream as changestream

changestream._cursor_id_counter = itertools.count(1 << 32)

from nx_27017.nx_27017 import main  # noqa: E402

sys.exit(main())
