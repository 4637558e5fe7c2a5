"""A throwaway queue for exercise checkers: run a student's tasks for real, in virtual time.

A checker that only inspected a policy object could be fooled by a policy that looks right
and behaves wrong. These helpers run the jobs through a real sitq queue instead: SQLite in
a temporary directory, a FakeClock (minutes of backoff pass in milliseconds) and a worker
with a seeded RNG (jitter replays), then hand back each Result and the attempt history.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, Worker
from sitq.task import Attempt, Result
from sitq.teaching import Feedback, not_yet

REAL_TIME_LIMIT = 10.0  # real seconds a run may take (a checker's tasks should not sleep)
MAX_TASKS = 1000  # attempts a run may make before it counts as runaway
TOLERANCE = 1e-3  # seconds: epoch floats near 1.8e9 carry ~1e-7 s of rounding


@dataclass
class Sandbox:
    """A fresh queue and worker on a temporary SQLite file, in virtual time."""

    queue: TaskQueue
    worker: Worker
    clock: FakeClock


@asynccontextmanager
async def sandbox(seed: int = 0) -> AsyncIterator[Sandbox]:
    """Open a throwaway queue + worker (FakeClock, `random.Random(seed)` for jitter)."""
    with tempfile.TemporaryDirectory(prefix="sitq-check-") as tmp:
        clock = FakeClock()
        backend = SQLiteBackend(Path(tmp) / "check.db")
        async with TaskQueue(backend, clock=clock) as queue:
            worker = Worker(backend, clock=clock, worker_id="checker", rng=random.Random(seed))
            try:
                yield Sandbox(queue, worker, clock)
            finally:
                await worker.stop()


@dataclass(frozen=True)
class Job:
    """One task to enqueue: a label to report it by, the call, and its delay (s)."""

    label: str
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    delay: float = 0.0


@dataclass
class Run:
    """What a run left behind: each job's Result and every attempt, oldest first."""

    start: float
    results: dict[str, Result[Any] | None]
    history: list[Attempt]
    finished: bool = True
    ids: dict[str, str] = field(default_factory=dict)

    def attempts_of(self, label: str) -> list[Attempt]:
        task_id = self.ids[label]
        return [a for a in self.history if a.task_id == task_id]

    def delays_of(self, label: str) -> list[float]:
        """The measured waits between one job's attempts, in seconds."""
        attempts = self.attempts_of(label)
        return [b.started_at - a.finished_at for a, b in itertools.pairwise(attempts)]


async def settle(box: Sandbox, max_tasks: int = MAX_TASKS) -> bool:
    """Run the sandbox's worker until idle; False if it hit the attempt or time limit."""
    try:
        running = box.worker.run_until_idle(max_tasks=max_tasks)
        done = await asyncio.wait_for(running, REAL_TIME_LIMIT)
    except TimeoutError:
        return False
    return done < max_tasks


async def run_jobs(jobs: Sequence[Job], policy: RetryPolicy | None, *, seed: int = 0) -> Run:
    """Enqueue `jobs` with `policy`, run them all in virtual time, return what happened."""
    async with sandbox(seed) as box:
        start = box.clock.now()
        ids: dict[str, str] = {}
        for job in jobs:
            view = box.queue.with_options(retry=policy, delay=job.delay)
            ids[job.label] = await view.enqueue(job.func, *job.args)
        finished = await settle(box)
        found = await box.queue.gather(list(ids.values()), timeout=0)
        results = dict(zip(ids, found, strict=True))
        return Run(start, results, await box.queue.history(), finished, ids)


class NotYet(Exception):
    """Raised by a check to stop at the first problem: becomes `not_yet(message, hint)`."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message: str = message
        self.hint: str = hint


STUB_MESSAGE = "the exercise is not filled in yet (it raises NotImplementedError)"


def reject_stubs(history: Sequence[Attempt], hint: str = "") -> None:
    """Raise NotYet if a task in the run was still a stub (raised NotImplementedError)."""
    if any(a.error_type == "NotImplementedError" for a in history):
        raise NotYet(STUB_MESSAGE.replace("exercise", "task"), hint)


#: A policy, or the student's function that builds one: a stub then raises
#: NotImplementedError *inside* the checker, so the exercise notebook still runs.
PolicyAnswer = RetryPolicy | Callable[[], RetryPolicy]


def student_policy(answer: PolicyAnswer, hint: str) -> RetryPolicy:
    """The RetryPolicy a student gave (or built), with its own functions tried once.

    Calling a custom delay function and a retry_on predicate here first makes a stub or
    a bug show up as "not yet", not deep inside the worker.
    """
    policy = answer() if callable(answer) else answer
    if not isinstance(policy, RetryPolicy):
        raise NotYet(f"expected a sitq.RetryPolicy, got {type(policy).__name__}", hint)
    policy.preview()
    for exc in (ConnectionError("connection reset"), ValueError("bad input")):
        policy.should_retry(exc, 1)
    return policy


async def always_fails(message: str = "the service is down") -> None:
    """A task that never works: the raw material for backoff schedules."""
    raise ConnectionError(message)


def seconds(values: Sequence[float]) -> str:
    """Waits for a message: [1s, 2s, 4s]."""
    return "[" + ", ".join(f"{v:.3g}s" for v in values) + "]"


async def attempt_async(check: Callable[[], Awaitable[Feedback]], hint: str) -> Feedback:
    """Await a check; NotYet, a stub's NotImplementedError or a crash becomes "not yet"."""
    try:
        return await check()
    except NotYet as problem:
        return not_yet(problem.message, problem.hint or hint)
    except NotImplementedError:
        return not_yet(STUB_MESSAGE, hint)
    except Exception as exc:  # a student's bug: report it, never crash the notebook
        return not_yet(f"your code raised {type(exc).__name__}: {exc}", hint)
