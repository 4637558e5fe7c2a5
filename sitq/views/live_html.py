"""What the live view (`sitq.views.live`) draws: one snapshot of a queue as HTML, pure functions.

Kept apart from the widget so every number and every escape can be checked in a test
without a kernel, a loop or a database: a `Snapshot` in, a string of HTML out. Every text
that comes from the database (task names, errors, progress messages, worker ids) goes
through `html.escape`: an error message is data, never markup.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sitq.analysis import is_failure
from sitq.policy.breaker import CircuitBreaker
from sitq.task import Attempt, TaskInfo, TaskStatus
from sitq.views.html import table_html, task_labels

#: Text bars: one character per slot of the window, taller for more attempts.
BLOCKS = "▁▂▃▄▅▆▇█"
#: Characters of an error message shown before it is cut (the full text: `queue.get_task`).
ERROR_CHARS = 160
SHOWN_FAILURES = 5
SHOWN_RUNNING = 10


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh read, at one moment of the queue's clock.

    `attempts` are the newest attempt records, newest first, at most `scanned` of them: if
    the read came back full, older attempts of the window were not seen, and the rates are
    measured over the stretch it covers. `breakers` are (worker id, task name, breaker).
    """

    now: float
    window: float
    bars: int
    counts: Mapping[TaskStatus, int]
    attempts: Sequence[Attempt]
    scanned: int
    running: Sequence[TaskInfo] = ()
    breakers: Sequence[tuple[str, str, CircuitBreaker]] = ()
    note: str = ""  # how the view is doing: "live, every 1 s", "stopped: ..."
    problem: str | None = None  # the last refresh's error, if it failed


@dataclass(frozen=True)
class Activity:
    """Attempts that finished in the window, per slot (oldest first), and the stretch of
    time they cover. A slot the read did not reach holds -1: unknown, not a quiet queue."""

    finished: list[int]  # attempts finished per slot
    failed: list[int]  # of which failed (`sitq.analysis.is_failure`)
    covered_from: float  # counts are complete from here on: the window's start, or later

    @property
    def total(self) -> int:
        return sum(max(0, n) for n in self.finished)

    @property
    def failures(self) -> int:
        return sum(max(0, n) for n in self.failed)


def activity(snapshot: Snapshot) -> Activity:
    """Count the window's attempts per slot, by the time each finished."""
    start, width = snapshot.now - snapshot.window, snapshot.window / snapshot.bars
    covered_from = start
    if snapshot.attempts and len(snapshot.attempts) >= snapshot.scanned:  # the read was full
        covered_from = max(start, snapshot.attempts[-1].finished_at)
    finished, failed = [0] * snapshot.bars, [0] * snapshot.bars
    for a in snapshot.attempts:
        if a.finished_at >= covered_from:  # a clock ahead of ours counts in the last slot
            slot = min(int((a.finished_at - start) // width), snapshot.bars - 1)
            finished[slot] += 1
            failed[slot] += is_failure(a)
    for slot in range(snapshot.bars):
        if start + (slot + 1) * width <= covered_from:
            finished[slot] = failed[slot] = -1
    return Activity(finished, failed, covered_from)


def sparkline(values: Sequence[float], top: float | None = None) -> str:
    """`[0, 2, 8]` -> "▁▂█": each value as a block scaled to `top` (default: the largest);
    -1 (unknown) as a blank, 0 as the lowest block."""
    top = top or max([v for v in values if v > 0], default=0)
    return "".join(
        " " if v < 0 else BLOCKS[0] if v == 0 else BLOCKS[max(1, round(v / top * 7))]
        for v in values
    )


def failure_line(seen: Activity) -> str:
    """The failure rate per slot, 0 to 100% ("█": every attempt failed); "·" for a slot
    in which nothing finished, a blank for one the read did not reach."""
    return "".join(
        "·" if n == 0 else sparkline([-1 if n < 0 else bad / n], top=1.0)
        for n, bad in zip(seen.finished, seen.failed, strict=True)
    )


def progress_bar(fraction: float | None, width: int = 10) -> str:
    """0.4 -> "████░░░░░░ 40%"; None (no progress reported) -> ""."""
    if fraction is None:
        return ""
    full = round(fraction * width)
    return "█" * full + "░" * (width - full) + f" {fraction:.0%}"


def shorten(text: str | None, limit: int = ERROR_CHARS) -> str:
    """The text on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def seconds_text(seconds: float) -> str:
    """90 -> "1 min 30 s", 4.25 -> "4.2 s": durations as a person reads them."""
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def rate_text(per_second: float) -> str:
    """12.5 -> "12.5/s"; a slow queue per minute instead: 0.1 -> "6.0/min"."""
    return f"{per_second:,.1f}/s" if per_second >= 1 else f"{per_second * 60:.1f}/min"


def breaker_state(breaker: CircuitBreaker, now: float) -> tuple[str, str]:
    """The breaker's state and a detail, read from its public fields without asking
    `breaker.state` (which would record a half-open move at the view's refresh time)."""
    failures = f"{breaker.failure_count}/{breaker.failure_threshold} failures"
    opened = breaker.opened_at
    if opened is None:
        return "closed", failures
    left = opened + breaker.recovery_timeout - now
    if left > 0:
        return "open", f"probes again in {seconds_text(left)}"
    return "half_open", "letting probe calls through"


def render(snapshot: Snapshot) -> str:
    """The whole view as HTML: counts, activity, failures, running tasks, breakers."""
    parts = [_header(snapshot), _counts(snapshot.counts), _activity(snapshot)]
    if snapshot.problem:
        parts.append(f"<p><b>last refresh failed:</b> {html.escape(snapshot.problem)}</p>")
    labels = task_labels_of(snapshot)
    parts += [_failures(snapshot, labels), _running(snapshot, labels), _breakers(snapshot)]
    return '<div class="sitq-live">' + "".join(p for p in parts if p) + "</div>"


def _header(snapshot: Snapshot) -> str:
    moment = dt.datetime.fromtimestamp(snapshot.now, tz=dt.UTC).strftime("%H:%M:%S")
    note = f" · {html.escape(snapshot.note)}" if snapshot.note else ""
    return f"<p><b>sitq queue</b> · at {moment} UTC on the queue's clock{note}</p>"


def _counts(counts: Mapping[TaskStatus, int]) -> str:
    cells = "".join(
        f'<span class="sitq-count" data-status="{s.value}" style="margin-right:1.2em">'
        f"{s.value} <b>{counts.get(s, 0):,}</b></span>"
        for s in TaskStatus
    )
    return f"<p>{cells}</p>"


def _activity(snapshot: Snapshot) -> str:
    seen = activity(snapshot)
    span = seconds_text(snapshot.window)
    if seen.total == 0:
        return f"<p>no attempt finished in the last {span}</p>"
    seconds = snapshot.now - seen.covered_from
    rate = "" if seconds <= 0 else f", {rate_text(seen.total / seconds)}"
    slot = snapshot.window / snapshot.bars
    latest = f"; {rate_text(seen.finished[-1] / slot)} in the last {seconds_text(slot)}"
    partial = ""
    if seen.covered_from > snapshot.now - snapshot.window:
        partial = f" (read: the newest {snapshot.scanned:,}, {seconds_text(seconds)})"
    share = seen.failures / seen.total
    return (
        f'<pre style="margin:0">finished {sparkline(seen.finished)} {seen.total:,} attempts'
        f" in the last {span}{rate}{partial}{latest}\n"
        f"failed   {failure_line(seen)} {seen.failures:,} failed: {share:.0%} failure rate"
        "</pre>"
    )


def task_labels_of(snapshot: Snapshot) -> dict[str, str]:
    """A readable label per task the snapshot holds: "charge_card #2", not a hash id.

    Tasks sharing a name are numbered in order of first appearance in the attempts read
    (oldest first), then among the running tasks, so the two tables of one refresh agree
    and two rows of one task read the same. The numbers belong to the refresh: as the
    window moves on, a task may get another one (its id, for `queue.history(id)`, is one
    `queue.dead_letters()` or `queue.history()` away).
    """
    pairs = [(a.task_name, a.task_id) for a in reversed(snapshot.attempts)]
    pairs += [(t.name, t.task_id) for t in snapshot.running]
    return task_labels(pairs)


def _failures(snapshot: Snapshot, labels: Mapping[str, str]) -> str:
    failed = [a for a in snapshot.attempts if is_failure(a)][:SHOWN_FAILURES]
    if not failed:
        return ""
    rows = [
        (f"{seconds_text(max(0.0, snapshot.now - a.finished_at))} ago", labels[a.task_id],
         a.attempt, a.outcome,
         shorten(f"{a.error_type or 'WorkerLost'}: {a.error_message or ''}".rstrip(": ")))
        for a in failed
    ]  # fmt: skip
    table = table_html(["when", "task", "attempt", "outcome", "error"], rows)
    return "<p><b>newest failures</b></p>" + table


def _running(snapshot: Snapshot, labels: Mapping[str, str]) -> str:
    if not snapshot.running:
        return ""
    rows = [
        (labels[t.task_id], t.worker_id, progress_bar(t.progress),
         shorten(t.progress_message, 60),
         seconds_text(max(0.0, snapshot.now - t.started_at)) if t.started_at else "")
        for t in snapshot.running[:SHOWN_RUNNING]
    ]  # fmt: skip
    table = table_html(["task", "worker", "progress", "message", "running for"], rows)
    more = snapshot.counts.get(TaskStatus.RUNNING, 0) - len(rows)
    extra = f"<p>… and {more:,} more running</p>" if more > 0 else ""
    return "<p><b>running</b></p>" + table + extra


def _breakers(snapshot: Snapshot) -> str:
    if not snapshot.breakers:
        return ""
    rows = [
        (name, worker_id, *breaker_state(breaker, breaker.clock.now()))
        for worker_id, name, breaker in snapshot.breakers
    ]
    return "<p><b>circuit breakers</b></p>" + table_html(["task", "worker", "state", ""], rows)
