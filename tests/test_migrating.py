"""Code written for the original sitq (legout/sitq) either works here or fails loudly.

docs/migrating.md lists the deliberate differences; these tests hold the small bridges:
`deserialize_result`, a warning for `status == "success"`, dumps/loads serializers, `from
sitq import Backend`, sqlite+aiosqlite URLs, `async with` a backend, and a loud error for a
backend written against the original's Backend class.
"""

from __future__ import annotations

import base64
import pickle
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from backends import Database

import sitq
from sitq import (
    NO_RETRY,
    InvalidOptionError,
    InvalidTaskError,
    SerializationError,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.backends.base import Backend


def double(x: int) -> int:
    return 2 * x


def fail() -> None:
    raise ValueError("no")


class Base64Pickle:
    """The original's docs' custom serializer shape: dumps returns str, loads takes str."""

    def dumps(self, obj: Any) -> str:
        return base64.b64encode(pickle.dumps(obj)).decode()

    def loads(self, data: str) -> Any:
        return pickle.loads(base64.b64decode(data.encode()))


async def test_deserialize_result_returns_the_value_get_result_decoded(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "q.db")
    async with TaskQueue(backend) as queue:
        ok, bad = await queue.enqueue(double, 21), await queue.enqueue(fail)
        await Worker(backend, retry=NO_RETRY).run_until_idle()
        done = await queue.get_result(ok, timeout=5)
        failed = await queue.get_result(bad, timeout=5)
        assert done is not None and failed is not None
        assert queue.deserialize_result(done) == 42
        assert queue.deserialize_result(failed) is None
        with pytest.raises(InvalidTaskError, match="get_result returns None"):
            queue.deserialize_result(None)  # type: ignore[arg-type]


def test_comparing_a_status_with_the_originals_words_warns() -> None:
    status = TaskStatus.SUCCEEDED
    with pytest.warns(sitq.SitqWarning, match='"succeeded"'):
        assert not status == "success"  # noqa: SIM201 - the original's pattern, on purpose
    with pytest.warns(sitq.SitqWarning, match="is_pending"):
        assert "pending" != status  # noqa: SIM300 - str on the left: the reflected check warns too
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sitq's own words never warn
        assert status == "succeeded" and status != "failed"
        assert {status: 1}["succeeded"] == 1


@pytest.mark.parametrize("serializer", [pickle, Base64Pickle()], ids=["pickle", "str"])
async def test_a_serializer_with_only_dumps_and_loads_is_adapted(
    tmp_path: Path, serializer: Any
) -> None:
    backend = SQLiteBackend(tmp_path / "q.db")
    async with TaskQueue(backend, serializer=serializer) as queue:
        task_id = await queue.enqueue(double, 4)
        await Worker(backend, serializer=serializer).run_until_idle()
        result = await queue.get_result(task_id, timeout=5)
    assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert result.value == 8


def test_an_object_that_is_no_serializer_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="dumps and loads"):
        TaskQueue(SQLiteBackend(tmp_path / "q.db"), serializer=object())  # type: ignore[arg-type]


def test_backend_is_importable_from_sitq() -> None:
    from sitq import Backend

    assert isinstance(SQLiteBackend(":memory:"), Backend)


async def test_sqlite_aiosqlite_urls_name_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend("sqlite+aiosqlite:///tasks.db").path == "tasks.db"
    assert SQLiteBackend(f"sqlite+aiosqlite:///{tmp_path}/a.db").path == f"{tmp_path}/a.db"
    async with TaskQueue("sqlite+aiosqlite:///tasks.db") as queue:
        await queue.enqueue(double, 1)
    assert (tmp_path / "tasks.db").is_file()
    with pytest.raises(InvalidOptionError, match="three slashes"):
        SQLiteBackend("sqlite+aiosqlite://tasks.db")


async def test_async_with_a_backend_connects_and_closes_it(database: Database) -> None:
    backend = database.backend()
    async with backend as opened:
        assert opened is backend and backend.is_connected
        async with TaskQueue(backend) as queue:  # a queue shares the open connection
            await queue.enqueue(double, 1)
        assert backend.is_connected
    assert not backend.is_connected


class OriginalStyleBackend(Backend):
    """A backend as the original sitq's abstract Backend asked for it."""

    def __init__(self) -> None:
        self.stored: list[Any] = []

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def enqueue(self, task: Any) -> None:
        self.stored.append(task)

    async def reserve(self, max_items: int, now: datetime) -> list[Any]:
        return []

    async def mark_success(self, task_id: str, result_value: bytes) -> None:
        pass

    async def mark_failure(self, task_id: str, error: str, traceback: str) -> None:
        pass

    async def get_result(self, task_id: str) -> Any:
        return None


def test_a_backend_written_the_original_way_is_refused_before_it_loses_a_task() -> None:
    with pytest.raises(sitq.IncompleteBackendError, match="add_tasks") as caught:
        TaskQueue(OriginalStyleBackend())
    assert "docs/migrating.md" in str(caught.value)
    with pytest.raises(sitq.IncompleteBackendError, match="claim"):
        Worker(OriginalStyleBackend())


def test_an_object_missing_backend_operations_is_refused() -> None:
    with pytest.raises(sitq.IncompleteBackendError, match="object does not implement connect"):
        TaskQueue(object())  # type: ignore[arg-type]
