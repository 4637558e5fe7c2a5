"""Bad input: each mistake gets a typed error that names the problem, at the right moment.

The rule: catch a mistake where it is made (at enqueue, in the caller's process), and when
only a worker can notice it (a corrupted row, a bad return value, a task calling
sys.exit), fail that one task with a clear error and keep the worker running.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq import (
    BackendError,
    InvalidOptionError,
    InvalidTaskError,
    PayloadTooLargeError,
    QueueClosedError,
    RetryPolicy,
    SchemaVersionError,
    SerializationError,
    SQLiteBackend,
    TaskNotFoundError,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.backends.sqlite.sql import SCHEMA_VERSION

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


async def add(a: int, b: int) -> int:
    return a + b


async def return_a_lock() -> threading.Lock:
    return threading.Lock()


async def exit_async(exc_type: type[BaseException]) -> None:
    raise exc_type()


def exit_in_thread(exc_type: type[BaseException]) -> None:
    raise exc_type()


def numbers() -> Iterator[int]:
    yield 1


async def test_a_non_callable_is_refused_at_enqueue(queue: TaskQueue) -> None:
    with pytest.raises(InvalidTaskError, match=r"needs a callable.*got int 42"):
        await queue.enqueue(42)
    with pytest.raises(InvalidTaskError, match="coroutine object"):
        await queue.enqueue(add(1, 2))
    assert sum((await queue.counts()).values()) == 0


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (threading.Lock, "lock"),
        (lambda path: open(path, "w"), "TextIOWrapper"),  # noqa: SIM115 - closed below
        (lambda _: numbers(), "generator"),
    ],
    ids=["lock", "open file", "generator"],
)
async def test_an_unpicklable_argument_fails_at_enqueue_not_in_the_worker(
    queue: TaskQueue, tmp_path: Path, make: object, type_name: str
) -> None:
    """The error names the argument and its type and says what to pass instead."""
    value = make() if make is threading.Lock else make(tmp_path / "f.txt")  # type: ignore[operator]
    try:
        with pytest.raises(SerializationError, match=f"argument 1 of type .*{type_name}") as err:
            await queue.enqueue(add, 1, value)
    finally:
        if hasattr(value, "close"):
            value.close()
    assert "pass a file *path*" in str(err.value)
    assert sum((await queue.counts()).values()) == 0  # nothing reached the database


async def test_an_unserializable_return_value_fails_that_task_clearly(
    queue: TaskQueue, worker: Worker
) -> None:
    bad = await queue.enqueue(return_a_lock)
    good = await queue.enqueue(add, 1, 2)
    await worker.run_until_idle()
    result = await queue.get_result(bad, timeout=1)
    assert result is not None and result.status is TaskStatus.FAILED
    assert result.error_type == "SerializationError"
    assert "return value of type lock" in (result.error or "")
    assert (await queue.get_result(good, timeout=1)).value == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "options",
    [{"delay": -1}, {"delay": math.nan}, {"timeout": -5}, {"timeout": math.nan}, {"timeout": 0}],
    ids=["negative delay", "NaN delay", "negative timeout", "NaN timeout", "zero timeout"],
)
async def test_impossible_delays_and_timeouts_are_refused(queue: TaskQueue, options: dict) -> None:
    name = next(iter(options))
    with pytest.raises(InvalidOptionError, match=f"{name} must be a finite number of seconds"):
        await queue.with_options(**options).enqueue(add, 1, 2)


@pytest.mark.parametrize("task_id", ["no-such-id", ""], ids=repr)
async def test_unknown_task_ids(queue: TaskQueue, task_id: str) -> None:
    """get_result answers None (the tutorial relies on it); status, cancel and requeue
    raise TaskNotFoundError, which is also a LookupError."""
    assert await queue.get_result(task_id, timeout=0.01) is None
    for method in (queue.status, queue.cancel, queue.requeue):
        with pytest.raises(TaskNotFoundError, match=r"no task with id"):
            await method(task_id)
    assert issubclass(TaskNotFoundError, LookupError)


@pytest.mark.parametrize("task_id", [42, 4.5, ["x"], ("a", "b")], ids=repr)
async def test_malformed_task_ids_are_a_typed_error_everywhere(
    queue: TaskQueue, task_id: object
) -> None:
    """Not a string is a mistake, not an unknown task: every method says what ids are."""
    methods = (queue.get_result, queue.history, queue.status, queue.cancel, queue.requeue)
    for method in methods:
        with pytest.raises(TaskNotFoundError, match=r"task ids are strings"):
            await method(task_id)  # type: ignore[operator]


async def test_a_closed_queue_says_so(db_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(db_path))
    async with queue:
        task_id = await queue.enqueue(add, 1, 2)
    for use in (queue.enqueue(add, 1, 2), queue.get_result(task_id), queue.counts()):
        with pytest.raises(QueueClosedError, match="cannot be reused"):
            await use


async def test_a_database_in_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    expected = rf"the folder '{re.escape(str(missing))}'.*does not exist"
    with pytest.raises(BackendError, match=expected):
        await SQLiteBackend(missing / "queue.db").connect()
    assert not (tmp_path / "no").exists()  # nothing created on the way


async def test_a_read_only_database_is_refused_at_connect(db_path: Path) -> None:
    """Tests run as root, for whom file permissions do not stop writes, so the file is
    opened read-only through SQLite's URI instead: the same situation for SQLite."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        await queue.enqueue(add, 1, 2)
    read_only = SQLiteBackend(f"file:{db_path}?mode=ro")
    with pytest.raises(BackendError, match=r"is read-only.*Fix the file's permissions"):
        await read_only.connect()
    assert not read_only.is_connected


async def test_a_database_from_a_newer_sitq_is_refused(db_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(db_path)):
        pass  # creates the file at this sitq's schema version
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE sitq_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    expected = f"schema version {SCHEMA_VERSION + 1}.*upgrade sitq"
    with pytest.raises(SchemaVersionError, match=expected):
        await TaskQueue(SQLiteBackend(db_path)).connect()


async def test_a_corrupted_payload_fails_that_task_and_the_worker_goes_on(
    queue: TaskQueue, worker: Worker, db_path: Path
) -> None:
    broken = await queue.enqueue(add, 1, 2)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_tasks SET payload = ? WHERE id = ?", (b"\x80\x05garbage", broken))
    fine = await queue.enqueue(add, 2, 2)
    assert await worker.run_until_idle() == 2
    result = await queue.get_result(broken, timeout=1)
    assert result is not None and result.status is TaskStatus.FAILED
    assert (result.error_type, result.attempts) == ("SerializationError", 1)
    assert "cannot deserialize task payload" in (result.error or "")
    assert (await queue.get_result(fine, timeout=1)).value == 4  # type: ignore[union-attr]


async def test_an_oversized_payload_is_refused_at_enqueue(db_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(db_path), max_payload_bytes=1000) as queue:
        with pytest.raises(PayloadTooLargeError, match=r"bytes, over the limit of 1,000"):
            await queue.enqueue(add, "x" * 2000, "")
        assert await queue.enqueue(add, 1, 2)  # small calls still go through
        assert sum((await queue.counts()).values()) == 1


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("func", [exit_async, exit_in_thread], ids=["async", "thread"])
async def test_system_exit_and_keyboard_interrupt_in_a_task_are_contained(
    db_path: Path, func: object, exc_type: type[BaseException]
) -> None:
    """A task cannot take its worker down: the attempt is recorded as failed (never
    retried: these are not ordinary errors) and the next task still runs."""
    backend = SQLiteBackend(db_path)
    retry = RetryPolicy.fixed(0, max_attempts=3)
    async with TaskQueue(backend) as queue, Worker(backend, concurrency=1, retry=retry):
        doomed = await queue.enqueue(func, exc_type)  # type: ignore[arg-type]
        after = await queue.enqueue(add, 20, 22)
        result = await queue.get_result(doomed, timeout=10)
        assert (await queue.get_result(after, timeout=10)).value == 42  # type: ignore[union-attr]
        [attempt] = await queue.history(doomed)
    assert result is not None and result.status is TaskStatus.FAILED
    assert result.error_type == exc_type.__name__ == attempt.error_type
    assert attempt.outcome == "failed"
