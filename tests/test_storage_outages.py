"""A failed save never throws a finished task away (issue 21, point 1).

Each test makes storing an outcome fail for real, for a while, then ends the outage:

- another process holds SQLite's write lock (`BEGIN IMMEDIATE`) longer than the worker's
  busy_timeout while a task finishes;
- the disk under the SQLite file is full (a small tmpfs, filled with a file, freed later);
- a PostgreSQL role allowed few connections serves several workers at once.

In every case each task ends succeeded with its value: never `failed / WorkerLost`, never
stuck running, and no storage error stored as a task's error.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import POSTGRES_URL, skip_without_postgres
from test_storage_hardening import LockHolder

from sitq import SQLiteBackend, TaskQueue, TaskStatus, Worker, report_progress
from sitq.backends.postgres import PostgresBackend

GATE: dict[str, asyncio.Event] = {}


async def finishes_when_told(size: int = 0) -> str:
    GATE["started"].set()
    await GATE["release"].wait()
    return "x" * size or "done"


async def until(condition: object, what: str, seconds: float = 10) -> None:
    """Poll `condition()` (sync) until true, failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_an_outcome_that_meets_a_held_write_lock_is_kept_until_it_is_stored(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a task that finishes while another process holds the write lock longer than
    the worker's busy_timeout, when the lock is released, then the task ends succeeded
    with its value (its worker kept the outcome and wrote it again)."""
    GATE["started"], GATE["release"] = asyncio.Event(), asyncio.Event()
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.enqueue(finishes_when_told)
        worker = Worker(SQLiteBackend(db_path, busy_timeout=0.2), worker_id="w")
        await worker.start()
        await asyncio.wait_for(GATE["started"].wait(), 10)
        holder = LockHolder(db_path)
        GATE["release"].set()
        await until(lambda: "database is locked" in caplog.text, "a save past busy_timeout")
        holder.release()
        holder.finish()
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
        history = await queue.history(task_id)
    assert result is not None and (result.status, result.value) == (TaskStatus.SUCCEEDED, "done")
    assert [(a.worker_id, a.outcome) for a in history] == [("w", "succeeded")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs of its own (needs root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


async def test_successes_survive_a_full_disk(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given three running tasks whose results need new pages, when the disk fills up as
    they finish and is freed a moment later, then all three end succeeded with their
    values (none a WorkerLost dead letter, none with a storage error of its own)."""
    GATE["started"], GATE["release"] = asyncio.Event(), asyncio.Event()
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    db = small_disk / "queue.db"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = [await queue.enqueue(finishes_when_told, 300_000) for _ in range(3)]
        worker = Worker(SQLiteBackend(db), worker_id="w", concurrency=3)
        await worker.start()
        await until(lambda: len(worker._slots.running) == 3, "three running tasks")
        filler = fill(small_disk)
        GATE["release"].set()
        await until(lambda: "disk is full" in caplog.text, "a save that met the full disk")
        filler.unlink()
        results = await queue.gather(ids, timeout=20)
        await worker.stop()
    assert [(r.status, len(r.value)) for r in results] == [(TaskStatus.SUCCEEDED, 300_000)] * 3


async def test_workers_sharing_a_role_with_few_connections_lose_no_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a PostgreSQL role allowed 8 connections and 4 workers on it (each wants up to
    5), when 200 tasks run, then every one ends succeeded and none is left running: an
    outcome refused for "too many connections" is kept and stored later."""
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    skip_without_postgres()
    import asyncpg

    role, schema = f"sitq_few_{uuid.uuid4().hex[:8]}", f"sitq_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 8')
    await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
    url = POSTGRES_URL.replace("://postgres@", f"://{role}@", 1)
    workers: list[Worker] = []
    try:
        setup = PostgresBackend(url, schema=schema, pool_size=1)
        await setup.connect()  # the role creates sitq's tables in its own schema
        await setup.close()
        async with TaskQueue(PostgresBackend(POSTGRES_URL, schema=schema)) as queue:
            for n in range(4):
                backend = PostgresBackend(url, schema=schema, poll_interval=0.05)
                workers.append(Worker(backend, worker_id=f"w{n}", concurrency=8))
                await workers[-1].start()
            ids = await queue.enqueue_many([(double, (n,), {}) for n in range(200)])
            results = await queue.gather(ids, timeout=60)
            counts = await queue.counts()
            for worker in workers:
                await worker.stop()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f'DROP OWNED BY "{role}"')  # its grant too
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    assert "too many connections" in caplog.text  # the outage was real
    assert [(r.status, r.value) for r in results if r is not None] == [
        (TaskStatus.SUCCEEDED, 2 * n) for n in range(200)
    ]
    assert counts[TaskStatus.RUNNING] == 0 and counts[TaskStatus.FAILED] == 0


async def double(n: int) -> int:
    report_progress(0.5, "half way")  # one more connection wanted, now and then refused
    await asyncio.sleep(0.01)
    return 2 * n
