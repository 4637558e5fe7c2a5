"""Where time comes from: one seam for every timestamp and every "is it due yet?".

A queue full of retries and delays is hard to test and hard to teach with the wall clock.
Every sitq part asks a `Clock` instead, so a test or a notebook can pass a `FakeClock` and
watch a five-attempt exponential backoff unfold in virtual time, instantly and exactly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

#: 2026-01-01T00:00:00Z: FakeClock's default start, so virtual datetimes look ordinary.
DEFAULT_FAKE_START = 1_767_225_600.0


@runtime_checkable
class Clock(Protocol):
    """What sitq needs from time: read it, and wait until a moment arrives."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline` (a virtual clock may jump there at once)."""
        ...


class SystemClock:
    """The real clock: `time.time()` and real `asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """Virtual time that only moves when told to, or when someone sleeps on it.

    `sleep_until` jumps straight to the deadline, so a worker waiting for a retry that is
    due in 30 virtual seconds carries on at once. `advance` and `set` move time by hand.
    """

    def __init__(self, start: float = DEFAULT_FAKE_START) -> None:
        self._now = float(start)
        self.start = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (never backward) and return the new time."""
        if not seconds >= 0:
            raise ValueError(f"FakeClock.advance needs seconds >= 0, got {seconds!r}")
        self._now += seconds
        return self._now

    def set(self, timestamp: float) -> None:
        """Jump to `timestamp`; moving backward is refused, as real time never does."""
        if timestamp < self._now:
            raise ValueError(f"FakeClock cannot go back from {self._now} to {timestamp}")
        self._now = float(timestamp)

    def elapsed(self) -> float:
        """Virtual seconds since the clock was made: handy for printing schedules."""
        return self._now - self.start

    async def sleep(self, seconds: float) -> None:
        """A task-side sleep in virtual time: advances the clock and yields once."""
        self.advance(seconds)
        await asyncio.sleep(0)

    async def sleep_until(self, deadline: float) -> None:
        if deadline > self._now:
            self._now = deadline
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now=+{self.elapsed():g}s)"
