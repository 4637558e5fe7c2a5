"""When a periodic task's ticks fall, and which tick a worker enqueues: no I/O here.

A schedule says *when* (`Timing`: every N seconds, or a cron expression read in a time
zone) and what to do about ticks missed while no worker ran (`MISSED_POLICIES`). Workers
ask `fire` what to enqueue for a schedule whose next tick has come; the backends store the
answer (`sitq.engine.schedules`), and the database makes sure only one worker's answer is
stored for each tick, however many ask at once.

Cron expressions are the five standard fields (minute hour day-of-month month
day-of-week), read by `cronsim`, a small, maintained, dependency-free parser (croniter,
the usual choice, spent years in maintenance mode). In a time zone with daylight saving
time, cronsim does what Debian's cron does: a job at a fixed time that falls in the hour
skipped in spring runs when the clock resumes, and one in the hour repeated in autumn runs
once.

Missed ticks (the worker fleet was down, or busier than the schedule):

| `missed=` | the ticks found due when a worker looks                | enqueued |
|-----------|--------------------------------------------------------|----------|
| "last"    | one or many                                            | the latest due tick, once; the ones before it are skipped |
| "skip"    | the latest due tick, found within half a period of it  | that tick |
| "skip"    | the latest due tick, found later than that             | nothing: the schedule waits for its next tick |

Either way a tick is enqueued at most once, and the next tick is always in the future.
"""  # noqa: E501

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sitq.errors import InvalidScheduleError

Missed = Literal["last", "skip"]
MISSED_POLICIES: tuple[Missed, ...] = ("last", "skip")
#: A cron expression's fields, in order (a sixth field, seconds, is not standard cron).
CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


@dataclass(frozen=True)
class Timing:
    """When a schedule ticks: `every` seconds, or at the moments `cron` names in `tz`.

    Build it with `timing(...)`, which checks the input. An interval counts from the
    moment the schedule was declared (`first_tick`); a cron expression from the clock.
    """

    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"

    def next_after(self, moment: float) -> float:
        """The first tick strictly after `moment` (epoch seconds). An interval's ticks
        continue from the tick `moment` is (see `fire`)."""
        if self.every is not None:
            return moment + self.every
        assert self.cron is not None
        start = dt.datetime.fromtimestamp(moment, ZoneInfo(self.tz))
        return next(CronSim(self.cron, start)).timestamp()

    def latest_at_or_before(self, moment: float, tick: float) -> float:
        """The latest tick at or before `moment`, counting from `tick` (a tick <= moment)."""
        if self.every is not None:
            return tick + math.floor((moment - tick) / self.every) * self.every
        assert self.cron is not None
        # Ticks fall on whole seconds: searching back from the next second finds `moment`
        # itself when it is a tick (cronsim steps one second back before it looks).
        start = dt.datetime.fromtimestamp(math.floor(moment) + 1, ZoneInfo(self.tz))
        return max(tick, next(CronSim(self.cron, start, reverse=True)).timestamp())

    def first_tick(self, now: float) -> float:
        """The first tick of a schedule declared at `now`."""
        return self.next_after(now)


def timing(
    every: float | dt.timedelta | None = None, cron: str | None = None, tz: str | None = None
) -> Timing:
    """A checked `Timing`: exactly one of `every` (seconds > 0, or a timedelta) and
    `cron` (five fields), and a time zone zoneinfo knows (default "UTC")."""
    if (every is None) == (cron is None):
        raise InvalidScheduleError(
            "give a schedule exactly one of every= (an interval: seconds or a timedelta) "
            f"and cron= (e.g. cron='*/5 * * * *'); got every={every!r}, cron={cron!r}"
        )
    zone = _zone(tz)
    if every is not None:
        if tz is not None and tz != "UTC":
            raise InvalidScheduleError(
                f"tz={tz!r} has no meaning for every=: an interval is the same in every time "
                "zone. Use cron= to tick at wall-clock times of a zone, or leave tz out."
            )
        return Timing(every=_interval(every))
    return Timing(cron=_cron(cron, zone), tz=zone)


def _interval(every: object) -> float:
    seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidScheduleError(
            f"every= must be seconds (a number) or a datetime.timedelta, got "
            f"{type(every).__name__} {every!r}"
        )
    if not (0 < seconds < math.inf):
        raise InvalidScheduleError(
            f"every= must be a positive, finite interval, got {every!r}: e.g. every=60 or "
            "every=timedelta(hours=1)"
        )
    return float(seconds)


def _zone(tz: object) -> str:
    if tz is None:
        return "UTC"
    if not isinstance(tz, str) or not tz:
        raise InvalidScheduleError(
            f"tz= must be the name of a time zone, e.g. 'Europe/Paris' or 'UTC', got {tz!r}"
        )
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(
            f"tz={tz!r} is not a time zone this machine knows: use an IANA name such as "
            "'UTC', 'Europe/Paris' or 'America/New_York' (on Windows, pip install tzdata)"
        ) from exc
    return tz


def _cron(cron: object, zone: str) -> str:
    if not isinstance(cron, str):
        raise InvalidScheduleError(f"cron= must be a string such as '*/5 * * * *', got {cron!r}")
    fields = cron.split()
    if len(fields) != len(CRON_FIELDS):
        raise InvalidScheduleError(
            f"cron={cron!r} has {len(fields)} fields; a cron expression has five: "
            f"{' '.join(CRON_FIELDS)}, e.g. '*/5 * * * *' (every five minutes) or "
            "'0 9 * * MON-FRI' (9:00 on weekdays)"
        )
    try:
        next(CronSim(cron, dt.datetime.now(ZoneInfo(zone))))
    except CronSimError as exc:
        raise InvalidScheduleError(
            f"cron={cron!r} is not a valid cron expression ({exc}): the fields are "
            f"{' '.join(CRON_FIELDS)}, e.g. '*/5 * * * *' or '0 9 * * MON-FRI'"
        ) from exc
    except StopIteration:
        raise InvalidScheduleError(
            f"cron={cron!r} never matches a date (e.g. February 30th): check its day fields"
        ) from None
    return " ".join(fields)


def missed_policy(missed: object) -> Missed:
    """`missed` checked: one of MISSED_POLICIES."""
    if missed == "last":
        return "last"
    if missed == "skip":
        return "skip"
    raise InvalidScheduleError(
        f"missed= must be 'last' (run the latest missed tick once) or 'skip' (run "
        f"nothing until the next tick), got {missed!r}"
    )


@dataclass(frozen=True)
class Fire:
    """What a worker does for a schedule whose next tick has come.

    `tick`: the tick to enqueue (its time; the task is due then), or None to enqueue
    nothing. `next_at`: the schedule's next tick, always after `now`. `skipped`: how many
    due ticks go unrun (0 or more; for a cron schedule, 1 stands for "one or more").
    """

    tick: float | None
    next_at: float
    skipped: int


def fire(timing: Timing, next_at: float, now: float, missed: Missed) -> Fire:
    """The decision for a schedule whose next tick `next_at` is due (`next_at <= now`).

    The latest due tick is the candidate; the ticks before it are skipped (see the
    module's table). With `missed="skip"` it runs only if found within half the time
    to the tick after it: a worker that looks a little late still runs it, a fleet
    that was down for hours does not.
    """
    latest = timing.latest_at_or_before(now, next_at)
    following = timing.next_after(latest)
    if timing.every is not None:
        skipped = round((latest - next_at) / timing.every)
    else:
        skipped = int(latest > next_at)
    on_time = now - latest <= (following - latest) / 2
    if missed == "skip" and not on_time:
        return Fire(None, following, skipped + 1)
    return Fire(latest, following, skipped)
