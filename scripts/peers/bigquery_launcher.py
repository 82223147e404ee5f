"""Starts the bqemulator BigQuery REST emulator offline.

At start-up it tries to download DuckDB's spatial extension, which fails without
internet; GEOGRAPHY is not needed by our tests, so that step is skipped.
"""
import sys

import bqemulator.storage.engine as engine

engine.DuckDBEngine._load_spatial = lambda self: None

from bqemulator.cli import main  # noqa: E402

sys.exit(main())
