"""Security: pickle runs code, so a worker must never unpickle a row it cannot trust.

Anyone who can write the database file can put a pickle in a payload, and unpickling it
runs their code in the worker. The tests below show that happening, then show each guard:
signed payloads (HMAC, checked before unpickling), JSON payloads (data only, functions
named by import path, optionally limited to some modules), and owner-only files.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import sitq
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
from sitq.wire.serialization import TaskCall

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
    as_json = JsonSerializer()
    task_id = await enqueue(db_path, as_json, describe, "sitq", ("queue", "json"))
    with sqlite3.connect(db_path) as conn:
        [(payload,)] = conn.execute("SELECT payload FROM sitq_tasks").fetchall()
    assert b'"func": "test_security:describe"' in payload  # readable data, no code
    await run_all(db_path, as_json)
    result = await final(db_path, task_id, as_json)
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

    as_json = JsonSerializer()
    for func in (lambda: None, nested, made_in_main):
        with pytest.raises(SerializationError, match="has none a worker could import"):
            as_json.encode_call(TaskCall(func, (), {}))
    with pytest.raises(SerializationError, match="as JSON"):
        as_json.encode_call(TaskCall(add, ({1, 2}, 3), {}))


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


# -- JSON allow-list: only functions *defined* in an allowed module -------------------------

MYAPP_TASKS = """
import os
import subprocess

import sitq.engine.worker


def greet(name):
    return f"hello {name}"
"""


@contextmanager
def importable(folder: Path, *modules: str) -> Iterator[None]:
    """Put `folder` on sys.path for the block; forget the modules imported from it after."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] in modules]:
            del sys.modules[name]


@pytest.fixture
def myapp(tmp_path: Path) -> Iterator[Path]:
    """A package `myapp.tasks` importing os, subprocess and sitq.engine.worker, like real code."""
    folder = tmp_path / "src"
    (folder / "myapp").mkdir(parents=True)
    (folder / "myapp" / "__init__.py").write_text("")
    (folder / "myapp" / "tasks.py").write_text(MYAPP_TASKS)
    with importable(folder, "myapp"):
        yield folder


def planted_json(func: str, *args: object) -> bytes:
    return json.dumps({"func": func, "args": list(args), "kwargs": {}}).encode()


BYPASSES = ["myapp.tasks:os.system", "myapp.tasks:subprocess.getoutput"]
BYPASSES += ["myapp.tasks:sitq.engine.worker.os.system"]


@pytest.mark.parametrize("planted", BYPASSES)
async def test_json_allow_list_refuses_what_an_allowed_module_merely_imported(
    db_path: Path, tmp_path: Path, myapp: Path, planted: str
) -> None:
    """The qualname must not lead out of the module through its imports: os.system is not
    defined in myapp.tasks just because myapp.tasks did `import os`."""
    from myapp.tasks import greet  # type: ignore[import-not-found]

    marker = tmp_path / "pwned"
    allowed = JsonSerializer(modules=["myapp.tasks"])
    genuine_id = await enqueue(db_path, allowed, greet, "ada")
    planted_id = await enqueue(db_path, allowed, greet, "bob")
    write_payload(db_path, planted_id, planted_json(planted, f"mkdir {shlex.quote(str(marker))}"))

    await run_all(db_path, allowed)

    refused = await final(db_path, planted_id, allowed)
    assert not marker.exists()
    assert (refused.status, refused.error_type) == (TaskStatus.FAILED, "TaskNotAllowedError")  # type: ignore[attr-defined]
    assert "refused before running" in refused.error  # type: ignore[attr-defined]
    assert "defined" in refused.error  # type: ignore[attr-defined]
    assert (await final(db_path, genuine_id, allowed)).value == "hello ada"  # type: ignore[attr-defined]


def test_json_modules_must_be_a_list_of_names_not_one_string() -> None:
    """tuple("myapp.tasks") would allow modules "m", "y", "a"... character by character."""
    with pytest.raises(TypeError, match=r"modules=\['myapp.tasks'\]"):
        JsonSerializer(modules="myapp.tasks")


# -- through the real command line ------------------------------------------------------------


async def run_cli_worker(
    db_path: Path, task_ids: list[str], *options: str, pythonpath: Path | None = None
) -> dict[str, Any]:
    """Run `python -m sitq worker` until every task is final (or 60 s), then SIGTERM it.

    The worker has no burst mode, so the test waits through `get_result(timeout=...)`,
    which polls the database, and stops the process once all tasks are done."""
    this_sitq = Path(sitq.__file__).parent.parent  # the worker runs the sitq under test
    folders = [this_sitq] if pythonpath is None else [this_sitq, pythonpath]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, folders))}
    command = [sys.executable, "-m", "sitq", "worker", str(db_path), *options]
    process = subprocess.Popen(
        command, cwd=db_path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with TaskQueue(SQLiteBackend(db_path), JsonSerializer()) as queue:
            infos = {i: await queue.get_result(i, timeout=60) for i in task_ids}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert all(infos.values()), f"tasks not finished; worker stderr:\n{stderr.decode()}"
    return infos


async def test_cli_json_worker_refuses_a_function_the_imported_module_merely_imported(
    db_path: Path, tmp_path: Path, myapp: Path
) -> None:
    from myapp.tasks import greet

    marker = tmp_path / "pwned"
    allowed = JsonSerializer(modules=["myapp.tasks"])
    planted_id = await enqueue(db_path, allowed, greet, "bob")
    write_payload(
        db_path,
        planted_id,
        planted_json("myapp.tasks:os.system", f"mkdir {shlex.quote(str(marker))}"),
    )
    infos = await run_cli_worker(
        db_path, [planted_id], "--serializer", "json", "--import", "myapp.tasks", pythonpath=myapp
    )
    refused = infos[planted_id]
    assert not marker.exists()
    assert (refused.status, refused.error_type) == (TaskStatus.FAILED, "TaskNotAllowedError")
    assert "'os' is a module myapp.tasks imported" in refused.error


# -- a task whose module the worker cannot import --------------------------------------------


@pytest.fixture
def vanishing(tmp_path: Path) -> Path:
    """A module the enqueuing process can import, but which is gone for the worker."""
    folder = tmp_path / "client_only"
    folder.mkdir()
    (folder / "vanishing_tasks.py").write_text("def shout(text):\n    return text.upper()\n")
    return folder


@pytest.mark.parametrize("serializer", [CloudpickleSerializer(), JsonSerializer()], ids=repr)
async def test_a_task_whose_module_cannot_be_imported_fails_with_a_hint_naming_import(
    db_path: Path, vanishing: Path, serializer: object
) -> None:
    with importable(vanishing, "vanishing_tasks"):
        from vanishing_tasks import shout  # type: ignore[import-not-found]

        task_id = await enqueue(db_path, serializer, shout, "hi")
    await run_all(db_path, serializer)  # the module is no longer importable here
    result = await final(db_path, task_id, serializer)
    assert (result.status, result.error_type) == (TaskStatus.FAILED, "TaskImportError")  # type: ignore[attr-defined]
    assert "'vanishing_tasks'" in result.error  # type: ignore[attr-defined]
    assert "--import vanishing_tasks" in result.error  # type: ignore[attr-defined]
    assert "PYTHONPATH" in result.error  # type: ignore[attr-defined]


async def test_cli_worker_missing_the_task_module_fails_the_task_with_a_hint(
    db_path: Path, vanishing: Path
) -> None:
    """Celery/RQ users expect an unimportable task to fail and say how to fix the worker."""
    with importable(vanishing, "vanishing_tasks"):
        from vanishing_tasks import shout  # type: ignore[import-not-found]

        task_id = await enqueue(db_path, CloudpickleSerializer(), shout, "hi")
    infos = await run_cli_worker(db_path, [task_id])  # started without the module's folder
    failed = infos[task_id]
    assert (failed.status, failed.error_type) == (TaskStatus.FAILED, "TaskImportError")
    assert "python -m sitq worker DB --import vanishing_tasks" in failed.error
