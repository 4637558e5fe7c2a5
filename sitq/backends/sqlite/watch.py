"""Noticing commits to a SQLite file without a trip to its connection.

An idle worker wants to know, within milliseconds, that another process has enqueued work.
Asking SQLite (`PRAGMA data_version`) is a round trip to the connection's thread: two thread
wake-ups, about half a millisecond of CPU. Fifty of those a second is most of what an idle
worker costs.

In WAL mode SQLite keeps a *wal-index* beside the database, the `-shm` file that every
connection maps as shared memory, and it rewrites that file's header on every commit (its
format is documented: https://www.sqlite.org/walformat.html, "The WAL-Index Header"). So
`CommitWatch` reads the header's first 48 bytes and compares them with what it saw last:
one `pread`, about a microsecond, and no trip.

A change can be a false alarm (this connection's own commit, a checkpoint): the caller then
just looks for work and finds none. Where there is no such file (an in-memory database), or
it cannot be mapped, `open` says so and the caller asks `PRAGMA data_version` instead.

It reads through *SQLite's own* descriptor of the `-shm` file, found in /proc/self/fd, and
never opens (or maps: `mmap` duplicates the descriptor and closes the copy) one of its own.
Closing any descriptor of a file drops every POSIX lock the process holds on it (fcntl's
rule), SQLite's too: a watch that mapped the file through a descriptor of its own and
closed it dropped SQLite's "dead man's switch" lock, so a connection in another process
could take itself for the first, truncate the file to 3 bytes, and the next read of the
mapping ended a worker with SIGBUS. SQLite keeps its descriptor for as long as this
process has a connection to the file, and the backend closes the watch before its
connection. Where there is no /proc (not Linux), the caller polls `PRAGMA data_version`.
"""

from __future__ import annotations

import os

HEADER_BYTES = 48  # the first copy of the WAL-index header


class CommitWatch:
    """Watches the WAL-index header of one database file."""

    def __init__(self, database_path: str) -> None:
        self.shm_path: str = database_path + "-shm"
        self._fd: int | None = None  # SQLite's descriptor: read, never closed here
        self._seen = b""

    def open(self) -> bool:
        """Find SQLite's descriptor of the `-shm` file (once); True if the watch works. Call
        it once this process's SQLite connection has read the database in WAL mode (SQLite
        opens the `-shm` file then); until then it says False and can be asked again."""
        if self._fd is None:
            fd = sqlite_descriptor(self.shm_path)
            if fd is None:
                return False
            try:
                self._seen = os.pread(fd, HEADER_BYTES, 0)
            except OSError:
                return False
            self._fd = fd
        return True

    def changed(self) -> bool:
        """True if a commit (or a checkpoint) rewrote the header since the last look."""
        assert self._fd is not None, "open() the watch first"
        now = os.pread(self._fd, HEADER_BYTES, 0)
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        """Stop reading (the descriptor stays SQLite's): before the connection closes."""
        self._fd = None


def sqlite_descriptor(path: str) -> int | None:
    """A descriptor this process already has open on `path` (SQLite's own), or None."""
    wanted = os.path.realpath(path)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: not Linux
        return None
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == wanted:
                return int(name)
        except OSError:  # closed meanwhile (the listing's own descriptor, another thread's)
            continue
    return None
