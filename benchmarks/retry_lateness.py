"""How punctual are retries on the real clock? Planned vs actual start of every retry.

A retry policy promises "the next attempt in 0.2 s"; the worker keeps that promise only if
it wakes up on time. This script runs a real worker (SystemClock, a SQLite file in a temp
dir, `await worker.start()`) over tasks that each fail a few times with exponential
backoff, then reads the attempt history and prints how late each retry started
(`started_at - scheduled_for`). It exits with status 1 if the worst lateness is above the
limit (20 ms by default).

    .venv/bin/python benchmarks/retry_lateness.py [--tasks 20] [--failures 4] [--base 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from sitq import RetryPolicy, SQLiteBackend, SystemClock, TaskQueue, Worker, current_task
from sitq.analysis import retry_lateness, summary_stats


async def fail_first(failures: int) -> str:
    """Fail the first `failures` attempts, then succeed.

    It reads its attempt number from sitq rather than counting in a global: this script
    runs as __main__, so the function reaches the worker as a copy (no shared state).
    """
    attempt = current_task().attempt
    if attempt <= failures:
        raise ConnectionError(f"simulated outage, attempt {attempt}")
    return f"ok after {attempt} attempts"


async def measure(
    tasks: int, failures: int, base: float, concurrency: int | None, workdir: Path
) -> list[float]:
    """Run the tasks to the end on a real clock; return each retry's lateness in seconds."""
    backend = SQLiteBackend(workdir / "lateness.db")
    policy = RetryPolicy.exponential(base, max_attempts=failures + 1, retry_on=ConnectionError)
    async with TaskQueue(backend, clock=SystemClock()) as queue:
        # By default, room for every task at once: this measures the worker's timing, not
        # a queue with more due work than free slots (try --concurrency 5 to see that).
        slots = concurrency or tasks
        worker = Worker(backend, clock=SystemClock(), concurrency=slots, worker_id="bench")
        await worker.start()
        try:
            ids = await queue.with_options(retry=policy).enqueue_many(
                [(fail_first, (failures,)) for _ in range(tasks)]
            )
            results = await queue.gather(ids, timeout=60, progress=False)
        finally:
            await worker.stop()
        unfinished = [r for r in results if r is None or not r.is_success()]
        if unfinished:
            raise SystemExit(f"{len(unfinished)} task(s) did not succeed: {unfinished[:3]}")
        history = await queue.history()
    return [late.lateness for late in retry_lateness(history)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--failures", type=int, default=4, help="failed attempts per task")
    parser.add_argument("--base", type=float, default=0.05, help="first backoff (seconds)")
    parser.add_argument("--concurrency", type=int, default=None, help="default: --tasks")
    parser.add_argument("--limit-ms", type=float, default=20.0, help="worst lateness allowed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sitq-lateness-") as tmp:
        lateness = asyncio.run(
            measure(args.tasks, args.failures, args.base, args.concurrency, Path(tmp))
        )
    stats = summary_stats(seconds * 1000 for seconds in lateness)
    print(
        f"retries={stats.count} (tasks={args.tasks}, failures each={args.failures}, "
        f"base={args.base:g}s exponential)"
    )
    print(
        f"lateness ms: worst={stats.max:.2f} p95={stats.p95:.2f} "
        f"p50={stats.p50:.2f} mean={stats.mean:.2f} min={min(lateness) * 1000:.2f}"
    )
    ok = stats.max <= args.limit_ms
    print(f"{'OK' if ok else 'TOO LATE'}: worst {stats.max:.2f} ms vs limit {args.limit_ms:g} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
