"""A failing workload, replayed in virtual time, and two pictures of what went wrong.

Thirty tasks of three kinds arrive one every two seconds: pages to fetch (an upstream
outage from t=20 s to t=45 s makes them fail), cards to charge (a flaky gateway times out,
and a few cards are declined for good) and images to resize (one has a bad size). Each
kind has its own retry policy. The run uses a FakeClock, so a minute of retries takes a
fraction of a second, and a seed, so every run fails the same way.

    python examples/failing_workload.py --out /tmp/plots

writes dashboard.png and retry_timeline.png there and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no window needed

import matplotlib.pyplot as plt

import sitq
from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, Worker, analysis, plots
from sitq.serialization import TaskCall

ARRIVAL_GAP = 2.0  # seconds between two arriving tasks
OUTAGE = (20.0, 45.0)  # seconds after the start when the upstream is down

FETCH_RETRY = RetryPolicy.exponential(2, max_attempts=4, retry_on=ConnectionError)  # 2, 4, 8 s
CHARGE_RETRY = RetryPolicy.fixed(5, max_attempts=3, give_up_on=sitq.PermanentError)
RESIZE_RETRY = RetryPolicy.linear(1, max_attempts=3, retry_on=OSError)  # 1, 2 s


class CardDeclined(sitq.PermanentError):
    """The bank said no: trying again cannot change that."""


# The tasks learn the time from sitq.current_task().started_at (the FakeClock's virtual
# time) and get everything else as arguments: they run on a pickled copy of this module.


async def fetch_page(url: str, outage_from: float, outage_to: float) -> int:
    now = sitq.current_task().started_at or 0.0
    if outage_from <= now < outage_to:
        raise ConnectionError(f"upstream unreachable while fetching {url}")
    return len(url)


async def charge_card(order: int, amount: float, timeouts: int) -> str:
    if amount > 900:
        raise CardDeclined(f"order {order}: card declined for {amount:.2f}")
    if sitq.current_task().attempt <= timeouts:
        raise TimeoutError(f"order {order}: payment gateway did not answer")
    return f"order {order} charged {amount:.2f}"


def resize_image(name: str, width: int, busy: bool) -> str:
    if width <= 0:
        raise ValueError(f"{name}: width must be positive, got {width}")
    if busy and sitq.current_task().attempt == 1:
        raise OSError(f"{name}: disk busy")
    return f"{name} -> {width}px"


def workload(rng: random.Random, start: float) -> list[tuple[RetryPolicy, TaskCall]]:
    """Thirty (retry policy, call) pairs, ten of each kind, in a seeded random order."""
    outage = (start + OUTAGE[0], start + OUTAGE[1])
    jobs = []
    for i in range(10):
        url = f"https://example.org/page/{i}"
        jobs.append((FETCH_RETRY, sitq.call(fetch_page, url, *outage)))
        amount = 950.0 if i in (3, 7) else round(rng.uniform(5, 300), 2)  # over 900: declined
        timeouts = rng.choice([0, 0, 1, 2])  # how many times the gateway times out first
        jobs.append((CHARGE_RETRY, sitq.call(charge_card, i, amount, timeouts)))
        width = -1 if i == 4 else 100 * (i + 2)  # one bad size
        busy = rng.random() < 0.4  # the disk is busy on the first try
        jobs.append((RESIZE_RETRY, sitq.call(resize_image, f"photo{i}.jpg", width, busy)))
    rng.shuffle(jobs)
    return jobs


async def run(db: Path, seed: int) -> tuple[list[sitq.Attempt], dict, list[sitq.Result]]:
    clock = FakeClock()
    backend = SQLiteBackend(db)
    worker = Worker(backend, clock=clock, rng=random.Random(seed), worker_id="worker-1")
    async with TaskQueue(backend, clock=clock) as queue:
        for policy, call in workload(random.Random(seed), clock.now()):
            await queue.with_options(retry=policy).enqueue(call.func, *call.args, **call.kwargs)
            while await worker.run_once():  # run whatever is due now, retries included
                pass
            clock.advance(ARRIVAL_GAP)
        await worker.run_until_idle()  # the retries still waiting: the clock jumps to them
        await worker.stop()
        return await queue.history(), await queue.counts(), await queue.dead_letters()


def mark_outage(ax: plt.Axes) -> None:
    """Shade the outage on a time axis whose zero is the start of the workload."""
    ax.axvspan(*OUTAGE, color="0.9", zorder=0)
    ax.text(sum(OUTAGE) / 2, 0.02, "upstream outage", transform=ax.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=9, color="0.3")  # fmt: skip


def save_plots(history: list[sitq.Attempt], out: Path) -> tuple[Path, Path]:
    start = min(a.scheduled_for for a in history)  # the first arrival: time zero
    dashboard = plots.dashboard(history, threshold=0.5)
    _, rate, _, timeline = dashboard.axes
    for ax in (rate, timeline):
        mark_outage(ax)
    dashboard.savefig(out / "dashboard.png", dpi=100)

    failed_once = {a.task_id for a in history if analysis.is_failure(a)}
    shown = [a for a in history if a.task_id in failed_once]
    ax = plots.retry_timeline(shown, origin=start)
    ax.set_title("Retry timeline of the tasks that failed at least once")
    mark_outage(ax)
    ax.figure.savefig(out / "retry_timeline.png", dpi=100, bbox_inches="tight")
    plt.close("all")
    return out / "dashboard.png", out / "retry_timeline.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=0, help="seed for the workload and jitter")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        history, counts, dead = asyncio.run(run(Path(tmp) / "workload.db", args.seed))
    paths = save_plots(history, args.out)

    print(f"{sum(counts.values())} tasks, {len(history)} attempts")
    print("final states:", ", ".join(f"{s.value} {n}" for s, n in counts.items() if n))
    failures = Counter(a.error_type for a in history if analysis.is_failure(a))
    print("failed attempts:", ", ".join(f"{name} {n}" for name, n in failures.most_common()))
    print(f"dead letters ({len(dead)}):")
    for result in dead:
        print(f"  {result.task_name} after {result.attempts} attempt(s): {result.error_type}")
    for path in paths:
        print("saved", path)


if __name__ == "__main__":
    main()
