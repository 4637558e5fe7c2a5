"""Counting round trips into the SQLite connection's thread (`sitq.backends.sqlite.thread`).

A trip is one pass of that thread: it wakes, runs what was queued, and wakes the event loop
with the answers. The thread counts its passes (and those that wrote); this reads the counts.
A short write done on the event loop's own thread (the connection idle) is a visit too, and
one transaction: `count` and `writes` include those, `here` says how many there were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sitq import SQLiteBackend
from sitq.backends.sqlite.thread import ConnectionThread


class Trips:
    """Trips since the block began (or since `clear()`)."""

    def __init__(self, thread: ConnectionThread) -> None:
        self._thread = thread
        self.clear()

    def clear(self) -> None:
        thread = self._thread
        self._trips, self._writes, self._here = thread.trips, thread.write_trips, thread.writes_here

    @property
    def here(self) -> int:
        """Short writes done on the event loop's thread, no trip needed."""
        return self._thread.writes_here - self._here

    @property
    def count(self) -> int:
        return self._thread.trips - self._trips + self.here

    @property
    def writes(self) -> int:
        """Trips that wrote, and writes done here: each one transaction."""
        return self._thread.write_trips - self._writes + self.here

    def __repr__(self) -> str:
        return f"Trips(count={self.count}, writes={self.writes}, here={self.here})"


@contextmanager
def counting_trips(backend: SQLiteBackend) -> Iterator[Trips]:
    thread = backend._thread
    assert thread is not None, "connect the backend first"
    yield Trips(thread)
