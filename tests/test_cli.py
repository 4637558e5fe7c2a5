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
from backends import (
    POSTGRES_URL,
    Database,
    drop_schema,
    fresh_schema,
    postgres_url,
    skip_without_postgres,
)
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
from sitq.backends import open_backend
from sitq.cli import main


async def add(a: int, b: int) -> int:
    return a + b


async def fail(n: int) -> None:
    raise ValueError(f"bad input {n}\nsecond line")


def prepare(db: Path | str) -> dict[str, str]:
    """A database (a SQLite path or any URL) with one success and one dead letter; returns
    their ids."""

    async def fill() -> dict[str, str]:
        clock = FakeClock()
        backend = open_backend(str(db))
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


async def add_up(a, b, c=0):
    return a + b + c


def touch(path):
    # proof that a function ran: enqueueing it must not call it
    Path(path).touch()


def block_until(path, started, seconds):
    # a plain function, so a worker runs it in a thread: waits for a file up to `seconds`
    Path(started).touch()
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def no_database_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where its database is: a SITQ_DATABASE_URL around the run (CI sets
    one, for lesson 15) would fill in a DB these tests leave out on purpose. The tests of
    the variable set it themselves."""
    monkeypatch.delenv("SITQ_DATABASE_URL", raising=False)


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
    commands = (["status"], ["dead"], ["requeue"], ["plot"], ["show"], ["cancel"], ["enqueue"])
    for command in commands:
        extra = {
            "requeue": ["some-id"], "show": ["some-id"], "cancel": ["some-id"],
            "plot": ["--out", str(tmp_path / "x.png")], "enqueue": [f"{__name__}:add", "1", "2"],
        }  # fmt: skip
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
        url = f"sqlite:///{db_path}"
    try:
        prepare(url)
        code, out, err = run(capsys, "status", url, "--json")
        assert (code, err) == (0, "")
        assert sum(json.loads(out).values()) == 2
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


# -- enqueue, show, cancel, dead --json, status --watch, SITQ_DATABASE_URL (issue 24) ----------


async def run_worker_until_idle(url: str, clock: FakeClock | None = None) -> None:
    """Run every due task of the queue at `url` in this process, then stop."""
    worker = Worker(open_backend(url), clock=clock, worker_id="w1")
    await worker.run_until_idle()
    await worker.stop()


async def result_of(url: str, task_id: str) -> object:
    async with TaskQueue(url) as queue:
        result = await queue.get_result(task_id, timeout=0)
    assert result is not None, task_id
    return result.value


async def count_all(db_path: Path) -> int:
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        return sum((await queue.counts()).values())


async def one_waiting_one_running(url: str) -> tuple[str, str]:
    """Two tasks: one waiting, one claimed by a worker "w9" (running, not yet run)."""
    clock = FakeClock()
    async with TaskQueue(url, clock=clock) as queue:
        running = await queue.enqueue(add, 3, 4)
        [claimed] = await queue.backend.claim("w9", 1, clock.now(), 30.0)
        waiting = await queue.enqueue(add, 1, 2)
    assert claimed.task_id == running
    return waiting, running


async def task_row(url: str, task_id: str) -> sitq.TaskInfo:
    async with TaskQueue(url) as queue:
        return await queue.get_task(task_id)


def test_enqueue_runs_the_function_named_with_json_arguments(
    database: Database, task_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given `sitq enqueue DB --create module:function ARGS --kwargs`, then a worker runs
    that function with those JSON values, and `show --json` reports it succeeded."""
    code, out, err = run(
        capsys, "enqueue", database.url, "--create", f"{TASKS}:add_up", "1", "2.5",
        "--kwargs", '{"c": 10}',
    )  # fmt: skip
    assert (code, err) == (0, "")
    task_id = out.strip()
    asyncio.run(run_worker_until_idle(database.url))
    assert asyncio.run(result_of(database.url, task_id)) == 13.5
    code, out, _ = run(capsys, "show", database.url, task_id, "--json")
    shown = json.loads(out)
    assert (code, shown["id"], shown["name"], shown["status"]) == (0, task_id, "add_up",
                                                                   "succeeded")  # fmt: skip
    assert [a["outcome"] for a in shown["history"]] == ["succeeded"]


def test_enqueue_options_and_json_output(
    database: Database, task_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "enqueue", database.url, "--create", f"{TASKS}:add_up", "1", "2",
        "--delay", "90", "--priority", "7", "--json",
    )  # fmt: skip
    printed = json.loads(out)
    assert (code, printed["task"]) == (0, f"{TASKS}:add_up")
    row = asyncio.run(task_row(database.url, printed["id"]))
    assert (row.status, row.priority) == (TaskStatus.SCHEDULED, 7)
    assert row.due_at - row.enqueued_at == pytest.approx(90)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tasks}.add_up", "1", "2"], "is not an import path: write the module, a colon"),
        (["no_such_module_xyz:f"], "no_such_module_xyz:f: no module named 'no_such_module_xyz'"),
        (["{tasks}:nope"], "cannot import task '{tasks}:nope': no 'nope' there"),
        (["{tasks}:os.system", '"true"'], "'os' is a module {tasks} imported"),
        (["{tasks}:Path", '"x"'], "not a function"),
        (["{tasks}:add_up", "1", "hello"], "argument 2 'hello' is not JSON"),
        (["{tasks}:add_up", "1"], "missing a required argument: 'b'"),
        (["{tasks}:add_up", "1", "2", "--kwargs", "[3]"], "--kwargs must be a JSON object"),
        (["{tasks}:add_up", "1", "2", "--kwargs", '{{"d": 1}}'], "unexpected keyword argument"),
        (["{tasks}:add_up", "1", "2", "--delay", "-1"], "delay must be a finite number"),
    ],
    ids=[
        "dotted path",
        "no module",
        "no such name",
        "imported module's function",
        "a class",
        "bare word",
        "too few arguments",
        "kwargs not an object",
        "unknown keyword",
        "negative delay",
    ],
)
def test_enqueue_refuses_what_it_cannot_queue_and_stores_nothing(
    argv: list[str],
    message: str,
    db_path: Path,
    task_module: ModuleType,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad function path or argument is a usage error (exit 2) naming the fix, found
    before anything is stored: only the module named is imported, its function never run."""
    asyncio.run(create_empty(db_path))
    code, out, err = run(capsys, "enqueue", str(db_path), *(a.format(tasks=TASKS) for a in argv))
    assert (code, out) == (2, "")
    assert err.startswith("sitq: ") and message.format(tasks=TASKS) in err
    assert asyncio.run(count_all(db_path)) == 0


def test_enqueue_never_calls_the_function(
    db_path: Path, tmp_path: Path, task_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "called"
    code, _, _ = run(capsys, "enqueue", str(db_path), "--create", f"{TASKS}:touch",
                     json.dumps(str(marker)))  # fmt: skip
    assert code == 0 and not marker.exists()


def test_every_command_takes_the_database_from_the_environment(
    database: Database,
    task_module: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With SITQ_DATABASE_URL set, DB may be left out: `enqueue module:function ARGS`,
    `show ID`, `requeue ID`, `cancel ID` find their other arguments where they belong."""
    prepare(database.url)
    monkeypatch.setenv("SITQ_DATABASE_URL", database.url)
    code, out, _ = run(capsys, "enqueue", f"{TASKS}:add_up", "1", "2", "--delay", "60")
    assert code == 0
    task_id = out.strip()
    assert asyncio.run(task_row(database.url, task_id)).status is TaskStatus.SCHEDULED
    _, out, _ = run(capsys, "status", "--json")
    assert (json.loads(out)["scheduled"], sum(json.loads(out).values())) == (1, 3)
    assert run(capsys, "show", task_id)[1].splitlines()[:3] == [
        f"id        {task_id}", "task      add_up", "status    scheduled",
    ]  # fmt: skip
    assert run(capsys, "cancel", task_id) == (0, f"cancelled {task_id}\n", "")
    assert run(capsys, "requeue", task_id) == (0, f"requeued {task_id}\n", "")
    [dead] = json.loads(run(capsys, "dead", "--json")[1])
    assert dead["name"] == "fail"
    assert run(capsys, "enqueue", database.url, f"{TASKS}:add_up", "3", "4")[0] == 0  # DB given


def test_no_database_and_no_environment_variable_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SITQ_DATABASE_URL", raising=False)
    for argv in (["status"], ["show", "some-id"], ["enqueue", "m:f", "1"], ["dead", "--json"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "no database: give DB (a SQLite file or a URL) or set SITQ_DATABASE_URL" in (
            capsys.readouterr().err
        )


def test_cancel_a_waiting_task_a_running_one_and_a_finished_one(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(database.url)
    waiting, running = asyncio.run(one_waiting_one_running(database.url))
    assert run(capsys, "cancel", database.url, waiting) == (0, f"cancelled {waiting}\n", "")
    code, out, _ = run(capsys, "cancel", database.url, running)
    assert (code, out) == (0, f"asked {running} to stop: it is running, and its worker "
                              "cancels it soon\n")  # fmt: skip
    code, out, err = run(capsys, "cancel", database.url, ids["ok"])
    assert (code, out) == (1, "")
    assert "TaskStateError: task " in err and "already finished (succeeded)" in err
    code, _, err = run(capsys, "cancel", database.url, "no-such-id")
    assert code == 1 and "TaskNotFoundError: no task with id 'no-such-id'" in err
    assert asyncio.run(task_row(database.url, waiting)).status is TaskStatus.CANCELLED


def test_show_prints_every_field_the_error_and_its_traceback(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(db_path)
    code, out, err = run(capsys, "show", str(db_path), ids["dead"])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:5] == [
        f"id        {ids['dead']}", "task      fail", "status    failed",
        "attempts  1 of 1", "retry     no retry",
    ]  # fmt: skip
    assert "enqueued  2026-01-01 00:00:00.000 UTC" in lines
    assert "worker    w1" in lines
    error = lines.index("error     ValueError: bad input 7")
    assert lines[error + 1] == "          second line"  # a further line, indented
    assert lines[error + 2] == "traceback Traceback (most recent call last):"
    assert all(line.startswith(" " * 10) for line in lines[error + 3 : lines.index("history")])
    assert re.fullmatch(r"  #1 failed on w1 at 2026-01-01 .* UTC \(\d\.\d{3}s\)  "
                        r"ValueError: bad input 7\\nsecond line", lines[-1])  # fmt: skip
    code, _, err = run(capsys, "show", str(db_path), "no-such-id")
    assert code == 1 and "TaskNotFoundError" in err


def test_show_json_has_the_traceback_and_the_history(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(database.url)
    code, out, _ = run(capsys, "show", database.url, ids["dead"], "--json")
    shown = json.loads(out)
    assert code == 0
    assert (shown["status"], shown["error_type"], shown["error"]) == (
        "failed", "ValueError", "bad input 7\nsecond line",
    )  # fmt: skip
    assert shown["traceback"].startswith("Traceback (most recent call last):")
    assert (shown["attempts"], shown["tries"], shown["max_attempts"]) == (1, 1, 1)
    assert shown["enqueued_at"] == "2026-01-01T00:00:00Z"
    assert [(a["attempt"], a["outcome"]) for a in shown["history"]] == [(1, "failed")]


async def fail_three_times(url: str, clock: FakeClock) -> str:
    """A task with a budget of 3 attempts that fails every one: a dead letter."""
    async with TaskQueue(url, clock=clock) as queue:
        policy = sitq.RetryPolicy.fixed(1.0, max_attempts=3)
        task_id = await queue.with_options(retry=policy).enqueue(fail, 3)
    for _ in range(3):
        await run_worker_until_idle(url, clock)
        clock.advance(1.0)
    return task_id


def test_dead_after_a_requeue_counts_the_budget_honestly(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead letter requeued and failed again has used 3 of its fresh 3 attempts, 6 in
    all: `sitq dead` says "3 of 3 (6 in all)", never "6 of 3"."""
    clock = FakeClock()
    task_id = asyncio.run(fail_three_times(database.url, clock))
    assert run(capsys, "dead", database.url)[1].split("\t")[2] == "3 of 3"
    assert run(capsys, "requeue", database.url, task_id)[0] == 0
    for _ in range(3):
        asyncio.run(run_worker_until_idle(database.url, clock))
        clock.advance(1.0)
    code, out, _ = run(capsys, "dead", database.url)
    assert (code, out) == (0, f"{task_id}\tfail\t3 of 3 (6 in all)\tValueError: bad input 3\n")
    [dead] = json.loads(run(capsys, "dead", database.url, "--json")[1])
    assert (dead["attempts"], dead["tries"], dead["max_attempts"]) == (6, 3, 3)
    assert "attempts  3 of 3 (6 in all)" in run(capsys, "show", database.url, task_id)[1]


def test_dead_json_lists_every_dead_letter_in_full(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = prepare(db_path)
    code, out, err = run(capsys, "dead", str(db_path), "--json")
    [dead] = json.loads(out)
    assert (code, err, dead["id"], dead["status"]) == (0, "", ids["dead"], "failed")
    assert dead["traceback"].startswith("Traceback") and "history" not in dead
    asyncio.run(create_empty(db_path.with_name("empty.db")))
    assert run(capsys, "dead", str(db_path.with_name("empty.db")), "--json") == (0, "[]\n", "")


def test_status_watch_draws_a_frame_every_interval_until_count(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal (here: captured), frames follow each other, blank-line separated,
    each headed by the database and the time on the clock it waits on; --json gives one
    JSON line a frame."""
    prepare(db_path)
    argv = ["status", str(db_path), "--watch", "2.5", "--count", "3"]
    code = main(argv, clock=FakeClock())
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    frames = out.split("\n\n")
    assert [frame.splitlines()[0] for frame in frames] == [
        f"{db_path} at 2026-01-01 00:00:{seconds} UTC (every 2.5s; Ctrl-C to stop)"
        for seconds in ("00", "02", "05")
    ]
    assert [frame.splitlines()[-1].split() for frame in frames] == [["total", "2"]] * 3
    code, out, _ = run(capsys, "status", str(db_path), "--json", "--watch", "0.01", "--count", "2")
    assert [json.loads(line)["failed"] for line in out.splitlines()] == [1, 1]
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(db_path), "--count", "2"])
    assert exit_.value.code == 2 and "--count needs --watch" in capsys.readouterr().err


class EnqueueWhileWaiting(FakeClock):
    """A clock on which every wait is spent enqueueing one task into `db_path`."""

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = db_path

    async def sleep_until(self, deadline: float) -> None:
        async with TaskQueue(SQLiteBackend(self.db_path)) as queue:
            await queue.enqueue(add, 1, 2)
        await super().sleep_until(deadline)


def test_status_watch_reads_the_database_again_for_every_frame(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(create_empty(db_path))
    argv = ["status", str(db_path), "--json", "--watch", "5", "--count", "3"]
    assert main(argv, clock=EnqueueWhileWaiting(db_path)) == 0
    out = capsys.readouterr().out
    assert [json.loads(line)["queued"] for line in out.splitlines()] == [0, 1, 2]


# -- PostgreSQL: a missing schema is not an empty queue ---------------------------------------


@pytest.fixture
def schema_name() -> Iterator[str]:
    skip_without_postgres()
    name = fresh_schema()
    yield name
    asyncio.run(drop_schema(name))


async def schema_exists(name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name)
    finally:
        await conn.close()
    return found is not None


def with_password(url: str, password: str) -> str:
    """The test server trusts local connections, so any password gets in."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{password}@{host}"


def test_a_missing_postgres_schema_is_an_error_unless_create(
    schema_name: str, task_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd ?schema= used to create an empty queue that reported zeros. Now every
    command refuses it (exit 2) naming the fix, creates nothing, and never shows the
    password; `--create` makes it."""
    url = with_password(postgres_url(schema_name), "s3cret-pw")
    for argv in (["status", url], ["dead", url, "--json"], ["show", url, "some-id"],
                 ["cancel", url, "some-id"], ["purge", url],
                 ["enqueue", url, f"{TASKS}:add_up", "1", "2"]):  # fmt: skip
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert f"sitq: no sitq queue in schema '{schema_name}' of " in err
        assert "check the URL's ?schema= ('sitq' if none)" in err
        hint = "or add --create" if argv[0] == "enqueue" else "sitq worker DB --create"
        assert hint in err and "s3cret-pw" not in err and ":***@" in err
    assert not asyncio.run(schema_exists(schema_name))
    assert run(capsys, "enqueue", url, "--create", f"{TASKS}:add_up", "1", "2")[0] == 0
    assert asyncio.run(schema_exists(schema_name))
    code, out, _ = run(capsys, "status", url, "--json")
    assert (code, json.loads(out)["queued"]) == (0, 1)


def test_a_postgres_worker_without_create_refuses_a_missing_schema(schema_name: str) -> None:
    done = run_process("worker", postgres_url(schema_name))
    assert (done.returncode, done.stdout) == (2, "")
    assert f"no sitq queue in schema '{schema_name}'" in done.stderr
    assert "or add --create to make one" in done.stderr


def test_a_missing_postgres_database_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    skip_without_postgres()
    base, _, _ = with_password(POSTGRES_URL, "s3cret-pw").rpartition("/")
    for create in ([], ["--create"]):  # sitq makes a schema, never a database
        code, out, err = run(capsys, "worker" if create else "status",
                             f"{base}/sitq_no_such_db_xyz", *create)  # fmt: skip
        assert (code, out) == (2, "")
        assert 'database "sitq_no_such_db_xyz" does not exist' in err
        assert "createdb" in err and "s3cret-pw" not in err


def test_help_texts_show_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command, example in [
        ("enqueue", "sitq enqueue queue.db myapp.tasks:add 1 2"),
        ("status", "sitq status queue.db --watch 2"),
        ("show", "sitq show queue.db 3f1c2a..."),
        ("dead", "sitq dead queue.db --json"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and "examples:" in out and example in out, command
        assert "(default: $SITQ_DATABASE_URL)" in " ".join(out.split())


@pytest.mark.timeout(60)
def test_ctrl_c_ends_status_watch_with_exit_0(db_path: Path) -> None:
    """Ctrl-C is how `status --watch` is meant to end: exit 0, no "interrupted" message."""
    prepare(db_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "sitq", "status", str(db_path), "--watch", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        frame = [process.stdout.readline() for _ in range(len(TaskStatus) + 2)]
        assert frame[0].startswith(f"{db_path} at ") and frame[-1].split() == ["total", "2"]
        process.send_signal(signal.SIGINT)  # while it waits 30 s for the next frame
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert (process.returncode, err) == (0, "")
