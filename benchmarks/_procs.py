"""sitq workers as real processes: `python -m sitq worker URL --create --import _tasks`.

What only separate processes show: how fast an idle worker notices work enqueued by
another process, what an idle worker costs in CPU, and whether four worker processes on
one queue drain it faster than one. Each contender starts its processes once, on a store
of its own (a SQLite file or a PostgreSQL schema, see _databases.py), and stops them
(SIGTERM, a graceful stop) in `close`, then removes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _tasks
from _databases import SQLiteStore, Store
from _runner import Reading
from _sitq import IDLE_CLI_WORKER, TIMEOUT, pickup_ms, pickup_readings, wait_until_succeeded

import sitq
from sitq import TaskQueue

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
READY_TIMEOUT = 60.0


MakeStore = Callable[[], Store]


class WorkerProcesses:
    """`count` worker processes on a store of their own; their output in a temp folder."""

    def __init__(self, count: int, make_store: MakeStore = SQLiteStore) -> None:
        self.count, self.make_store = count, make_store
        # made by start(), so an unused contender leaves nothing behind
        self.store: Store | None = None
        self.folder = Path()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        assert self.store is not None, "start() the workers first"
        return self.store.url

    async def start(self) -> None:
        """Start the processes and return once each has said it is ready."""
        self.store = self.make_store()
        self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-procs-"))
        async with TaskQueue(self.url):
            pass  # create the tables before several processes race to
        for i in range(self.count):
            self.procs.append(self._spawn(self.folder / f"worker-{i}.out"))
        await self._wait_ready()

    def _spawn(self, out: Path) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "sitq", "worker", self.url, "--create"]
        command += ["--import", "_tasks", "--concurrency", "10"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
        with out.open("wb") as stdout:
            return subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=stdout, stderr=subprocess.STDOUT
            )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        outputs = [self.folder / f"worker-{i}.out" for i in range(self.count)]
        while not all(b"ready" in out.read_bytes() for out in outputs):
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker process exited: {self._outputs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {READY_TIMEOUT}s: {self._outputs()}")
            await asyncio.sleep(0.02)

    def _outputs(self) -> str:
        return " | ".join(p.read_text()[-300:] for p in sorted(self.folder.glob("*.out")))

    def cpu_seconds(self) -> float:
        """CPU time the processes' threads have used so far, in seconds.

        Read from /proc/PID/task/*/schedstat, counted in nanoseconds: the usual utime and
        stime come in 10 ms ticks, too coarse to see a worker that wakes for 0.1 ms a time.
        """
        nanoseconds = 0
        for proc in self.procs:
            for stat in Path(f"/proc/{proc.pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError):  # a thread that ended a moment ago
                    nanoseconds += int(stat.read_text().split()[0])
        return nanoseconds / 1e9

    async def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.store is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            await self.store.discard()


class ProcessPickup:
    """Pickup latency of an idle worker in another process: enqueue here, start there."""

    def __init__(
        self, gaps: list[float], make_store: MakeStore = SQLiteStore, where: str = ""
    ) -> None:
        self.gaps, self.where = gaps, where
        self.workers = WorkerProcesses(1, make_store)
        self.queue: TaskQueue | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        queue = await self._ready_queue()
        samples = await pickup_ms(queue, self.gaps)
        where = f"across processes{self.where}"
        return pickup_readings("processes", IDLE_CLI_WORKER, where, samples)

    async def _ready_queue(self) -> TaskQueue:
        if self.queue is None:
            await self.workers.start()
            self.queue = await TaskQueue(self.workers.url).connect()
            await pickup_ms(self.queue, [0.0])  # warm-up, not counted
        return self.queue

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        await self.workers.close()


class IdleCpu:
    """CPU an idle worker process burns, in % of one core, over a window of real time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.workers: WorkerProcesses | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        if self.workers is None:
            self.workers = WorkerProcesses(1)
            await self.workers.start()
            await asyncio.sleep(1.0)  # let start-up work (imports, schema check) finish
        before, started = self.workers.cpu_seconds(), time.monotonic()
        await asyncio.sleep(self.seconds)
        used = self.workers.cpu_seconds() - before
        percent = 100 * used / (time.monotonic() - started)
        return [Reading("sitq", IDLE_CLI_WORKER, percent, "% of a core")]

    async def close(self) -> None:
        if self.workers is not None:
            await self.workers.close()


def processes(count: int) -> str:
    return f"{count} worker process{'es' if count > 1 else ''}"


class ProcessThroughput:
    """`n` tasks enqueued in one batch, drained by `count` worker processes.

    `task` is a function of _tasks (no-op, or `io_wait`); `key` names the reading (the
    count is added to it) and `work` its row. The clock runs from the enqueue to the last
    task's success; the CPU column is the worker processes' CPU in that time (the
    database server's, for PostgreSQL, is not in it).
    """

    def __init__(
        self,
        count: int,
        n: int,
        task: Callable[[], Any],
        key: str,
        make_store: MakeStore,
        work: str,
    ) -> None:
        self.count, self.n, self.task, self.key, self.work = count, n, task, key, work
        self.workers = WorkerProcesses(count, make_store)
        self.queue: TaskQueue | None = None
        self.succeeded = 0

    async def run(self, workdir: Path) -> list[Reading]:
        queue = await self._ready_queue()
        self.succeeded += self.n
        cpu, started = self.workers.cpu_seconds(), time.perf_counter()
        await queue.enqueue_many([sitq.call(self.task) for _ in range(self.n)])
        await wait_until_succeeded(queue, self.succeeded, processes(self.count))
        elapsed = time.perf_counter() - started
        cpu_per_1000 = 1000 * (self.workers.cpu_seconds() - cpu) / self.n
        label = f"sitq, {processes(self.count)}"
        key = f"{self.key}.{self.count}"
        return [Reading(key, label, self.n / elapsed, "tasks/s", self.work, cpu_per_1000)]

    async def _ready_queue(self) -> TaskQueue:
        if self.queue is None:
            await self.workers.start()
            self.queue = await TaskQueue(self.workers.url).connect()
        return self.queue

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        await self.workers.close()


class ProcessEndToEnd:
    """Enqueue `n` tasks one by one, then wait for every result; `count` worker processes
    run them (on PostgreSQL: other processes' settles wake the waiting queue by NOTIFY).
    The CPU column is the worker processes' CPU in that time."""

    def __init__(self, count: int, n: int, make_store: MakeStore) -> None:
        self.count, self.n = count, n
        self.workers = WorkerProcesses(count, make_store)
        self.queue: TaskQueue | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        queue = await self._ready_queue()
        cpu, started = self.workers.cpu_seconds(), time.perf_counter()
        ids = [await queue.enqueue(_tasks.one) for _ in range(self.n)]
        results = await queue.gather(ids, timeout=TIMEOUT, progress=False)
        elapsed = time.perf_counter() - started
        cpu_per_1000 = 1000 * (self.workers.cpu_seconds() - cpu) / self.n
        if any(r is None or r.value != 1 for r in results):
            raise RuntimeError(f"end to end, {processes(self.count)}: a task did not return 1")
        label = f"sitq, {processes(self.count)}"
        return [Reading(f"{self.count}", label, self.n / elapsed, "tasks/s", cpu=cpu_per_1000)]

    async def _ready_queue(self) -> TaskQueue:
        if self.queue is None:
            await self.workers.start()
            self.queue = await TaskQueue(self.workers.url).connect()
            await self.queue.get_result(await self.queue.enqueue(_tasks.one), timeout=TIMEOUT)
        return self.queue

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        await self.workers.close()
