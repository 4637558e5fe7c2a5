"""Real worker processes for tests: `python -m sitq worker ...`, as a user would start them.

On SQLite a worker is `python -m sitq worker DB`. On PostgreSQL it is this module run as a
script, `python -m worker_processes URL`, a stand-in for the CLI (same options, same
"ready"/"stopped" lines, SIGTERM stops it gracefully) until `sitq worker` accepts URLs.

A test starts workers, waits for each one's "ready" line (never a fixed sleep), enqueues
from its own process, waits for a condition with a deadline, and kills leftovers in a
`finally`. Task functions come from tests/reliability_tasks.py, importable in the worker
because tests/ is put on its PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reliability_tasks import LOG_ENV

from sitq import Worker
from sitq.backends import open_backend

TESTS_DIR = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0  # seconds: a cold interpreter start on a busy 2-core machine


class WorkerProcess:
    """One `python -m sitq worker DB` process; stdout is watched for its ready line."""

    def __init__(self, db: Path | str, log: Path, folder: Path, *options: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        env[LOG_ENV] = str(log)
        command = worker_command(str(db))
        command += ["--create", "--import", "reliability_tasks", *options]
        self.stderr_path = folder / f"worker-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
        self.stdout = b""
        self.worker_id = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the worker prints "sitq worker <id> ready on <db>"; return the id."""
        line = self.read_line(timeout)
        words = line.split()
        assert words[:2] == ["sitq", "worker"] and words[3:5] == ["ready", "on"], line
        self.worker_id = words[2]
        return self.worker_id

    def read_line(self, timeout: float) -> str:
        """The next line of stdout, waiting at most `timeout` seconds for it."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self.stdout:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise TimeoutError(f"no line from worker in {timeout}s; {self.describe()}")
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"worker exited: {self.describe()}")
                self.stdout += chunk
        line, _, self.stdout = self.stdout.partition(b"\n")
        return line.decode()

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"pid {self.pid}, exit code {self.process.poll()}, stderr:\n{self.stderr()}"

    def kill(self) -> None:
        """Make sure the process is gone (a test's `finally`)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def worker_command(db: str) -> list[str]:
    """`sitq worker DB` for a SQLite file; this module's stand-in for a PostgreSQL URL."""
    if db.startswith(("postgresql://", "postgres://")):
        return [sys.executable, "-m", "worker_processes", db]
    return [sys.executable, "-m", "sitq", "worker", db]


@contextmanager
def workers(
    db: Path | str, log: Path, folder: Path, count: int, *options: str
) -> Iterator[list[WorkerProcess]]:
    """Start `count` workers, wait until all are ready, and kill any left at the end."""
    started: list[WorkerProcess] = []
    try:
        started += [WorkerProcess(db, log, folder, *options) for _ in range(count)]
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.kill()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.02
) -> None:
    """Check `condition` again and again until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)  # the pause between two looks, not a synchronisation


# -- the stand-in worker command (`python -m worker_processes URL`) -------------------------


async def run_worker(args: argparse.Namespace) -> None:
    """Like `sitq worker`: ready line, run until SIGTERM/SIGINT, stop with a grace period,
    "stopped after N tasks" line; a second signal exits at once."""
    worker = Worker(open_backend(args.url), concurrency=args.concurrency,
                    lease_seconds=args.lease, shutdown_grace=args.grace)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            signum, lambda s=signum: os._exit(128 + s) if stop.is_set() else stop.set()
        )
    await worker.start()
    print(f"sitq worker {worker.worker_id} ready on {args.url}", flush=True)
    await stop.wait()
    await worker.stop(args.grace)
    print(f"sitq worker {worker.worker_id} stopped after {worker.processed} tasks", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker_processes")
    parser.add_argument("url")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("--create", action="store_true", help="accepted; the schema is always made")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    for module in args.imports:
        __import__(module)
    asyncio.run(run_worker(args))


if __name__ == "__main__":
    main()
