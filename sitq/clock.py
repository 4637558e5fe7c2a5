"""Where time comes from: one seam for every timestamp and every "is it due yet?".

A queue full of retries and delays is hard to test and hard to teach with the wall clock.
Every sitq part asks a `Clock` instead, so a test or a notebook can pass a `FakeClock` and
watch a five-attempt exponential backoff unfold in virtual time, instantly and exactly.

A clock answers three questions:

- `now()`: what time is it?
- `sleep_until(deadline)`: the deterministic drivers (`run_until_idle`) wait for the next
  due task this way. A `FakeClock` simply jumps there.
- `wait(deadline, event)`: background loops (the worker's idle wait, the lease heartbeat)
  wait until a deadline *or* a signal. A `FakeClock` does not jump here: it returns when
  someone moves virtual time past the deadline (`advance`, `set`) or the event is set.
  That is how a test drives a heartbeat: `clock.advance(10)` and the heartbeat runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

#: 2026-01-01T00:00:00Z: FakeClock's default start, so virtual datetimes look ordinary.
DEFAULT_FAKE_START = 1_767_225_600.0
#: A change of (wall clock - monotonic clock) bigger than this between two looks is a step.
STEP_TOLERANCE = 1.0
#: Steps a SystemClock remembers (they are rare: a hand-set clock, NTP's first sync, a resume).
STEPS_KEPT = 64


@runtime_checkable
class Clock(Protocol):
    """What sitq needs from time: read it, and wait until a moment arrives."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline` (a virtual clock may jump there at once)."""
        ...

    async def wait(self, deadline: float | None, event: asyncio.Event | None = None) -> bool:
        """Wait until `deadline` (None: no deadline) or until `event` is set.

        Returns True if the event was set, False if the deadline came first.
        """
        ...


async def _wait_event(event: asyncio.Event | None, timeout: float | None) -> bool:
    """Wait for `event` up to `timeout` real seconds (None: forever); True if it was set."""
    if event is None:
        if timeout is None:
            await asyncio.Future()  # no deadline and nothing to wait for: until cancelled
        elif timeout > 0:
            await asyncio.sleep(timeout)
        return False
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class SystemClock:
    """The real clock: `time.time()` and real `asyncio.sleep`.

    It also notices when the wall clock *steps* (set by hand, NTP's first sync, a machine
    resumed from suspend): the monotonic clock never steps, so a change of `now() -
    time.monotonic()` between two looks is one. On one machine every process sees the
    same step, and every lease and finish time written before it looks that much older:
    `stepped_forward` tells a backend how much to discount (see `SQLiteBackend`).
    """

    def __init__(self) -> None:
        self._offset: float | None = None  # now() - monotonic() at the last look
        self._steps: list[tuple[float, float]] = []  # (monotonic time seen, seconds forward)

    def now(self) -> float:
        return time.time()

    def stepped_forward(self, within: float) -> float:
        """Seconds the wall clock jumped forward in the last `within` seconds (as the
        monotonic clock counts them, from when a look first saw the jump). A step is seen
        at the first look after it: claims look several times a second."""
        seen = time.monotonic()
        offset = self.now() - seen
        if self._offset is not None and offset - self._offset > STEP_TOLERANCE:
            self._steps = [*self._steps[-STEPS_KEPT + 1 :], (seen, offset - self._offset)]
        self._offset = offset  # a step back only moves the baseline: it makes nothing older
        if not self._steps:  # the common case, on every claim: no generator to make
            return 0.0
        return sum(size for when, size in self._steps if seen - when <= within)

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def wait(self, deadline: float | None, event: asyncio.Event | None = None) -> bool:
        timeout = None if deadline is None else max(0.0, deadline - self.now())
        return await _wait_event(event, timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


def wall_clock_of(now: float | Callable[[], float]) -> SystemClock | None:
    """The SystemClock whose `now` method this is, or None (a FakeClock's, a number).

    Backends are handed a clock's `now` method and decide, from whose it is, which clock
    a lease is measured on: real time may be replaced by a shared clock (PostgreSQL's
    server) or corrected for steps (SQLite), virtual time is only known to its owner.
    """
    owner = getattr(now, "__self__", None)
    return owner if isinstance(owner, SystemClock) else None


class FakeClock:
    """Virtual time that only moves when told to, or when a driver sleeps on it.

    `sleep_until` jumps straight to the deadline, so `run_until_idle` reaches a retry due in
    30 virtual seconds at once. `advance` and `set` move time by hand, and wake every
    `wait` whose deadline they pass (the worker's heartbeat, a started worker's idle wait).
    """

    def __init__(self, start: float = DEFAULT_FAKE_START) -> None:
        self._now = float(start)
        self.start: float = float(start)
        self._moved = asyncio.Event()  # replaced on every move; waiters re-check the time
        self._loops: set[asyncio.AbstractEventLoop] = set()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (never backward) and return the new time."""
        if not seconds >= 0:
            raise ValueError(f"FakeClock.advance needs seconds >= 0, got {seconds!r}")
        self._move_to(self._now + seconds)
        return self._now

    def set(self, timestamp: float) -> None:
        """Jump to `timestamp`; moving backward is refused, as real time never does."""
        if timestamp < self._now:
            raise ValueError(f"FakeClock cannot go back from {self._now} to {timestamp}")
        self._move_to(float(timestamp))

    def elapsed(self) -> float:
        """Virtual seconds since the clock was made: handy for printing schedules."""
        return self._now - self.start

    async def sleep(self, seconds: float) -> None:
        """A task-side sleep in virtual time: advances the clock and yields once."""
        self.advance(seconds)
        await asyncio.sleep(0)

    async def sleep_until(self, deadline: float) -> None:
        if deadline > self._now:
            self._move_to(deadline)
        await asyncio.sleep(0)

    async def wait(self, deadline: float | None, event: asyncio.Event | None = None) -> bool:
        """Wait for `event`, or for virtual time to be moved past `deadline` by someone."""
        self._loops.add(asyncio.get_running_loop())
        while deadline is None or self._now < deadline:
            if event is not None and event.is_set():
                return True
            moved = self._moved
            waiters = [asyncio.ensure_future(moved.wait())]
            if event is not None:
                waiters.append(asyncio.ensure_future(event.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return event is not None and event.is_set()

    def _move_to(self, timestamp: float) -> None:
        """Set the time and wake the waiters (on their own loops: a SyncTaskQueue's loop
        runs in another thread)."""
        self._now = timestamp
        moved, self._moved = self._moved, asyncio.Event()
        for loop in list(self._loops):
            if loop.is_closed():
                self._loops.discard(loop)
            else:
                loop.call_soon_threadsafe(moved.set)

    def __repr__(self) -> str:
        return f"FakeClock(now=+{self.elapsed():g}s)"


class Signal:
    """An in-process "something changed" bell that never loses a ring.

    Take `signal.ticket()` *before* looking at the database, then `await signal.wait(ticket,
    timeout)`: a ring between the look and the wait is not missed, because a ring sets the
    event that earlier tickets hold, and a ticket taken after it gets a fresh one. (The
    fresh event is made when the next ticket is taken, not at every ring: every enqueue
    rings, and most rings find nobody holding a ticket: a hot path may skip the call when
    `listened` is False.) An event belongs to the loop that waits on it, so a ticket taken
    on another loop (the next `asyncio.run()`) gets a fresh one.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A ticket was taken since the last ring: a ring now has someone to wake.
        self.listened: bool = False

    def ticket(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._event.is_set() or self._loop is not loop:
            self._event, self._loop = asyncio.Event(), loop
        self.listened = True
        return self._event

    def ring(self) -> None:
        self.listened = False
        if self._loop is None or not self._loop.is_closed():  # waiters on a closed loop
            self._event.set()  # cannot be woken: setting their futures would raise

    @staticmethod
    async def wait(ticket: asyncio.Event, timeout: float | None) -> bool:
        """Wait for a ring after `ticket` was taken; False on timeout."""
        if timeout is not None and timeout <= 0:
            return ticket.is_set()
        try:
            await asyncio.wait_for(ticket.wait(), timeout)
        except TimeoutError:
            return False
        return True
