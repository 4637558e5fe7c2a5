"""Plumbing shared by the lessons, kept out of their cells so the cells show the idea.

A lesson cell should hold what the student is there to read: the task, the option, the
measurement. Printing a history, starting and stopping worker processes, and waiting for a
condition are needed by several lessons but teach nothing new after the first time, so
they live here, with docstrings that say why they are written the way they are.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sitq.task import Attempt


def show_attempts(history: Iterable[Attempt]) -> None:
    """Print one line per attempt: seconds since the first one, outcome, error, chosen wait.

    Lessons 05 and 06 read retries this way: the times are on the queue's clock (a
    FakeClock there, so they are exact), and `next_delay` is the wait the policy chose
    after that attempt, which is what a backoff schedule is about.
    """
    attempts = list(history)
    t0 = attempts[0].started_at
    for a in attempts:
        error = f"{a.error_type}: {a.error_message}" if a.error_type else ""
        wait = "" if a.next_delay is None else f"  -> retry in {a.next_delay:.2f} s"
        print(f"#{a.attempt}  t={a.started_at - t0:6.2f} s  {a.outcome:<9}  {error}{wait}")


def seeded_coin(key: object, attempt: int, rate: float) -> bool:
    """True (fail this attempt) with probability `rate`, the same answer on every run.

    Lesson 12's tasks fail "at random", yet its committed outputs must come out the same
    when the notebook runs again. One shared generator would not do that: its draws would
    go to whichever task happened to run first. A coin seeded with the task's own key and
    attempt number answers the same for that attempt whatever the order, and a retry
    (attempt + 1) tosses a fresh coin, as a flaky service would.
    """
    return random.Random(f"{key}/{attempt}").random() < rate


async def wait_until(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Look again and again until `condition()` is true; fail after `timeout` seconds.

    Never wait with a fixed `sleep(2)` and hope: on a busy machine two seconds may not be
    enough, and on a fast one they are wasted. The 20 ms pause is the time between two
    looks, not a guess at how long the thing takes.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.02)


class WorkerProcesses:
    """Starts and stops `python -m sitq worker URL --import MODULE` processes.

    Lessons 14 and 15 use real worker processes, as in production: the same command you
    would type in a terminal. The task module sits next to the notebook, so each process
    gets the notebook's folder (the current directory) on its PYTHONPATH. A worker prints
    "sitq worker <id> ready on <url>" once it is ready, and `start` waits for that line,
    so nothing is enqueued before the workers listen. Their log lines go to `log_file`.
    Every process started is remembered, so `stop()` at the end of a lesson stops them all
    even after an experiment failed half-way.
    """

    def __init__(self, module: str, log_file: str | os.PathLike[str]) -> None:
        self.module = module
        self.log_file: Path = Path(log_file)
        path = [os.getcwd(), os.environ.get("PYTHONPATH", "")]
        self.env: dict[str, str] = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
        self.started: list[subprocess.Popen[str]] = []
        #: worker id -> the name given to start(): real ids hold the host name and pid
        self.names: dict[str, str] = {}

    async def start(
        self, url: str, *options: str, count: int = 1, name: str = ""
    ) -> list[subprocess.Popen[str]]:
        """Start `count` workers on `url` with extra command-line `options`; return them
        once each has said it is ready (or raise, after stopping them, if one did not)."""
        command = [sys.executable, "-m", "sitq", "worker", url, "--import", self.module, *options]
        procs = []
        with open(self.log_file, "ab") as log:
            for _ in range(count):
                proc = subprocess.Popen(
                    command, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
                )
                self.started.append(proc)
                procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None  # stdout=PIPE
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=60)
            if " ready on " not in line:
                self.stop(procs)
                raise RuntimeError(f"a worker did not start: {line!r}; see {self.log_file}")
            self.names[line.split()[2]] = name
        return procs

    def stop(self, procs: Iterable[subprocess.Popen[str]] | None = None) -> None:
        """Stop these workers (all started, by default): SIGTERM, which a worker answers
        by finishing what it runs within its grace period, then SIGKILL if it will not go."""
        procs = list(self.started if procs is None else procs)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def running(self) -> int:
        """How many of the processes started are still running."""
        return sum(proc.poll() is None for proc in self.started)


@dataclass
class Drain:
    """One measurement of lesson 15: `count` processes drained `tasks` tasks in `seconds`.

    `runs` counts how many times each task number ran, and `per_process` how many tasks
    each process (by pid) ran, both read from the tasks' own runs.txt: a worker is another
    process, so it can only tell the notebook through a file.
    """

    count: int
    tasks: int
    seconds: float
    statuses: Counter[str]
    runs: Counter[int]
    per_process: Counter[int]

    @property
    def label(self) -> str:
        return f"{self.count} process{'es' if self.count > 1 else ''}"

    def __str__(self) -> str:
        shares = sorted(self.per_process.values(), reverse=True)
        rate = self.tasks / self.seconds
        return (
            f"{self.label:<11}: {self.tasks} tasks in {self.seconds:.2f} s "
            f"= {rate:6.0f} tasks/s; tasks per process: {shares}"
        )
