"""The lessons' figures: small drawings of what a lesson just measured.

Each helper takes plain data a lesson already has (start/end spans, a queue's history,
measured rates), draws one picture with `sitq.plots.style`'s colours and labels, and returns
the Axes, so a lesson cell stays a few lines long. Rows carry readable names (a task's
function name, a worker's id), never hash ids. Nothing here calls `plt.show()`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

from sitq.plots.style import EDGE, OUTCOME_COLORS, SERIES_COLORS, new_axes, no_data
from sitq.task import Attempt
from sitq.views.html import short_task_name

#: Bars narrower than this fraction of the time span are widened, so instant runs show.
MIN_BAR = 0.004
#: Bars narrower than this fraction of the time span carry no text: it would not fit.
MIN_LABELLED = 0.04


def task_spans(
    groups: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str = "When each task ran",
    ax: Axes | None = None,
) -> Axes:
    """One row per task, one bar from its start to its end, one colour per group.

    `groups` maps a label ("time.sleep") to the (start, end) times its tasks recorded,
    e.g. with `time.perf_counter()`. Each group's x axis starts at its own first start, so
    runs made one after another line up and compare by shape: bars side by side in time ran
    at the same time, bars in a staircase ran one after another.
    """
    rows = [f"{label} · task {k}" for label, spans in groups.items() for k in _count(spans)]
    size = (9, 1.2 + 0.4 * max(len(rows), 3))
    ax = new_axes(ax, title, "seconds since the group's first start", "", size)
    if not rows:
        return no_data(ax)
    row = 0
    for i, spans in enumerate(groups.values()):
        t0 = min(start for start, _ in spans)
        for start, end in sorted(spans):
            ax.barh(row, end - start, left=start - t0, height=0.6, color=SERIES_COLORS[i], **EDGE)
            row += 1
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()  # first task on top, read like a table
    return ax


def _count(spans: Sequence[tuple[float, float]]) -> range:
    return range(1, len(spans) + 1)


def worker_rows(history: Iterable[Attempt]) -> dict[str, list[Attempt]]:
    """The attempts each worker ran, by start time; workers in order of their first start."""
    rows: dict[str, list[Attempt]] = defaultdict(list)
    for a in sorted(history, key=lambda a: (a.started_at, a.worker_id, a.attempt)):
        rows[a.worker_id].append(a)
    return dict(rows)


def task_label(a: Attempt) -> str:
    """ "resize_image" for task shop.images:resize_image, "(try 2)" added for a retry."""
    name = short_task_name(a.task_name)
    return name if a.attempt == 1 else f"{name} (try {a.attempt})"


def lanes(attempts: Sequence[Attempt]) -> list[int]:
    """A lane per attempt (by start time), so runs that overlap on one worker stack.

    A worker with `concurrency=2` runs two tasks at once: their bars would hide each other
    on one line, so each run takes the first lane free at its start.
    """
    ends: list[float] = []
    chosen = []
    for a in attempts:
        free = next((i for i, end in enumerate(ends) if end <= a.started_at), len(ends))
        ends[free : free + 1] = [a.finished_at]
        chosen.append(free)
    return chosen


def worker_timeline(
    history: Iterable[Attempt],
    *,
    labels: Mapping[str, str] | None = None,
    workers: Mapping[str, str] | None = None,
    killed: Mapping[str, float] | None = None,
    marks: Mapping[str, float] | None = None,
    title: str = "Which worker ran which task, when",
    ax: Axes | None = None,
) -> Axes:
    """One row per worker, one bar per task run, coloured by how the run ended.

    Runs that overlap on one worker (its `concurrency` > 1) stack in lanes (`lanes`)
    inside the worker's row, between thin separator lines. Each bar is labelled with the
    task's name (`task_label`), or with `labels[task_id]` when given (e.g. "square(3)");
    a bar too narrow for its text has it on its right. `workers` renames rows (worker id
    -> e.g. "worker A"). `killed` (worker id -> epoch seconds) cuts that worker's runs at
    its death: the bar is solid up to the kill, then hatched to where the history ends it,
    which for a `worker_lost` run is the lease's expiry: the time the queue still held the
    task for a worker that was gone. `marks` draws a dashed vertical line per named
    moment (epoch seconds on the queue's clock, like the history), e.g.
    {"lease expired": t}. Times read as seconds since the first start.
    """
    records = list(history)
    rows = worker_rows(records)
    placed = {worker: lanes(attempts) for worker, attempts in rows.items()}
    height = sum(max(p, default=0) + 1 for p in placed.values())
    size = (9, 1.8 + 0.45 * max(height, 2))
    ax = new_axes(ax, title, "seconds since the first task started", "worker", size)
    if not records:
        return no_data(ax)
    t0 = min(a.started_at for a in records)
    moments = dict(marks or {})
    span = max([a.finished_at for a in records] + list(moments.values())) - t0 or 1.0
    top, ticks = 0, []
    for worker, attempts in rows.items():
        death = (killed or {}).get(worker)
        for a, lane in zip(attempts, placed[worker], strict=True):
            _run_bar(ax, a, top + lane, t0, span, death)
            text = labels.get(a.task_id, task_label(a)) if labels else task_label(a)
            width = max(a.finished_at - a.started_at, span * MIN_BAR)
            inside = width >= span * MIN_LABELLED
            x = a.started_at - t0 + (width / 2 if inside else width + span * 0.01)
            ax.text(x, top + lane, text, ha="center" if inside else "left", va="center",
                    fontsize=8)  # fmt: skip
        count = max(placed[worker]) + 1
        ticks.append(top + (count - 1) / 2)
        top += count
        if top < height:
            ax.axhline(top - 0.5, color="0.7", linewidth=0.8)
    for name, when in moments.items():
        ax.axvline(when - t0, linestyle="--", color="0.3", linewidth=1)
        ax.annotate(name, xy=(when - t0, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=9)  # fmt: skip
    ax.set_yticks(ticks, [(workers or {}).get(w, w) for w in rows])
    ax.set_ylim(height - 0.4, -0.6 - 0.6 * bool(moments))  # room on top for the marks
    outcomes = sorted({a.outcome for a in records})
    handles = [Patch(color=OUTCOME_COLORS.get(o, "0.5"), label=o) for o in outcomes]
    if killed:
        handles.append(Patch(facecolor="white", hatch="///", label="worker dead,\nlease held"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), title="run ended")
    return ax


def _run_bar(ax: Axes, a: Attempt, row: int, t0: float, span: float, death: float | None) -> None:
    """One run's bar; after `death` (if the run outlived it) hatched instead of solid."""
    colour = OUTCOME_COLORS.get(a.outcome, "0.5")
    start, end = a.started_at - t0, max(a.finished_at - t0, a.started_at - t0 + span * MIN_BAR)
    cut = end if death is None else min(max(death - t0, start), end)
    ax.barh(row, max(cut - start, span * MIN_BAR), left=start, height=0.7, color=colour, **EDGE)
    if cut < end:
        ax.barh(row, end - cut, left=cut, height=0.7, color="white", hatch="///",
                edgecolor=colour, linewidth=0.5)  # fmt: skip


def rate_by_chunk(
    rates: Mapping[int, float],
    *,
    title: str = "Enqueue rate against chunk size",
    ax: Axes | None = None,
) -> Axes:
    """Tasks enqueued per second (y, from 0) against the batch size used (x, log), measured.

    Each point is labelled with its rate, so the figure reads without a ruler.
    """
    ax = new_axes(ax, title, "tasks per enqueue_many call (chunk size)", "tasks per second")
    if not rates:
        return no_data(ax)
    sizes = sorted(rates)
    ax.plot(sizes, [rates[s] for s in sizes], marker="o", color=SERIES_COLORS[0])
    for s in sizes:
        ax.annotate(f"{rates[s]:,.0f}/s", xy=(s, rates[s]), xytext=(0, 8),
                    textcoords="offset points", ha="center", fontsize=9)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.set_ylim(0, 1.15 * max(rates.values()))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.margins(x=0.1)
    return ax


__all__ = [
    "lanes", "rate_by_chunk", "task_label", "task_spans", "worker_rows", "worker_timeline",
]  # fmt: skip
