"""Rate limits: at most N starts of a task name per period, across every worker.

A limit is written as text, `"10/s"`: ten starts a second. The rule is a sliding window:
a start at time t is admitted when fewer than N starts of that name were admitted in the
period before it, (t - period, t]. So under "5/s" no second-long stretch ever holds more
than five starts, wherever it begins (a window fixed to the clock's seconds would let ten
through around each boundary).

The count lives in the database (`Backend.take_rate_slot`), so workers on many machines
share it; this module only reads the spec and makes the decision from the starts the
database holds. A task whose start is refused waits, its attempt given back
(`sitq.policy.state.rate_limited`), until the window has room: when the oldest of the N
starts in the window leaves it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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

    def wait(self, starts: Sequence[float], now: float) -> float | None:
        """None if a start at `now` is admitted, given the admitted `starts` (any order;
        older ones are ignored); else the seconds until the window has room."""
        recent = sorted(t for t in starts if t > now - self.period)
        if len(recent) < self.count:
            return None
        return recent[-self.count] + self.period - now


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
