"""Noticing commits to a SQLite file without a trip to its connection.

An idle worker wants to know, within milliseconds, that another process has enqueued work.
Asking SQLite (`PRAGMA data_version`) is a round trip to aiosqlite's thread: two thread
wake-ups, about half a millisecond of CPU. Fifty of those a second is most of what an idle
worker costs.

In WAL mode SQLite keeps a *wal-index* beside the database, the `-shm` file that every
connection maps as shared memory, and it rewrites that file's header on every commit (its
format is documented: https://www.sqlite.org/walformat.html, "The WAL-Index Header"). So
`CommitWatch` maps the file read-only and compares the header's first 48 bytes with what
it saw last: a memory read, well under a microsecond, no trip and no system call.

A change can be a false alarm (this connection's own commit, a checkpoint): the caller then
just looks for work and finds none. Where there is no such file (an in-memory database), or
it cannot be mapped, `open` says so and the caller asks `PRAGMA data_version` instead.
"""

from __future__ import annotations

import mmap
import os

HEADER_BYTES = 48  # the first copy of the WAL-index header


class CommitWatch:
    """Watches the WAL-index header of one database file."""

    def __init__(self, database_path: str) -> None:
        self.shm_path = database_path + "-shm"
        self._map: mmap.mmap | None = None
        self._seen = b""

    def open(self) -> bool:
        """Map the `-shm` file if that is possible (once); True if the watch works."""
        if self._map is None:
            try:
                fd = os.open(self.shm_path, os.O_RDONLY)
            except OSError:
                return False
            try:
                self._map = mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # an empty file, a file system without mmap
                return False
            finally:
                os.close(fd)  # the mapping stays valid without the descriptor
            self._seen = self._map[:HEADER_BYTES]
        return True

    def changed(self) -> bool:
        """True if a commit (or a checkpoint) rewrote the header since the last look."""
        assert self._map is not None, "open() the watch first"
        now = self._map[:HEADER_BYTES]
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
