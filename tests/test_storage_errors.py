"""Storage trouble named, not raw (issue 21, point 9), under real conditions.

- another connection holds the write lock (`BEGIN IMMEDIATE`) past busy_timeout;
- the disk is really full (a 1 MB tmpfs, filled up);
- the file is damaged in its middle pages (garbage written over them);
- the database is a read-only copy (a tmpfs remounted read-only: root ignores mode bits).

Each raises a typed error (`sitq.errors.StorageError`) naming the file, the cause and the
fix, and still an `sqlite3` error for code that caught those; a worker stops on a damaged
file (`sitq worker` exits 3) instead of logging "malformed" twice a second forever; and
`sitq status` reads a read-only copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_processes import wait_until

from sitq import SQLiteBackend, TaskQueue, TaskStatus, Worker, WorkerHooks
from sitq.errors import DatabaseCorruptError, StorageBusyError, StorageFullError

PAGE = 4096  # SQLite's default page size, which sitq keeps


async def add(a: int, b: int) -> int:
    return a + b


def sitq_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sitq", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """An empty folder to mount a real tmpfs on; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "mnt"
    folder.mkdir()
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def mount_tmpfs(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                   check=True)  # fmt: skip


def fill_up(path: Path) -> None:
    """Write zeros to `path` until the file system says it is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(PAGE))
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)


async def test_an_enqueue_past_a_held_write_lock_names_the_file_and_busy_timeout(
    db_path: Path,
) -> None:
    """Given another connection holding SQLite's write lock (BEGIN IMMEDIATE), when an
    enqueue waits longer than busy_timeout, then it raises StorageBusyError naming the file,
    the timeout and the fix; it is still a sqlite3.OperationalError; the lock released,
    the next enqueue works."""
    async with TaskQueue(SQLiteBackend(db_path, busy_timeout=0.2)) as queue:
        await queue.enqueue(add, 0, 0)
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageBusyError) as raised:
                await queue.enqueue(add, 1, 2)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await queue.enqueue(add, 3, 4)
        counts = await queue.counts()
    message = str(raised.value)
    assert isinstance(raised.value, sqlite3.OperationalError)
    assert str(db_path) in message and "busy_timeout=0.2s" in message
    assert "locked" in message and "busy_timeout=SECONDS" in message
    assert counts[TaskStatus.QUEUED] == 2


async def test_an_enqueue_on_a_full_disk_names_the_disk_and_loses_nothing_stored(
    mount_point: Path,
) -> None:
    """Given a queue on a real 1 MB tmpfs that another file has filled, when a task is
    enqueued (or a new queue is made there), then StorageFullError says the disk holding the
    file is full and to free space; once space is freed the same queue works and every
    earlier task is there."""
    mount_tmpfs(mount_point, "1m")
    db = mount_point / "queue.db"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        first = await queue.enqueue(add, 1, 2)
        fill_up(mount_point / "filler")
        with pytest.raises(StorageFullError) as raised:
            for _ in range(50):  # a page or two may still fit: the disk fills within a few
                await queue.enqueue(add, 1, "x" * PAGE)
        with pytest.raises(StorageFullError):  # a new queue there cannot write its schema
            await SQLiteBackend(mount_point / "new.db").connect()
        (mount_point / "filler").unlink()
        await queue.enqueue(add, 5, 6)
        assert (await queue.get_task(first)).status is TaskStatus.QUEUED
    message = str(raised.value)
    assert isinstance(raised.value, sqlite3.OperationalError)
    assert str(db) in message and "is full" in message and "Free space" in message


def damaged_database(path: Path, tasks: int = 3000) -> None:
    """A queue file of `tasks` waiting tasks, with garbage over its middle fifth of pages."""

    async def enqueue() -> None:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            await queue.enqueue_many([(abs, (-i,)) for i in range(tasks)])

    asyncio.run(enqueue())
    assert not Path(f"{path}-wal").exists()  # all of it is in the file itself
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as file:
        for page in range(pages * 2 // 5, pages * 3 // 5):
            file.seek(page * PAGE)
            file.write(bytes(range(256)) * (PAGE // 256))


def test_sitq_worker_on_a_damaged_file_stops_with_exit_code_3(tmp_path: Path) -> None:
    """Given a database damaged in its middle pages, when `sitq worker` runs on it, then it
    stops at the first damage it meets with exit code 3 and a message that names the file
    and the way out, instead of logging "malformed" every half second forever."""
    db = tmp_path / "queue.db"
    damaged_database(db)
    done = sitq_command("worker", str(db), timeout=60)
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"sitq: DatabaseCorruptError: the database file {db} is damaged" in done.stderr
    assert ".recover" in done.stderr
    assert done.stderr.count("error in its main loop") == 1


async def test_a_worker_on_a_damaged_file_ends_its_loop_and_tells_its_hooks(
    tmp_path: Path,
) -> None:
    """Given a started worker on a damaged database, when its claim meets the damage, then
    its loop ends and `on_worker_stopped` gets the DatabaseCorruptError; stop() still works."""
    db = tmp_path / "queue.db"
    await asyncio.to_thread(damaged_database, db)

    class Told(WorkerHooks):
        error: BaseException | None = None

        def on_worker_stopped(self, worker_id: str, error: BaseException) -> None:
            self.error = error

    told = Told()
    worker = Worker(SQLiteBackend(db), hooks=told, worker_id="w")
    await worker.start()

    async def stopped() -> bool:
        return told.error is not None

    await wait_until(stopped, 30, "the worker to stop on the damage")
    await worker.stop()
    assert isinstance(told.error, DatabaseCorruptError)
    assert isinstance(told.error, sqlite3.DatabaseError)


def test_sitq_status_on_a_damaged_file_exits_3(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    damaged_database(db)
    done = sitq_command("status", str(db))
    assert done.returncode == 3 and "DatabaseCorruptError" in done.stderr, done.stderr


@pytest.mark.parametrize("copied", ["closed file", "live file with -wal and -shm"])
async def test_sitq_status_and_dead_read_a_read_only_copy(
    tmp_path: Path, mount_point: Path, copied: str
) -> None:
    """Given a copy of a queue on a file system mounted read-only (so even root cannot
    write it), either closed or taken while a connection had it open, when `sitq status`
    and `sitq dead` look at it, then they print what is there (they open it read-only and
    write nothing), and a command that must write says the file is read-only."""
    source = tmp_path / "queue.db"
    mount_tmpfs(mount_point, "8m")
    async with TaskQueue(SQLiteBackend(source)) as queue:
        dead = await queue.enqueue(add, 1, "2")  # a TypeError: a dead letter
        worker = Worker(queue.backend, worker_id="w")
        assert await worker.run_once() == 1
        await worker.stop()
        await queue.enqueue_many([(add, (i, i)) for i in range(3)])
        if copied == "closed file":
            await queue.close()
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", f"{mount_point / 'queue.db'}{suffix}")
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    copy = str(mount_point / "queue.db")

    status = sitq_command("status", copy, "--json")
    dead_letters = sitq_command("dead", copy)
    purge = sitq_command("purge", copy)

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queued"] == 3
    assert json.loads(status.stdout)["failed"] == 1
    assert dead_letters.returncode == 0 and dead in dead_letters.stdout, dead_letters.stderr
    assert purge.returncode == 1 and "read-only" in purge.stderr, purge.stderr
