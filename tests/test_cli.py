"""The command line: output for people and scripts, exit codes 0 / 1 (runtime) / 2 (usage).

Most commands are called in-process through `sitq.cli.main(argv)`, which returns the exit
code; a few run `python -m sitq` or the `sitq` console script for real, to check the entry
points, signals, logging and options that only a worker process exercises.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import reliability_tasks as rt
from backends import drop_schema, fresh_schema, postgres_url, skip_without_postgres
from worker_processes import WorkerProcess, wait_until, workers

import sitq
from sitq import (
    FakeClock,
    JsonSerializer,
    SignedSerializer,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.cli import main


async def add(a: int, b: int) -> int:
    return a + b


async def fail(n: int) -> None:
    raise ValueError(f"bad input {n}\nsecond line")


def prepare(db_path: Path) -> dict[str, str]:
    """A database with one success and one dead letter; returns their ids."""

    async def fill() -> dict[str, str]:
        clock = FakeClock()
        backend = SQLiteBackend(db_path)
        async with TaskQueue(backend, clock=clock) as queue:
            ids = {"ok": await queue.enqueue(add, 1, 2), "dead": await queue.enqueue(fail, 7)}
            worker = Worker(backend, clock=clock, worker_id="w1")
            await worker.run_until_idle()
            await worker.stop()
        return ids

    return asyncio.run(fill())


async def create_empty(db_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(db_path)):
        pass


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SITQ_SCRIPT = Path(sys.executable).with_name("sitq")  # the console script pip installs


def run_process(*argv: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `python -m sitq ...` (or the `sitq` script) for real; capture stdout and stderr."""
    command = [str(SITQ_SCRIPT)] if script else [sys.executable, "-m", "sitq"]
    return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=60)


TASKS = "sitq_cli_test_tasks"
TASKS_SOURCE = """
import os
import time
from pathlib import Path


def fail_loudly(n):
    raise ValueError(f"first line {n}\\nsecond line\\nthird line")


def block_until(path, started, seconds):
    # a plain function, so a worker runs it in a thread: waits for a file up to `seconds`
    Path(started).touch()
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


@pytest.fixture
def task_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A module of tasks written to a tmp folder, importable here and in worker processes
    (through PYTHONPATH), as a user's `myapp.tasks` would be."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / f"{TASKS}.py").write_text(TASKS_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    paths = [str(folder), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    yield importlib.import_module(TASKS)
    sys.modules.pop(TASKS, None)


def test_status_counts_every_state(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare(db_path)
    code, out, err = run(capsys, "status", str(db_path))
    rows = dict(line.split() for line in out.splitlines())
    assert code == 0 and err == ""
    assert list(rows) == [str(s) for s in TaskStatus] + ["total"]
    assert (rows["succeeded"], rows["failed"], rows["queued"], rows["total"]) == (
        "1",
        "1",
        "0",
        "2",
    )


def test_dead_lists_one_tab_separated_line_per_dead_letter(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(db_path)
    code, out, _ = run(capsys, "dead", str(db_path))
    assert code == 0
    # attempts out of the retry budget (stored as data: nothing is unpickled)
    assert out.splitlines() == [f"{ids['dead']}\tfail\t1 of 1\tValueError: bad input 7"]


def test_dead_with_no_dead_letters_prints_nothing_to_stdout(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(create_empty(db_path))
    assert run(capsys, "dead", str(db_path)) == (0, "", "no dead letters\n")


def test_requeue(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = prepare(db_path)
    assert run(capsys, "requeue", str(db_path), ids["dead"]) == (0, f"requeued {ids['dead']}\n", "")
    code, out, _ = run(capsys, "status", str(db_path))
    assert ("queued", "1") in [tuple(line.split()) for line in out.splitlines()]

    code, out, err = run(capsys, "requeue", str(db_path), "no-such-id")
    assert (code, out) == (1, "")
    assert err.startswith("sitq: TaskNotFoundError: no task with id 'no-such-id'")

    code, _, err = run(capsys, "requeue", str(db_path), ids["ok"])
    assert code == 1 and "only failed or cancelled tasks can be requeued" in err


def test_plot_saves_the_dashboard(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(db_path)
    out_file = tmp_path / "dashboard.png"
    code, out, _ = run(capsys, "plot", str(db_path), "--out", str(out_file))
    assert (code, out) == (0, f"wrote {out_file} (2 attempts)\n")
    assert out_file.read_bytes().startswith(b"\x89PNG")

    code, _, err = run(capsys, "plot", str(db_path), "--out", str(tmp_path / "no" / "d.png"))
    assert code == 1 and "cannot write" in err


def test_inspecting_a_missing_database_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    for command in (["status"], ["dead"], ["requeue"], ["plot"]):
        extra = {"requeue": ["some-id"], "plot": ["--out", str(tmp_path / "x.png")]}
        code, _, err = run(capsys, *command, str(missing), *extra.get(command[0], []))
        assert code == 2 and f"no database at '{missing}'" in err
    assert not missing.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mysql://db.example/jobs"], "unsupported database URL scheme 'mysql'"),
        (["{db}"], "no database at '{db}' (check the path, or add --create"),
        (["{db}", "--create", "--import", "no_such_module_xyz"], "no module named"),
        (["{db}", "--create", "--signing-key-env", "SITQ_UNSET_VAR_XYZ"], "is not set or empty"),
    ],
    ids=["unsupported url", "missing database", "missing module", "unset key variable"],
)
def test_worker_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    code, out, err = run(capsys, "worker", *(arg.format(db=db_path) for arg in argv))
    assert (code, out) == (2, "")
    assert message.format(db=db_path) in err
    assert not db_path.exists()


@pytest.mark.parametrize(
    "argv",
    [[], ["worker"], ["worker", "q.db", "--concurrency", "0"], ["worker", "q.db", "--lease", "0"]],
    ids=["no command", "no database", "zero concurrency", "zero lease"],
)
def test_bad_arguments_exit_2_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: sitq" in capsys.readouterr().err


def test_python_dash_m_sitq_is_the_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sitq", "status", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("sitq: no database at")


@pytest.mark.timeout(60)
def test_sigint_stops_an_idle_worker_cleanly(db_path: Path, tmp_path: Path) -> None:
    worker = WorkerProcess(db_path, tmp_path / "log", tmp_path, "--create")
    try:
        worker_id = worker.wait_ready()
        assert db_path.is_file()  # --create made the missing database
        worker.send(signal.SIGINT)
        assert worker.wait(20) == 0
        assert worker.read_line(5) == f"sitq worker {worker_id} stopped after 0 tasks"
        assert "Traceback" not in worker.stderr()
    finally:
        worker.kill()


@pytest.mark.timeout(60)
async def test_a_worker_with_json_and_a_signing_key_from_the_environment(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key travels in an environment variable (never argv, which `ps` shows); the
    worker runs only functions from the modules it was told to import."""
    key = "cli-test-signing-key-0123456789abcdef"
    monkeypatch.setenv("SITQ_TEST_KEY", key)  # inherited by the worker process
    log = tmp_path / "log"
    options = ["--create", "--serializer", "json", "--signing-key-env", "SITQ_TEST_KEY"]
    serializer = SignedSerializer(key, JsonSerializer())
    with workers(db_path, log, tmp_path, 1, *options) as [proc]:
        assert key not in " ".join(map(str, proc.process.args))  # type: ignore[arg-type]
        async with TaskQueue(SQLiteBackend(db_path), serializer) as queue:
            ok = await queue.enqueue(rt.count, "json")
            outside = await queue.enqueue(add, 1, 2)  # test_cli is not an imported module
            ok_result, outside_result = await queue.gather([ok, outside], timeout=30)
    assert ok_result is not None and ok_result.value == "json"
    assert outside_result is not None and outside_result.error_type == "TaskNotAllowedError"
    assert "outside the modules this JsonSerializer may run" in (outside_result.error or "")
    assert rt.tally(log, "end") == {"json": 1}


# -- what Celery and RQ users expect (issue 9, item 8) ------------------------------------


def test_version_from_the_console_script() -> None:
    done = run_process("--version", script=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"sitq {sitq.__version__}\n", "")


def test_help_names_the_program_sitq_and_shows_defaults() -> None:
    done = run_process("worker", "--help")  # through `python -m sitq`: still called sitq
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: sitq worker ")
    help_text = " ".join(done.stdout.split())  # argparse wraps lines at the terminal width
    for option, default in [("--concurrency N", "10"), ("--lease", "30"), ("--grace", "30")]:
        assert re.search(rf"{option} .*?\(default: {default}\)", help_text), option
    assert "(default: refuse" in help_text  # --create


def test_a_missing_database_is_a_usage_error_on_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for command in (["worker"], ["status", "--json"], ["purge"]):
        done = run_process(command[0], str(missing), *command[1:], script=True)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.startswith(f"sitq: no database at '{missing}'")
        assert "--create" in done.stderr
    assert not missing.exists()


def test_no_command_prints_usage_on_stderr_and_exits_2() -> None:
    done = run_process(script=True)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: sitq ")


def test_status_json_prints_the_counts_on_stdout(db_path: Path) -> None:
    prepare(db_path)
    done = run_process("status", str(db_path), "--json")
    assert (done.returncode, done.stderr) == (0, "")
    expected = {str(status): 0 for status in TaskStatus} | {"succeeded": 1, "failed": 1}
    assert json.loads(done.stdout) == expected


def test_requeue_all_requeues_every_dead_letter(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(db_path)
    asyncio.run(add_dead_letter(db_path))  # two dead letters now
    assert run(capsys, "requeue", str(db_path), "--all") == (0, "requeued 2 dead letters\n", "")
    _, out, _ = run(capsys, "status", str(db_path), "--json")
    counts = json.loads(out)
    assert (counts["queued"], counts["failed"], counts["succeeded"]) == (2, 0, 1)
    assert run(capsys, "requeue", str(db_path), "--all") == (0, "requeued 0 dead letters\n", "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "one of the arguments ID --all is required"), (["x", "--all"], "not allowed with")],
    ids=["neither", "both"],
)
def test_requeue_wants_an_id_or_all(
    argv: list[str], message: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["requeue", str(db_path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_purge_deletes_the_dead_letters_only(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(db_path)
    assert run(capsys, "purge", str(db_path)) == (0, "purged 1 dead letter\n", "")
    assert run(capsys, "dead", str(db_path)) == (0, "", "no dead letters\n")
    _, out, _ = run(capsys, "status", str(db_path), "--json")
    assert json.loads(out)["succeeded"] == 1 and sum(json.loads(out).values()) == 1
    code, _, err = run(capsys, "requeue", str(db_path), ids["dead"])
    assert code == 1 and "TaskNotFoundError" in err


def test_prune_deletes_finished_tasks_older_than_the_age_given(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """prepare() ran on a FakeClock at 2026-01-01: those tasks finished long before now."""
    prepare(db_path)
    assert run(capsys, "prune", str(db_path), "--older-than", "3650d") == (
        0, "pruned 0 finished tasks\n", "",
    )  # fmt: skip
    assert run(capsys, "prune", str(db_path), "--older-than", "1h") == (
        0, "pruned 1 finished task\n", "",
    )  # fmt: skip
    _, out, _ = run(capsys, "status", str(db_path), "--json")
    assert json.loads(out)["succeeded"] == 0 and json.loads(out)["failed"] == 1  # dead stays
    with pytest.raises(SystemExit) as exit_:
        main(["prune", str(db_path), "--older-than", "soon"])
    assert exit_.value.code == 2 and "not a duration" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sqlite-url", "postgres"])
def test_commands_take_a_database_url(
    kind: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sqlite:///path` and `postgresql://...` name a database anywhere a path does."""
    if kind == "postgres":
        skip_without_postgres()
        schema = fresh_schema()
        url = postgres_url(schema)
    else:
        prepare(db_path)
        url = f"sqlite:///{db_path}"
    try:
        code, out, err = run(capsys, "status", url, "--json")
        assert (code, err) == (0, "")
        expected = 2 if kind == "sqlite-url" else 0  # a new PostgreSQL schema starts empty
        assert sum(json.loads(out).values()) == expected
    finally:
        if kind == "postgres":
            asyncio.run(drop_schema(schema))


async def add_dead_letter(db_path: Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend, clock=clock) as queue:
        await queue.enqueue(fail, 8)
        worker = Worker(backend, clock=clock, worker_id="w2")
        await worker.run_until_idle()
        await worker.stop()


def stderr_has(worker: WorkerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return text in worker.stderr()

    return condition


@pytest.mark.timeout(60)
async def test_a_second_sigint_exits_at_once_with_130(
    db_path: Path, tmp_path: Path, task_module: ModuleType
) -> None:
    """The first Ctrl-C waits (up to --grace) for a task blocked in its thread; the second
    one ends the process at once, leaving the task to be reclaimed when its lease expires."""
    started, never = tmp_path / "started", tmp_path / "never-created"
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.enqueue(task_module.block_until, str(never), str(started), 30)
        worker = WorkerProcess(db_path, tmp_path / "log", tmp_path, "--import", TASKS)
        try:
            worker.wait_ready()

            async def task_started() -> bool:
                return started.exists()

            await wait_until(task_started, 20, "the blocking task to start")
            worker.send(signal.SIGINT)
            await wait_until(stderr_has(worker, "stopping: grace"), 20, "the graceful stop")
            worker.send(signal.SIGINT)
            assert worker.wait(5) == 130  # not the 30 s the thread still has to run
        finally:
            worker.kill()
        assert "SIGINT again: exiting now" in worker.stderr()
        assert (await queue.get_task(task_id)).status is TaskStatus.RUNNING  # lease-bound


RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


@pytest.mark.timeout(60)
async def test_a_multi_line_error_stays_inside_one_log_record(
    db_path: Path, tmp_path: Path, task_module: ModuleType
) -> None:
    """Every line of a worker's stderr starts a record or is indented under one."""
    worker = WorkerProcess(db_path, tmp_path / "log", tmp_path, "--create", "--import", TASKS)
    try:
        worker.wait_ready()
        async with TaskQueue(SQLiteBackend(db_path)) as queue:
            [result] = await queue.gather([await queue.enqueue(task_module.fail_loudly, 7)], 30)
        assert result is not None and result.error_type == "ValueError"
        await wait_until(stderr_has(worker, "third line"), 20, "the failure's log record")
        worker.send(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        worker.kill()
    lines = worker.stderr().splitlines()
    assert all(RECORD_START.match(line) or line.startswith("    ") for line in lines), lines
    [first] = [i for i, line in enumerate(lines) if "first line 7" in line]
    assert RECORD_START.match(lines[first])
    assert lines[first + 1 : first + 3] == ["    second line", "    third line"]
    assert RECORD_START.match(lines[first + 3])  # the next record: "stopping: ..."
