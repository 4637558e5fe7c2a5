"""Signatures bound to their place: a signed value is valid only in the row and field it was
written to.

An HMAC over the bytes alone proves who wrote them, not where. Someone who can write the
database could then copy a signed *result* (data a task returned, perhaps echoing user input)
into another row's *payload*, where the worker would unpickle and run it, or copy one task's
result onto another. `SignedSerializer` signs the task id and the field with the bytes, so a
moved value is refused with `SignatureError` before anything is unpickled.

Each trap below is a pickle that creates a marker directory when loaded: the marker staying
absent proves the moved bytes were never decoded.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from sitq import (
    FakeClock,
    SignatureError,
    SignedSerializer,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.wire.serialization import TaskCall

KEY = "0123456789abcdef-binding-key-0123456789"
SIGNED = SignedSerializer(KEY)


class Booby:
    """A value whose pickle runs code when loaded: it creates the directory `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (os.mkdir, (self.path,))


def make_trap(path: str) -> Booby:
    """A task that returns user-shaped data: its signed result is a loaded gun."""
    return Booby(path)


def add(a: int, b: int) -> int:
    return a + b


async def run_all(db_path: Path) -> None:
    worker = Worker(SQLiteBackend(db_path), SIGNED, clock=FakeClock())
    await worker.run_until_idle()
    await worker.stop()


def copy_column(db_path: Path, source: str, source_id: str, target: str, target_id: str) -> None:
    """What an attacker with write access to the file can do: move signed bytes around."""
    with sqlite3.connect(db_path) as conn:
        [(data,)] = conn.execute(f"SELECT {source} FROM sitq_tasks WHERE id = ?", (source_id,))
        conn.execute(f"UPDATE sitq_tasks SET {target} = ? WHERE id = ?", (data, target_id))


async def test_a_result_moved_into_another_rows_payload_is_refused_and_never_decoded(
    db_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with TaskQueue(SQLiteBackend(db_path), SIGNED) as queue:
        trap_id = await queue.enqueue(make_trap, str(marker))
        await run_all(db_path)  # the worker signs the trap as trap_id's result
        victim_id = await queue.enqueue(add, 1, 2)
        copy_column(db_path, "result", trap_id, "payload", victim_id)

        await run_all(db_path)

        victim = await queue.get_result(victim_id, timeout=1)
    assert (victim.status, victim.error_type) == (TaskStatus.FAILED, "SignatureError")
    assert "copied from another row or field" in (victim.error or "")
    assert not marker.exists()  # the moved result was never unpickled


async def test_a_payload_moved_to_another_row_is_refused(db_path: Path, tmp_path: Path) -> None:
    marker = tmp_path / "made-by-the-moved-call"
    async with TaskQueue(SQLiteBackend(db_path), SIGNED) as queue:
        original_id = await queue.enqueue(os.mkdir, str(marker))
        victim_id = await queue.enqueue(add, 1, 2)
        copy_column(db_path, "payload", original_id, "payload", victim_id)
        await queue.cancel(original_id)  # only the copy could still run the call

        await run_all(db_path)

        victim = await queue.get_result(victim_id, timeout=1)
    assert (victim.status, victim.error_type) == (TaskStatus.FAILED, "SignatureError")
    assert not marker.exists()


async def test_a_result_copied_onto_another_row_is_refused_at_get_result(
    db_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    async with TaskQueue(SQLiteBackend(db_path), SIGNED) as queue:
        trap_id = await queue.enqueue(make_trap, str(marker))
        victim_id = await queue.enqueue(add, 1, 2)
        await run_all(db_path)
        assert (await queue.get_result(victim_id, timeout=1)).value == 3  # genuine: accepted
        copy_column(db_path, "result", trap_id, "result", victim_id)

        with pytest.raises(SignatureError, match="not deserialized"):
            await queue.get_result(victim_id, timeout=1)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (("value", "A"), ("call", "A")),
        (("call", "A"), ("value", "A")),
        (("value", "A"), ("value", "B")),
        (("call", "A"), ("call", "B")),
    ],
    ids=[
        "result read as payload",
        "payload read as result",
        "other row's result",
        "other row's payload",
    ],
)
def test_signed_bytes_verify_only_in_the_field_and_task_they_were_written_for(
    tmp_path: Path, written: tuple[str, str], read: tuple[str, str]
) -> None:
    marker = tmp_path / "pwned"
    trap_call = TaskCall(add, (Booby(str(marker)), 2), {})  # loading its arguments springs it
    kind, task_id = written
    if kind == "value":
        data = SIGNED.encode_value(Booby(str(marker)), task_id=task_id)
    else:
        data = SIGNED.encode_call(trap_call, task_id=task_id)
    decode = SIGNED.decode_value if read[0] == "value" else SIGNED.decode_call

    with pytest.raises(SignatureError, match="not deserialized"):
        decode(data, task_id=read[1])
    assert not marker.exists()

    decode = SIGNED.decode_value if kind == "value" else SIGNED.decode_call
    decode(data, task_id=task_id)  # in its own place the same bytes load (and spring the trap)
    assert marker.exists()


def test_a_signed_serializer_needs_the_task_id() -> None:
    call = TaskCall(add, (1, 2), {})
    with pytest.raises(SignatureError, match="needs the task id"):
        SIGNED.encode_call(call)
    with pytest.raises(SignatureError, match="needs the task id"):
        SIGNED.decode_value(SIGNED.encode_value(3, task_id="t1"))
