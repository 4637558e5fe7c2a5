"""Security: pickle runs code, so a worker must never unpickle a row it cannot trust.

Anyone who can write the database file can put a pickle in a payload, and unpickling it
runs their code in the worker. The tests below show that happening, then show each guard:
signed payloads (HMAC, checked before unpickling), JSON payloads (data only, functions
named by import path, optionally limited to some modules), and owner-only files.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
from pathlib import Path

import pytest

from sitq import (
    CloudpickleSerializer,
    FakeClock,
    JsonSerializer,
    SerializationError,
    SignatureError,
    SignedSerializer,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.serialization import TaskCall

KEY = "0123456789abcdef-test-key-0123456789"


async def add(a: int, b: int) -> int:
    return a + b


def describe(name: str, tags: list[str], *, loud: bool = False) -> dict:
    text = f"{name} [{', '.join(tags)}]"
    return {"text": text.upper() if loud else text, "tags": tags}


class Booby:
    """A pickle that runs code when loaded: it creates the directory `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (os.mkdir, (str(self.path),))


def booby_trap(marker: Path) -> bytes:
    return pickle.dumps(Booby(marker))


async def run_all(db_path: Path, serializer: object) -> None:
    """Drain the queue with a worker using `serializer`."""
    worker = Worker(SQLiteBackend(db_path), serializer, clock=FakeClock())  # type: ignore[arg-type]
    await worker.run_until_idle()
    await worker.stop()


def write_payload(db_path: Path, task_id: str, payload: bytes) -> None:
    """What an attacker with write access to the file can do."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_tasks SET payload = ? WHERE id = ?", (payload, task_id))


async def enqueue(db_path: Path, serializer: object, func: object, *args: object) -> str:
    async with TaskQueue(SQLiteBackend(db_path), serializer) as queue:  # type: ignore[arg-type]
        return await queue.enqueue(func, *args)  # type: ignore[arg-type]


async def final(db_path: Path, task_id: str, serializer: object = None) -> object:
    async with TaskQueue(SQLiteBackend(db_path), serializer) as queue:  # type: ignore[arg-type]
        return await queue.get_result(task_id, timeout=1)


async def test_without_signing_a_planted_pickle_runs_code_in_the_worker(
    db_path: Path, tmp_path: Path
) -> None:
    """The danger, shown once: the default serializer trusts the database."""
    marker = tmp_path / "pwned"
    task_id = await enqueue(db_path, None, add, 1, 2)
    write_payload(db_path, task_id, booby_trap(marker))
    await run_all(db_path, CloudpickleSerializer())
    assert marker.exists()  # the attacker's code ran inside the worker


@pytest.mark.parametrize("tamper", ["planted pickle", "flipped byte", "other key", "truncated"])
async def test_a_signed_worker_refuses_tampered_rows_without_unpickling_them(
    db_path: Path, tmp_path: Path, tamper: str
) -> None:
    signed = SignedSerializer(KEY)
    marker = tmp_path / "pwned"
    task_id = await enqueue(db_path, signed, add, 1, 2)
    with sqlite3.connect(db_path) as conn:
        [(genuine,)] = conn.execute("SELECT payload FROM sitq_tasks").fetchall()
    forged = {
        "planted pickle": b"\0" * 32 + booby_trap(marker),
        "flipped byte": genuine[:-1] + bytes([genuine[-1] ^ 1]),
        "other key": SignedSerializer("another-key-of-32-bytes-0123456789").encode_call(
            TaskCall(os.mkdir, (str(marker),), {}), task_id=task_id
        ),
        "truncated": genuine[:20],
    }[tamper]
    write_payload(db_path, task_id, forged)

    await run_all(db_path, signed)

    result = await final(db_path, task_id, signed)
    assert result.status is TaskStatus.FAILED  # type: ignore[attr-defined]
    assert result.error_type == "SignatureError"  # type: ignore[attr-defined]
    assert "not deserialized" in result.error  # type: ignore[attr-defined]
    assert not marker.exists()  # never unpickled


async def test_a_signed_worker_refuses_unsigned_rows(db_path: Path) -> None:
    unsigned_id = await enqueue(db_path, CloudpickleSerializer(), add, 1, 2)
    signed_id = await enqueue(db_path, SignedSerializer(KEY), add, 2, 3)
    await run_all(db_path, SignedSerializer(KEY))
    refused = await final(db_path, unsigned_id, SignedSerializer(KEY))
    accepted = await final(db_path, signed_id, SignedSerializer(KEY))
    assert (refused.status, refused.error_type) == (TaskStatus.FAILED, "SignatureError")  # type: ignore[attr-defined]
    assert accepted.value == 5  # type: ignore[attr-defined]


async def test_results_are_signed_too(db_path: Path) -> None:
    """The client unpickles results, so a planted result row is refused as well."""
    signed = SignedSerializer(KEY)
    task_id = await enqueue(db_path, signed, add, 1, 2)
    await run_all(db_path, signed)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_tasks SET result = ?", (pickle.dumps(99),))
    with pytest.raises(SignatureError, match="not deserialized"):
        await final(db_path, task_id, signed)


def test_a_signing_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SignedSerializer("short")


async def test_json_round_trip_names_the_function_by_import_path(db_path: Path) -> None:
    json = JsonSerializer()
    task_id = await enqueue(db_path, json, describe, "sitq", ("queue", "json"))
    with sqlite3.connect(db_path) as conn:
        [(payload,)] = conn.execute("SELECT payload FROM sitq_tasks").fetchall()
    assert b'"func": "test_security:describe"' in payload  # readable data, no code
    await run_all(db_path, json)
    result = await final(db_path, task_id, json)
    assert result.value == {"text": "sitq [queue, json]", "tags": ["queue", "json"]}  # type: ignore[attr-defined]


async def test_json_and_signing_combine(db_path: Path) -> None:
    both = SignedSerializer(KEY, JsonSerializer())
    task_id = await enqueue(db_path, both, add, 20, 22)
    await run_all(db_path, both)
    assert (await final(db_path, task_id, both)).value == 42  # type: ignore[attr-defined]


def made_in_main() -> None: ...


made_in_main.__module__ = "__main__"


def test_json_refuses_functions_without_an_import_path() -> None:
    def nested() -> None: ...

    json = JsonSerializer()
    for func in (lambda: None, nested, made_in_main):
        with pytest.raises(SerializationError, match="has none a worker could import"):
            json.encode_call(TaskCall(func, (), {}))
    with pytest.raises(SerializationError, match="as JSON"):
        json.encode_call(TaskCall(add, ({1, 2}, 3), {}))


@pytest.mark.parametrize("modules", [None, ["test_security"]], ids=["any module", "limited"])
async def test_json_with_modules_runs_nothing_outside_them(
    db_path: Path, tmp_path: Path, modules: list[str] | None
) -> None:
    """Loading a JSON row runs no code, but the row names the function to call: a writer
    could name os:mkdir (or os:system). With modules=, the worker refuses it."""
    marker = tmp_path / "pwned"
    task_id = await enqueue(db_path, JsonSerializer(), add, 1, 2)
    planted = f'{{"func": "os:mkdir", "args": ["{marker}"], "kwargs": {{}}}}'.encode()
    write_payload(db_path, task_id, planted)
    await run_all(db_path, JsonSerializer(modules=modules))
    result = await final(db_path, task_id, JsonSerializer())
    if modules is None:
        assert marker.exists()  # the named function ran: any importable callable can
        return
    assert not marker.exists()
    assert (result.status, result.error_type) == (TaskStatus.FAILED, "TaskNotAllowedError")  # type: ignore[attr-defined]
    assert "'os:mkdir' is outside the modules" in result.error  # type: ignore[attr-defined]
    with pytest.raises(SerializationError, match="outside the modules"):
        JsonSerializer(modules=["myapp"]).encode_call(TaskCall(add, (1, 2), {}))


async def test_new_database_files_are_readable_by_their_owner_only(db_path: Path) -> None:
    previous = os.umask(0o022)  # a typical umask, which would otherwise give 0644
    try:
        async with TaskQueue(SQLiteBackend(db_path)) as queue:
            await queue.enqueue(add, 1, 2)
            files = sorted(db_path.parent.glob(db_path.name + "*"))
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        os.umask(previous)
    assert modes == {"queue.db": 0o600, "queue.db-shm": 0o600, "queue.db-wal": 0o600}
