"""The last bad inputs of issue 9 (item 7): each gets a typed error that names the problem.

A damaged or foreign database file, ids that are not strings, impossible options for a
task, a worker or a backend, malformed batch items: every one is refused with a sitq
error (never `no such column` or a bare TypeError), as early as it can be noticed. And a
queue file holds code, so it is created private (0600) however it is named, and a file
that others can read is reported.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from sitq import (
    InvalidOptionError,
    InvalidTaskError,
    SchemaVersionError,
    SerializationError,
    SQLiteBackend,
    TaskNotFoundError,
    TaskQueue,
    Worker,
)
from sitq.backends.sqlite.sql import SCHEMA_VERSION


async def add(a: int, b: int) -> int:
    return a + b


async def make_database(path: Path) -> None:
    async with TaskQueue(SQLiteBackend(path)):
        pass  # creates the file at this sitq's schema version


# -- a database sitq cannot read ------------------------------------------------------------


async def test_a_schema_version_that_is_not_a_number_is_a_schema_error(db_path: Path) -> None:
    await make_database(db_path)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_meta SET value = 'two' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match=r"'two'.*not a number"):
        await TaskQueue(SQLiteBackend(db_path)).connect()


async def test_a_newer_schema_with_another_layout_is_a_schema_error(db_path: Path) -> None:
    """A newer sitq may have renamed columns: the version is read before any of them."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE sitq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "INSERT INTO sitq_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 7),)
        )
        conn.execute("CREATE TABLE sitq_tasks (uid TEXT PRIMARY KEY, state TEXT, body BLOB)")
    os.chmod(db_path, 0o600)
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 7}"):
        await TaskQueue(SQLiteBackend(db_path)).connect()
    with sqlite3.connect(db_path) as conn:  # and the file was left as it was
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sitq_tasks)")]
    assert columns == ["uid", "state", "body"]


# -- ids that are not strings ----------------------------------------------------------------


@pytest.mark.parametrize("call", ["history", "get_result"])
async def test_a_list_of_ids_is_not_an_id(queue: TaskQueue, call: str) -> None:
    with pytest.raises(TaskNotFoundError, match="task ids are strings"):
        await getattr(queue, call)(["x"])


# -- task options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"priority": 2**70}, r"priority .*out of range"),
        ({"priority": -(2**64)}, r"priority .*out of range"),
        ({"priority": True}, r"priority must be a whole number.*True"),
        ({"priority": 1.5}, r"priority must be a whole number"),
        ({"name": 123}, r"name must be a non-empty str.*123"),
        ({"name": "  "}, r"name must be a non-empty str"),
    ],
)
async def test_impossible_task_options_are_refused(
    queue: TaskQueue, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOptionError, match=named):
        await queue.with_options(**options).enqueue(add, 1, 2)
    assert sum((await queue.counts()).values()) == 0


async def test_the_largest_64_bit_priority_is_accepted(queue: TaskQueue) -> None:
    task_id = await queue.with_options(priority=2**63 - 1).enqueue(add, 1, 2)
    assert (await queue.get_task(task_id)).priority == 2**63 - 1


# -- enqueue_many items ----------------------------------------------------------------------


async def test_a_malformed_batch_item_names_its_index(queue: TaskQueue) -> None:
    with pytest.raises(InvalidTaskError, match=r"item #0 is \(<function add.*, 5\)"):
        await queue.enqueue_many([(add, 5)])


async def test_a_bad_call_in_a_batch_names_the_call_and_nothing_is_enqueued(
    queue: TaskQueue,
) -> None:
    with pytest.raises(InvalidTaskError, match=r"call #1 \(int\)"):
        await queue.enqueue_many([(add, (1, 2)), (5, (3,))])
    assert sum((await queue.counts()).values()) == 0


async def test_an_unpicklable_argument_in_a_batch_names_the_call(queue: TaskQueue) -> None:
    calls = [(add, (1, 2)), (add, (3, 4)), (add, (threading.Lock(), 1))]
    with pytest.raises(SerializationError, match=r"call #2 \(add\)"):
        await queue.enqueue_many(calls)
    assert sum((await queue.counts()).values()) == 0


# -- worker options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"concurrency": True}, r"concurrency must be a whole number.*True"),
        ({"concurrency": 0}, r"concurrency must be a whole number >= 1"),
        ({"lease_seconds": "30"}, r"lease_seconds must be a number of seconds, got '30'"),
        ({"lease_seconds": float("inf")}, r"lease_seconds must be a finite number.*inf"),
        ({"lease_seconds": float("nan")}, r"lease_seconds must be a finite number"),
        ({"lease_seconds": 0}, r"lease_seconds must be a finite number of seconds > 0"),
    ],
)
def test_impossible_worker_options_are_refused_at_construction(
    db_path: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOptionError, match=named):
        Worker(SQLiteBackend(db_path), **options)
    assert not db_path.exists()  # refused before anything was opened


# -- backend options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"busy_timeout": -1}, r"busy_timeout must be a finite number of seconds >= 0.*-1"),
        ({"busy_timeout": float("inf")}, r"busy_timeout"),
        ({"busy_timeout": "30"}, r"busy_timeout must be a number of seconds"),
        ({"synchronous": "SOMETIMES"}, r"synchronous must be one of OFF, NORMAL, FULL, EXTRA"),
        ({"synchronous": 1}, r"synchronous must be one of"),
    ],
)
def test_impossible_backend_options_are_refused_at_construction(
    db_path: Path, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidOptionError, match=named):
        SQLiteBackend(db_path, **options)
    assert not db_path.exists()


def test_synchronous_is_case_insensitive(db_path: Path) -> None:
    assert SQLiteBackend(db_path, synchronous="full").synchronous == "FULL"


# -- file permissions -----------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_database_created_through_a_file_uri_is_private(db_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        async with TaskQueue(SQLiteBackend(f"file:{db_path}?mode=rwc")) as queue:
            await queue.enqueue(add, 1, 2)
            assert mode_of(db_path) == 0o600
            wal = db_path.with_name(db_path.name + "-wal")
            assert mode_of(wal) == 0o600  # SQLite gives its side files the file's mode
    finally:
        os.umask(old_umask)


async def test_a_plain_path_is_private_too(db_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        await make_database(db_path)
    finally:
        os.umask(old_umask)
    assert mode_of(db_path) == 0o600


async def test_opening_a_database_others_can_read_logs_a_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await make_database(db_path)
    os.chmod(db_path, 0o644)
    with caplog.at_level(logging.WARNING, logger="sitq"):
        await make_database(db_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.records
    message = warnings[0].getMessage()
    assert f"chmod 600 {db_path}" in message
    assert "644" in message


async def test_a_private_database_opens_without_a_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await make_database(db_path)
    with caplog.at_level(logging.WARNING, logger="sitq"):
        await make_database(db_path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_file_uri_to_a_readable_database_warns_too(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await make_database(db_path)
    os.chmod(db_path, 0o640)
    with caplog.at_level(logging.WARNING, logger="sitq"):
        async with TaskQueue(SQLiteBackend(f"file:{db_path}?mode=rw")):
            pass
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
