"""The command line: output for people and scripts, exit codes 0 / 1 (runtime) / 2 (usage).

Most commands are called in-process through `sitq.cli.main(argv)`, which returns the exit
code; a few run `python -m sitq` for real, to check the entry point, signals and options
that only a worker process exercises.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import reliability_tasks as rt
from worker_processes import WorkerProcess, workers

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
    assert out.splitlines() == [f"{ids['dead']}\tfail\t1\tValueError: bad input 7"]


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
        assert code == 1 and f"no database at '{missing}'" in err
    assert not missing.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "postgresql://db.example/jobs"], "postgresql URLs are not supported"),
        (["worker", "q.db", "--import", "no_such_module_xyz"], "no module named"),
        (["worker", "q.db", "--signing-key-env", "SITQ_UNSET_VAR_XYZ"], "is not set or empty"),
    ],
    ids=["postgres url", "missing module", "unset key variable"],
)
def test_worker_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "q.db").exists()


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
    assert "usage: python -m sitq" in capsys.readouterr().err


def test_python_dash_m_sitq_is_the_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sitq", "status", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("sitq: SitqError: no database at")


@pytest.mark.timeout(60)
def test_sigint_stops_an_idle_worker_cleanly(db_path: Path, tmp_path: Path) -> None:
    worker = WorkerProcess(db_path, tmp_path / "log", tmp_path)
    try:
        worker_id = worker.wait_ready()
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
    options = ["--serializer", "json", "--signing-key-env", "SITQ_TEST_KEY"]
    serializer = SignedSerializer(key, JsonSerializer())
    with workers(db_path, log, tmp_path, 1, *options) as [proc]:
        assert key not in " ".join(map(str, proc.process.args))  # type: ignore[arg-type]
        async with TaskQueue(SQLiteBackend(db_path), serializer) as queue:
            ok = await queue.enqueue(rt.count, "json")
            outside = await queue.enqueue(add, 1, 2)  # test_cli is not an imported module
            ok_result, outside_result = await queue.gather([ok, outside], timeout=30)
    assert ok_result is not None and ok_result.value == "json"
    assert outside_result is not None and outside_result.error_type == "SerializationError"
    assert "outside the modules this JsonSerializer may run" in (outside_result.error or "")
    assert rt.tally(log, "end") == {"json": 1}
