"""SQLite storage: a durable queue in one file, in WAL mode.

`backend.py` is the `Backend` (what sitq asks of storage); `sql.py` holds every statement as
plain SQL; `ops.py` runs them, each operation whole in the connection's thread; `schema.py`
creates and upgrades a file; `lock.py`, `watch.py` and `errors.py` deal with the write lock,
noticing other processes' commits, and SQLite's raw errors.
"""

from sitq.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
