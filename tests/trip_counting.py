"""Counting round trips into the SQLite connection's thread (`sitq.backends.sqlite.thread`).

A trip is one pass of that thread: it wakes, runs what was queued, and wakes the event loop
with the answers. The thread counts its passes (and those that wrote); this reads the counts.
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
        self._trips, self._writes = self._thread.trips, self._thread.write_trips

    @property
    def count(self) -> int:
        return self._thread.trips - self._trips

    @property
    def writes(self) -> int:
        """Trips that wrote: each one transaction (one group of writes)."""
        return self._thread.write_trips - self._writes

    def __repr__(self) -> str:
        return f"Trips(count={self.count}, writes={self.writes})"


@contextmanager
def counting_trips(backend: SQLiteBackend) -> Iterator[Trips]:
    thread = backend._thread
    assert thread is not None, "connect the backend first"
    yield Trips(thread)
