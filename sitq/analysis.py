"""Pure functions over Attempt records: the numbers behind every plot and lesson.

Nothing here touches a database, a clock or matplotlib: you pass in a list of `Attempt`
records (from `queue.history()`) and get back plain dataclasses, dicts and lists. That keeps
every number checkable in a test and printable in a notebook. Empty input always gives
empty output, never an exception, so a dashboard over a quiet queue still renders.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

from sitq.summary import Stats as Stats  # re-exported: analysis is the one place to look
from sitq.summary import summary_stats as summary_stats
from sitq.task import OUTCOMES, Attempt

#: Outcomes that count as a failed attempt. A cancellation is a choice, not a failure.
FAILURE_OUTCOMES: frozenset[str] = frozenset({"retrying", "failed", "worker_lost"})


def is_failure(attempt: Attempt) -> bool:
    """True if the attempt went wrong (one rule, so every count and plot agrees)."""
    return attempt.outcome in FAILURE_OUTCOMES


def error_label(attempt: Attempt) -> str:
    """The name a failure is counted under: its exception type, with sensible fallbacks."""
    if attempt.error_type:
        return attempt.error_type
    return "WorkerLost" if attempt.outcome == "worker_lost" else "unknown"


# --- per-task timelines -------------------------------------------------------------


@dataclass(frozen=True)
class TaskTimeline:
    """All attempts of one task, in order, and the waits between them.

    `gaps[i]` is the time from the end of attempt i to the start of attempt i+1: the
    backoff the retry policy chose plus any time the retry waited for a free worker.
    """

    task_id: str
    task_name: str
    attempts: tuple[Attempt, ...]
    gaps: tuple[float, ...]
    final_outcome: str
    total_attempts: int

    @property
    def first_start(self) -> float:
        return self.attempts[0].started_at

    @property
    def last_finish(self) -> float:
        return self.attempts[-1].finished_at

    @property
    def done(self) -> bool:
        """False while the task will run again (its last attempt planned a retry)."""
        last = self.attempts[-1]
        if last.outcome == "worker_lost":
            return last.next_delay is None
        return last.outcome != "retrying"

    @property
    def gave_up(self) -> bool:
        """True if the task failed for good (a dead letter), not merely still retrying."""
        return self.done and self.final_outcome in FAILURE_OUTCOMES


def timelines(attempts: Iterable[Attempt]) -> list[TaskTimeline]:
    """Group attempts by task, ordered by each task's first start.

    Tasks that started at the same moment (a crowd on a FakeClock) keep the order in which
    they first appear in `attempts` (a history's order), not the order of their random
    ids, so a figure's rows do not shuffle from one run to the next.

    Within a task, attempts are ordered by start time, then attempt number: start time is
    what a reader sees on a timeline, and a lost worker's record may reuse a number.
    """
    by_task: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_task[a.task_id].append(a)
    result = []
    for task_id, records in by_task.items():
        records.sort(key=lambda a: (a.started_at, a.attempt, a.finished_at))
        gaps = tuple(nxt.started_at - prev.finished_at for prev, nxt in pairwise(records))
        result.append(
            TaskTimeline(
                task_id=task_id,
                task_name=records[0].task_name,
                attempts=tuple(records),
                gaps=gaps,
                final_outcome=records[-1].outcome,
                total_attempts=len(records),
            )
        )
    result.sort(key=lambda t: t.first_start)  # stable: ties keep their first appearance
    return result


# --- failure rates and alerting -----------------------------------------------------


@dataclass(frozen=True)
class RateWindow:
    """Attempts that finished in [start, end), and the share of them that failed."""

    start: float
    end: float
    attempts: int
    failures: int
    rate: float  # 0..1; 0 for an empty window (nothing failed)


def failure_rate(
    attempts: Iterable[Attempt],
    window: float,
    *,
    start: float | None = None,
    end: float | None = None,
) -> list[RateWindow]:
    """Failure rate per fixed time window, counting each attempt when it finished.

    Finish time is when the outcome became known, which is what a monitor sees. Windows
    are [t, t + window) from `start` (default: the first finish) until `end` (default:
    just past the last finish); the last window is cut at an explicit `end`. Attempts
    outside [start, end) are ignored. Empty windows are kept: a gap in traffic is
    information too.
    """
    if not window > 0:
        raise ValueError(f"window must be > 0 seconds, got {window!r}")
    records = list(attempts)
    if not records:
        return []
    finishes = [a.finished_at for a in records]
    lo = min(finishes) if start is None else start
    if end is None:
        n = max(0, math.floor((max(finishes) - lo) / window) + 1)
        hi = lo + n * window
    else:
        n, hi = max(0, math.ceil((end - lo) / window)), end
    totals, fails = [0] * n, [0] * n
    for a in records:
        if lo <= a.finished_at < hi:
            i = min(int((a.finished_at - lo) // window), n - 1)
            totals[i] += 1
            fails[i] += is_failure(a)
    return [
        RateWindow(
            start=lo + i * window,
            end=min(lo + (i + 1) * window, hi),
            attempts=totals[i],
            failures=fails[i],
            rate=fails[i] / totals[i] if totals[i] else 0.0,
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Anomaly:
    """A window that fired an alert, the limit it crossed and a sentence saying why."""

    window: RateWindow
    rule: str  # "threshold" or "baseline"
    limit: float
    reason: str


def detect_anomalies(
    windows: Sequence[RateWindow],
    *,
    threshold: float | None = None,
    k: float = 3.0,
    min_attempts: int = 1,
) -> list[Anomaly]:
    """Windows whose failure rate is unusually high: the simplest useful alert rules.

    With `threshold` (a rate 0..1) a window fires when its rate is above it. Without,
    each window is compared with a baseline of the *other* windows: it fires above their
    mean + k * standard deviation (leaving it out keeps one spike from hiding itself).
    Windows with fewer than `min_attempts` attempts never fire: 1 failure out of 1 is
    100%, but it is not yet a pattern. The baseline needs at least two other windows.
    """
    eligible = [w for w in windows if w.attempts >= max(min_attempts, 1)]
    fired = []
    for w in eligible:
        if threshold is not None:
            rule, limit = "threshold", threshold
            why = f"above the threshold {threshold:.0%}"
        else:
            others = [o.rate for o in eligible if o is not w]
            if len(others) < 2:
                continue
            mean, std = statistics.fmean(others), statistics.pstdev(others)
            rule, limit = "baseline", mean + k * std
            why = f"above baseline {mean:.0%} + {k:g}×{std:.0%} = {limit:.0%}"
        if w.rate > limit:
            reason = f"failure rate {w.rate:.0%} ({w.failures}/{w.attempts} attempts) {why}"
            fired.append(Anomaly(window=w, rule=rule, limit=limit, reason=reason))
    return fired


# --- distributions ------------------------------------------------------------------


def failures_by_error_type(attempts: Iterable[Attempt]) -> dict[str, int]:
    """How many failed attempts each error type caused, most frequent first.

    Counting attempts (not tasks) shows where the work is lost: a flaky dependency
    that needs three tries costs three attempts.
    """
    counts = Counter(error_label(a) for a in attempts if is_failure(a))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def attempts_until_success(attempts: Iterable[Attempt]) -> dict[int, int]:
    """For tasks that succeeded: {attempts it took: number of tasks}, by attempts.

    A long tail here means the retry policy is doing a lot of work behind the scenes.
    """
    done = [t.total_attempts for t in timelines(attempts) if t.final_outcome == "succeeded"]
    return dict(sorted(Counter(done).items()))


def final_outcomes(attempts: Iterable[Attempt]) -> dict[str, int]:
    """Tasks counted by the outcome of their last attempt, in OUTCOMES order.

    A task whose last outcome is "retrying" is still in flight, not failed.
    """
    counts = Counter(t.final_outcome for t in timelines(attempts))
    return {o: counts[o] for o in (*OUTCOMES, *sorted(set(counts) - set(OUTCOMES))) if counts[o]}


def queue_waits(attempts: Iterable[Attempt]) -> list[float]:
    """Seconds each task waited for a worker before its first attempt, in input order.

    Only attempt 1: a retry's wait is mostly the backoff it asked for (see retry_lateness).
    """
    return [a.started_at - a.scheduled_for for a in attempts if a.attempt == 1]


def run_durations(attempts: Iterable[Attempt]) -> list[float]:
    """Seconds each attempt ran, in input order (0 under a FakeClock that did not advance)."""
    return [a.finished_at - a.started_at for a in attempts]


@dataclass(frozen=True)
class RetryLateness:
    """When the policy planned a retry to start, when it did, and why it was late (seconds).

    `planned` is the previous attempt's finish plus the backoff the policy chose.
    `held` is how far something moved the retry after that plan (an open circuit
    breaker defers a due task, costing no attempt); the rest of `lateness` is time the
    retry, once due, waited for a free worker.
    """

    task_id: str
    task_name: str
    attempt: int
    planned: float
    actual: float
    lateness: float
    held: float = 0.0


def retry_lateness(attempts: Iterable[Attempt]) -> list[RetryLateness]:
    """Planned vs actual start of every retry (attempt > 1), ordered like `timelines`.

    Lateness above zero means the retry waited longer than the backoff asked for:
    workers were busy, or a breaker held it back (see `held`). Without the previous
    attempt's backoff in the data (a lost worker's record has none), the plan is the
    time the retry was due.
    """
    late = []
    for task in timelines(attempts):
        for prev, a in zip((None, *task.attempts), task.attempts, strict=False):
            if a.attempt == 1:
                continue
            planned = a.scheduled_for
            if prev is not None and prev.next_delay is not None:
                planned = prev.finished_at + prev.next_delay
            late.append(
                RetryLateness(
                    task_id=a.task_id,
                    task_name=a.task_name,
                    attempt=a.attempt,
                    planned=planned,
                    actual=a.started_at,
                    lateness=a.started_at - planned,
                    held=max(a.scheduled_for - planned, 0.0),
                )
            )
    return late


class StateSpan(NamedTuple):
    """One stretch of time [start, end) a breaker spent in one state."""

    start: float
    end: float
    state: str


def breaker_states(
    transitions: Iterable[Any], *, start: float, end: float, name: str | None = None
) -> list[StateSpan]:
    """Turn breaker transitions (`.at`, `.name`, `.from_state`, `.to_state`) into spans.

    The state before the first transition is that transition's `from_state`; transitions
    before `start` only set the state at `start`. Pass `name` to follow one breaker when
    the list mixes several. Adjacent spans in the same state are merged.
    """
    chosen = sorted((t for t in transitions if name is None or t.name == name), key=lambda t: t.at)
    if not chosen or end <= start:
        return []
    state = str(chosen[0].from_state)
    spans: list[StateSpan] = []
    cursor = start
    for t in chosen:
        if t.at > cursor:
            _add_span(spans, cursor, min(t.at, end), state)
            cursor = min(t.at, end)
        state = str(t.to_state)
    if end > cursor:
        _add_span(spans, cursor, end, state)
    return spans


def _add_span(spans: list[StateSpan], t0: float, t1: float, state: str) -> None:
    if t1 <= t0:
        return
    if spans and spans[-1].state == state and spans[-1].end == t0:
        spans[-1] = StateSpan(spans[-1].start, t1, state)
    else:
        spans.append(StateSpan(t0, t1, state))
