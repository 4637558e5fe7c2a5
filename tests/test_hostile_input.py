"""Secrets and hostile rows (issue 21, point 8).

(a) A database URL's password never reaches a repr, a log line, the CLI's output or an
error message: in the userinfo (holding "/", "@" and "%2F") or as `?password=`.
(b) A JSON allow-list imports nothing it does not list (a planted row naming a submodule
of an allowed package must not run that submodule's import-time code) and calls only
functions defined in a listed module (not classes).
(c) The CLI shows stored text (task names, errors) with control characters escaped: a
newline cannot forge a line, an ANSI escape cannot reach the terminal.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from backends import POSTGRES_URL, drop_schema, fresh_schema, skip_without_postgres
from test_security import enqueue, final, importable, planted_json, run_all, write_payload

from sitq import FakeClock, JsonSerializer, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends import open_backend
from sitq.errors import BackendError, InvalidOptionError

ROOT = Path(__file__).resolve().parent.parent

# -- (a) passwords ----------------------------------------------------------------------------

PASSWORD = "se/cr@t%2Fpw"  # a "/", an "@" and a literal "%2F"
ENCODED = quote(PASSWORD, safe="")  # se%2Fcr%40t%252Fpw
#: Pieces of the password, as written or encoded, that must appear nowhere.
PIECES = ["se/cr", "cr@t", "t%2Fpw", "se%2Fcr", "cr%40t", "252Fpw"]


def url_forms(host: str = "127.0.0.1", port: int = 1, schema: str = "sitq") -> list[str]:
    """One URL per place a password can be: userinfo (encoded or raw), query (either)."""
    base = f"{host}:{port}/test"
    return [
        f"postgresql://postgres:{ENCODED}@{base}?schema={schema}",
        f"postgresql://postgres@{base}?password={ENCODED}&schema={schema}",
        f"postgresql://postgres@{base}?schema={schema}&password={PASSWORD}",
        f"postgres://postgres@{base}?schema={schema}&PASS%57ORD={ENCODED}",
        f"postgresql://postgres:{PASSWORD}@{base}?schema={schema}",
    ]


def assert_hidden(text: str) -> None:
    leaked = [piece for piece in PIECES if piece in text]
    assert not leaked, f"password pieces {leaked} in: {text!r}"


def shown_error(exc: BaseException) -> str:
    """Everything a user could see of an error: its message and its printed traceback."""
    return "".join(traceback.format_exception(exc))


def test_reprs_and_errors_of_a_url_hide_its_password() -> None:
    """Given URLs whose password holds "/", "@" and "%2F", in the userinfo or as a query
    parameter, then the reprs of backend, queue and worker never show it, and a URL that
    cannot be read as written (a raw "/" in the password) is refused without showing it."""
    pytest.importorskip("asyncpg")
    for url in url_forms():
        try:
            backend = open_backend(url)
        except InvalidOptionError as exc:  # the raw userinfo form: ambiguous as written
            assert "percent-encode" in str(exc)
            assert_hidden(shown_error(exc))
            continue
        assert "***" in repr(backend)
        assert "127.0.0.1:1/test" in repr(backend)
        for shown in (repr(backend), repr(TaskQueue(backend)), repr(Worker(backend))):
            assert_hidden(shown)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app@db:5432/jobs", "postgresql://app@db:5432/jobs"),
        ("postgresql://db:5432/jobs?schema=a", "postgresql://db:5432/jobs?schema=a"),
        ("postgresql://[::1]:5432/jobs", "postgresql://[::1]:5432/jobs"),
        ("postgresql://app@[::1]:5432/jobs", "postgresql://app@[::1]:5432/jobs"),
        ("postgresql://app:pw@[::1]:5432/jobs", "postgresql://app:***@[::1]:5432/jobs"),
        ("postgresql://app:p@ss@db/jobs?sslpassword=k&x=1",
         "postgresql://app:***@db/jobs?sslpassword=***&x=1"),
        ("tasks.db", "tasks.db"),
        ("sqlite:////var/sitq/tasks.db", "sqlite:////var/sitq/tasks.db"),
    ],
)  # fmt: skip
def test_redacted_hides_passwords_and_keeps_the_rest(url: str, shown: str) -> None:
    """Hosts (an IPv6 one too), ports, users and other parameters stay readable."""
    from sitq.backends.urls import redacted

    assert redacted(url) == shown


def test_a_raw_question_mark_in_the_password_is_refused_not_read_as_a_query() -> None:
    """Given a password with a raw "?" (before which sitq's own `schema=` handling cut the
    URL, so the repr showed its first part), then open_backend refuses it, hidden."""
    pytest.importorskip("asyncpg")
    with pytest.raises(InvalidOptionError, match="percent-encode") as caught:
        open_backend("postgresql://app:hid?den@db/jobs?schema=a")
    assert "hid" not in str(caught.value) and "den" not in str(caught.value)


async def test_a_failed_connection_names_the_server_but_not_the_password() -> None:
    """Given a URL with a password and a port where no server listens, when the backend
    connects, then the BackendError (message and traceback) hides the password."""
    pytest.importorskip("asyncpg")
    for url in url_forms()[:4]:
        backend = open_backend(url)
        with pytest.raises(BackendError) as caught:
            await backend.connect()
        assert "127.0.0.1:1/test" in str(caught.value)
        assert_hidden(shown_error(caught.value))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sitq", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_cli_errors_hide_the_password() -> None:
    """Given `sitq status` on each URL form with no server there, then stdout and stderr
    name the problem and never the password."""
    pytest.importorskip("asyncpg")
    for url in url_forms():
        done = cli("status", url)
        assert done.returncode in (1, 2), done
        assert done.stderr.startswith("sitq: ")
        assert_hidden(done.stdout + done.stderr)


@pytest.fixture
def schema() -> Iterator[str]:
    skip_without_postgres()
    name = fresh_schema()
    yield name
    import asyncio

    asyncio.run(drop_schema(name))


def test_cli_worker_ready_line_hides_the_password(schema: str) -> None:
    """Given `sitq worker` on the real server with a password in its URL (the server trusts
    local connections, so any password gets in), then its "ready on" line and its log
    hide the password, in the userinfo and in the query alike."""
    host = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    hostname, _, port = host.partition(":")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for url in url_forms(hostname, int(port or 5432), schema)[:2]:
        process = subprocess.Popen(
            [sys.executable, "-m", "sitq", "worker", url, "--create"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert process.stdout is not None
        ready = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert "ready on postgres" in ready, err
        assert "***" in ready
        assert_hidden(ready + out + err)


# -- (b) the JSON allow-list imports and calls only what it lists ----------------------------

PROBE_FILES = {
    "__init__.py": "",
    "__main__.py": "open({marker!r} + '.main', 'w').close()\ndef main(*a):\n    pass\n",
    "admin_script.py": "open({marker!r} + '.admin', 'w').close()\ndef run(*a):\n    pass\n",
    "tasks.py": (
        "class Thing:\n"
        "    def __init__(self, path):\n"
        "        open(path, 'w').close()\n\n"
        "def greet(name):\n"
        "    return 'hello ' + name\n"
    ),
}


@pytest.fixture
def probeapp(tmp_path: Path) -> Iterator[Path]:
    """A real package on sys.path whose submodules write a marker file when imported."""
    folder = tmp_path / "src"
    (folder / "probeapp").mkdir(parents=True)
    marker = str(tmp_path / "marker")
    for name, text in PROBE_FILES.items():
        (folder / "probeapp" / name).write_text(text.format(marker=marker))
    with importable(folder, "probeapp"):
        yield tmp_path


@pytest.mark.parametrize("planted", ["probeapp.__main__:main", "probeapp.admin_script:run"])
async def test_json_allow_list_imports_no_submodule_it_does_not_list(
    db_path: Path, probeapp: Path, planted: str
) -> None:
    """Given modules=["probeapp"] and a planted row naming a submodule's function, then the
    row is refused and the submodule is never imported (its marker file never appears)."""
    allowed = JsonSerializer(modules=["probeapp"])
    task_id = await enqueue(db_path, JsonSerializer(), pow, 2, 3)
    write_payload(db_path, task_id, planted_json(planted))
    await run_all(db_path, allowed)
    refused = await final(db_path, task_id, allowed)
    assert sorted(p.name for p in probeapp.glob("marker*")) == []
    assert (refused.status, refused.error_type) == (TaskStatus.FAILED, "TaskNotAllowedError")  # type: ignore[attr-defined]
    assert "not imported" in refused.error  # type: ignore[attr-defined]


async def test_json_allow_list_calls_no_class_of_an_allowed_module(
    db_path: Path, probeapp: Path
) -> None:
    """Given modules=["probeapp.tasks"] and a planted row naming its class Thing with a
    path as argument, then Thing is never built (no file), while its function runs."""
    from probeapp.tasks import Thing, greet  # type: ignore[import-not-found]

    allowed = JsonSerializer(modules=["probeapp.tasks"])
    built = probeapp / "built-by-a-row"
    genuine_id = await enqueue(db_path, allowed, greet, "ada")
    planted_id = await enqueue(db_path, allowed, greet, "bob")
    write_payload(db_path, planted_id, planted_json("probeapp.tasks:Thing", str(built)))
    await run_all(db_path, allowed)
    refused = await final(db_path, planted_id, allowed)
    assert not built.exists()
    assert refused.error_type == "TaskNotAllowedError"  # type: ignore[attr-defined]
    assert "not a function" in refused.error  # type: ignore[attr-defined]
    assert (await final(db_path, genuine_id, allowed)).value == "hello ada"  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="not a function"):  # refused at enqueue already
        await enqueue(db_path, allowed, Thing, str(built))


# -- (c) stored text on the terminal ----------------------------------------------------------

HOSTILE_NAME = "report\nforged-id\tforged-name\t1\tOK\x1b[31m"
HOSTILE_ERROR = "bad input\x1b[2J\x1b[31m red\rover"


def boom() -> None:
    raise ValueError(HOSTILE_ERROR)


async def test_cli_dead_escapes_control_characters_in_stored_text(db_path: Path) -> None:
    """Given a dead letter whose stored name holds a newline and an ANSI escape and whose
    error holds escapes and a carriage return, when `sitq dead` lists it, then it is one
    line of four columns with every control character escaped (of the error, its first
    line, as always)."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.with_options(name="report").enqueue(boom)
        await Worker(queue.backend, clock=FakeClock()).run_until_idle()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_tasks SET name = ? WHERE id = ?", (HOSTILE_NAME, task_id))
    done = cli("dead", str(db_path))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    [line] = done.stdout.splitlines()
    columns = line.split("\t")
    assert columns[0] == task_id and len(columns) == 4
    assert columns[1] == "report\\nforged-id\\tforged-name\\t1\\tOK\\x1b[31m"
    assert columns[3] == "ValueError: bad input\\x1b[2J\\x1b[31m red"  # its first line


async def test_cli_worker_log_escapes_control_characters_of_a_task(db_path: Path) -> None:
    """Given a task whose error holds ANSI escapes and a newline followed by a fake log
    record, when a CLI worker logs its failure, then stderr holds no escape character and
    the fake record is an indented continuation, not a line of its own."""
    fake = "\n2026-01-01 00:00:00,000 INFO sitq.cli: forged\x1b[31m"
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.enqueue(fail_with, "bad\x1b[2J" + fake)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", str(db_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        async with TaskQueue(SQLiteBackend(db_path)) as queue:
            result = await queue.get_result(task_id, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert result is not None and result.status is TaskStatus.FAILED, err
    assert "bad\\x1b[2J" in err
    assert "\x1b" not in err
    assert not [line for line in err.splitlines() if line.startswith("2026-01-01")]


def fail_with(message: str) -> None:
    raise ValueError(message)


async def test_cli_show_escapes_control_characters_and_indents_stored_lines(
    db_path: Path,
) -> None:
    """Given a task whose stored name and error hold newlines, escapes and a carriage
    return, when `sitq show` prints it, then no control character reaches the terminal
    and no stored line can pass for a field: every line of the error is indented."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        forged = HOSTILE_ERROR + "\nstatus    succeeded"
        task_id = await queue.with_options(name="report").enqueue(fail_with, forged)
        await Worker(queue.backend, clock=FakeClock()).run_until_idle()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE sitq_tasks SET name = ? WHERE id = ?", (HOSTILE_NAME, task_id))
    done = cli("show", str(db_path), task_id)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[1] == "task      report\\nforged-id\\tforged-name\\t1\\tOK\\x1b[31m"
    assert [line for line in lines if line.startswith("status")] == ["status    failed"]
    assert "          status    succeeded" in lines  # the stored line, indented under error
