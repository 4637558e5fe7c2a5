"""Rate limits: at most N starts of a task name per period, across every worker.

A limit is written as text, `"10/s"`: ten starts a second. The rule is a sliding window
over *slots*, the moments starts are counted at: no stretch of one period, wherever it
begins, holds more than N slots (a window fixed to the clock's seconds would let ten
through around each boundary).

A task that asks to start gets the earliest slot that keeps the rule (`RateLimit.slot`):
now, if the window has room; else a slot booked in the future, which it waits for, its
attempt given back (`sitq.policy.state.rate_limited`). When it comes back it starts on
its booked slot without asking again. So a backlog of a thousand tasks under "10/s" is
sent back once each, to a slot of its own (ten at 1 s, ten at 2 s...), instead of all of them
being claimed and sent back again every time the window opens. (A task late for its slot,
on a busy worker, starts a little after it: slots keep the rule exactly, starts as
closely as workers keep time. A slot booked for a task cancelled while it waited is free
again: `state.KEEPS_BOOKED_SLOT`.)

The slots live in the database (`Backend.take_rate_slot`), so workers on many machines
share them; this module reads the spec and decides from the slots the database holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sitq.errors import InvalidOptionError

#: Seconds in each unit a spec may name.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: "10/s", "100/m", "5/10s" (five per ten seconds), "1000/h", "3/d"; spaces allowed.
SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*")
FORMS = '"N/s", "N/m", "N/h", "N/d" or "N/<count><unit>" such as "5/10s" (N a whole number >= 1)'


@dataclass(frozen=True)
class RateLimit:
    """At most `count` starts per `period` seconds (parsed from a spec by `parse`)."""

    count: int
    period: float

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"

    def wait(self, nth_latest: float | None, now: float) -> float | None:
        """None if a start at `now` keeps the rule; else the seconds until the earliest
        slot that does: a period after `nth_latest`, the N-th latest of the slots taken
        already (past and booked) that are less than a period old (None: fewer than N).
        No stretch of one period that holds that slot can hold more than N-1 others."""
        if nth_latest is None or nth_latest <= now - self.period:
            return None
        return nth_latest + self.period - now

    def slot(self, booked: float | None, nth_latest: float | None, now: float) -> Slot:
        """What a task asking to start at `now` gets: its own booked slot if it has one
        (due: it starts on it; not yet: it waits on), else the earliest slot free
        (`wait`), which the database records: as a start, or as the task's booking."""
        if booked is not None:
            if booked <= now:
                return Slot(wait=None, spent_booking=True)
            return Slot(wait=booked - now)
        wait = self.wait(nth_latest, now)
        return Slot(wait=wait, book=now if wait is None else now + wait)


@dataclass(frozen=True)
class Slot:
    """`RateLimit.slot`'s answer. `wait`: None, start now; else seconds to wait. `book`:
    a slot time to record (a start now when `wait` is None, else the task's booking).
    `spent_booking`: the task starts on its booking, which counts as a plain start from
    now on (its retry, later, asks afresh)."""

    wait: float | None
    book: float | None = None
    spent_booking: bool = False


def parse(spec: object, what: str = "rate_limit") -> RateLimit:
    """A RateLimit from its text (`"10/s"`), or an InvalidOptionError naming the forms."""
    if isinstance(spec, RateLimit):
        return spec
    if not isinstance(spec, str):
        raise InvalidOptionError(f"{what} must be a str such as {FORMS}; got {spec!r}")
    found = SPEC.fullmatch(spec)
    if found is None:
        raise InvalidOptionError(f"{what} {spec!r} is not a rate: write {FORMS}")
    count, multiple, unit = int(found[1]), float(found[2] or 1), found[3]
    if count < 1 or multiple <= 0:
        raise InvalidOptionError(
            f"{what} {spec!r} allows no start at all: write {FORMS} (to stop a task, "
            "do not enqueue it, or cancel it)"
        )
    return RateLimit(count, multiple * UNITS[unit])


def parse_all(limits: object) -> dict[str, RateLimit]:
    """`Worker(rate_limits={"call_api": "10/s"})` checked and parsed, by task name."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise InvalidOptionError(
            f'rate_limits must be a dict of task name to rate, e.g. {{"call_api": "10/s"}}; '
            f"got {limits!r}"
        )
    parsed = {}
    for name, spec in limits.items():
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(f"rate_limits keys are task names (str), got {name!r}")
        parsed[name] = parse(spec, f"rate_limits[{name!r}]")
    return parsed
