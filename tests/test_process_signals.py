"""Issue 21, point 3: a `sitq worker` with process-pool tasks, stopped by real signals.

The worker runs in a process group of its own, as a shell starts a job, and Ctrl-C is
SIGINT sent to the whole group: the worker *and* its pool processes get it. One SIGINT
must be one graceful stop (running tasks finish, or go back to the queue after --grace),
exit code 0; a second one exits at once with 130. Either way no pool process outlives the
worker. And a task that kills its own process fails alone: the worker replaces its pool
and runs the next task.

Pool processes are found in /proc (their parent is the worker) and in the tasks' own log
lines ("start KEY PID", tests/reliability_tasks.py).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pool_tasks
import pytest
import reliability_tasks as rt
from worker_processes import WorkerProcess, children_of, is_running, wait_until

from sitq import SQLiteBackend, TaskQueue, TaskStatus

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="process groups, /proc and PR_SET_PDEATHSIG are Linux's"
)

HOLD = 60.0  # seconds a held task waits for its release file: far beyond every deadline here


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


@pytest.fixture
def start(db_path: Path, log: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `sitq worker DB --import pool_tasks ...` in its own process group; at the
    end, kill whatever is left of that group (on a failure: the orphans under test)."""
    started: list[WorkerProcess] = []

    def start_worker(*options: str) -> WorkerProcess:
        worker = WorkerProcess(
            db_path, log, tmp_path, "--import", "pool_tasks", *options, own_group=True
        )
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start_worker
    for worker in started:
        with suppress(ProcessLookupError):
            worker.signal_group(signal.SIGKILL)
        worker.kill()


def starts(log: Path, count: int) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return sum(rt.tally(log, "start").values()) >= count

    return condition


def stderr_has(worker: WorkerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return text in worker.stderr()

    return condition


def all_ended(pids: set[int]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return not any(is_running(pid) for pid in pids)

    return condition


async def hold_two(queue: TaskQueue, release: Path) -> list[str]:
    """Two process tasks that run until `release` exists."""
    process = queue.with_options(executor="process")
    return [await process.enqueue(pool_tasks.hold, f"t{i}", str(release), HOLD) for i in (1, 2)]


async def pool_of(worker: WorkerProcess, log: Path) -> set[int]:
    """Wait until both held tasks run; return the worker's pool processes."""
    await wait_until(starts(log, 2), 30, "both tasks to start in pool processes")
    ran_in = {pid for event, _, pid in rt.read_log(log) if event == "start"}
    children = children_of(worker.pid)
    assert ran_in <= children and worker.pid not in ran_in, (ran_in, children)
    return children


@pytest.mark.timeout(90)
async def test_one_sigint_to_the_group_is_one_graceful_stop(
    db_path: Path, log: Path, tmp_path: Path, start: Callable[..., WorkerProcess]
) -> None:
    """The pool processes get the SIGINT too; it must count once: the worker stops
    gracefully, its running tasks finish and are stored, and it exits 0."""
    release = tmp_path / "release"
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = await hold_two(queue, release)
        worker = start()
        children = await pool_of(worker, log)
        worker.signal_group(signal.SIGINT)
        await wait_until(stderr_has(worker, "stopping: grace"), 20, "the graceful stop")
        release.touch()
        assert worker.wait(30) == 0, worker.describe()
        await wait_until(all_ended(children), 10, "the pool processes to end")
        statuses = [(await queue.get_task(task_id)).status for task_id in ids]

    assert statuses == [TaskStatus.SUCCEEDED] * 2
    assert rt.tally(log, "end") == {"t1": 1, "t2": 1}
    assert "exiting now" not in worker.stderr()  # no second signal was seen


@pytest.mark.timeout(90)
async def test_after_the_grace_tasks_go_back_and_their_processes_end(
    db_path: Path, log: Path, tmp_path: Path, start: Callable[..., WorkerProcess]
) -> None:
    """Tasks still running when --grace is over are handed back to the queue (no attempt
    spent) and the processes running them are ended, not left computing for nobody."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = await hold_two(queue, tmp_path / "never-created")
        worker = start("--grace", "0.5")
        children = await pool_of(worker, log)
        worker.signal_group(signal.SIGINT)
        assert worker.wait(30) == 0, worker.describe()
        await wait_until(all_ended(children), 10, "the pool processes to end")
        tasks = [await queue.get_task(task_id) for task_id in ids]

    assert [(task.status, task.attempts) for task in tasks] == [(TaskStatus.QUEUED, 0)] * 2
    assert "handed back to the queue at shutdown" in worker.stderr()
    assert not rt.tally(log, "end")


@pytest.mark.timeout(90)
async def test_a_second_sigint_exits_130_and_leaves_no_pool_process(
    db_path: Path, log: Path, tmp_path: Path, start: Callable[..., WorkerProcess]
) -> None:
    """The second Ctrl-C exits at once; the pool processes die with the worker (Linux:
    PR_SET_PDEATHSIG) instead of running on as orphans; the tasks stay lease-bound."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = await hold_two(queue, tmp_path / "never-created")
        worker = start()
        children = await pool_of(worker, log)
        worker.signal_group(signal.SIGINT)
        await wait_until(stderr_has(worker, "stopping: grace"), 20, "the graceful stop")
        worker.signal_group(signal.SIGINT)
        assert worker.wait(10) == 130, worker.describe()
        await wait_until(all_ended(children), 10, "the pool processes to end")
        statuses = [(await queue.get_task(task_id)).status for task_id in ids]

    assert statuses == [TaskStatus.RUNNING] * 2  # run again once their lease expires
    assert "SIGINT again: exiting now" in worker.stderr()


@pytest.mark.timeout(90)
async def test_a_task_that_kills_its_process_fails_alone_and_the_worker_goes_on(
    db_path: Path, start: Callable[..., WorkerProcess]
) -> None:
    """When a pool process dies, the pool ends the others with SIGTERM: that signal must
    not reach the worker as its own (it used to log "stopping" and exit 0)."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        process = queue.with_options(executor="process")
        worker = start()
        [crashed] = await queue.gather([await process.enqueue(pool_tasks.die)], timeout=30)
        [after] = await queue.gather([await process.enqueue(pool_tasks.where)], timeout=30)
        assert worker.process.poll() is None, worker.describe()  # still running
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.describe()

    assert crashed is not None and crashed.status is TaskStatus.FAILED
    assert crashed.error_type == "BrokenProcessPool"
    assert after is not None and after.status is TaskStatus.SUCCEEDED
    assert after.value not in (worker.pid, os.getpid())
    assert worker.stderr().count("stopping: grace") == 1  # the SIGTERM sent above
