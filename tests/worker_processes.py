"""Real worker processes for tests: `python -m sitq worker ...`, as a user would start them.

A worker is `python -m sitq worker DB`, DB a SQLite file or a postgresql:// URL.

A test starts workers, waits for each one's "ready" line (never a fixed sleep), enqueues
from its own process, waits for a condition with a deadline, and kills leftovers in a
`finally`. Task functions come from tests/reliability_tasks.py, importable in the worker
because tests/ is put on its PYTHONPATH.
"""

from __future__ import annotations

import asyncio
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

TESTS_DIR = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0  # seconds: a cold interpreter start on a busy 2-core machine


class WorkerProcess:
    """One `python -m sitq worker DB` process; stdout is watched for its ready line."""

    def __init__(
        self, db: Path | str, log: Path, folder: Path, *options: str, own_group: bool = False
    ) -> None:
        """`own_group`: start it in a process group of its own (as a shell starts a job),
        so `signal_group` reaches it and its pool processes, as Ctrl-C in a terminal does."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        env[LOG_ENV] = str(log)
        command = worker_command(str(db))
        command += ["--create", "--import", "reliability_tasks", *options]
        self.stderr_path = folder / f"worker-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=own_group,
            )
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

    def signal_group(self, signum: signal.Signals) -> None:
        """Signal its whole process group (needs `own_group=True`), like Ctrl-C does."""
        os.killpg(self.pid, signum)

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
    """`sitq worker DB`, for a SQLite file or a PostgreSQL URL alike."""
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


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is `pid`, read from /proc (Linux)."""
    found = _processes().items()
    return {child for child, (parent, state) in found if parent == pid and state != "Z"}


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an ended process not yet reaped)."""
    found = _processes().get(pid)
    return found is not None and found[1] != "Z"


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, state letter)} for every process in /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses
        state, parent = text[text.rindex(")") + 2 :].split()[:2]
        found[int(stat.parent.name)] = (int(parent), state)
    return found
