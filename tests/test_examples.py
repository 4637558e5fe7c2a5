"""examples/failing_workload.py runs as a student would run it and saves its two plots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "failing_workload.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(cwd / "mpl")}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("example")


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> subprocess.CompletedProcess[str]:
    return run_example(workdir / "plots", workdir)


def test_failing_workload_saves_both_plots(
    first_run: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    for name in ("dashboard.png", "retry_timeline.png"):
        data = (workdir / "plots" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
    assert not list(workdir.rglob("*.db*"))  # its database lived in a temp dir, now gone


def test_failing_workload_prints_a_summary(first_run: subprocess.CompletedProcess[str]) -> None:
    out = first_run.stdout
    assert out.startswith("30 tasks, ")
    assert "final states: succeeded" in out and "failed attempts: ConnectionError" in out
    assert "fetch_page after 4 attempt(s): ConnectionError" in out  # the outage's dead letter
    assert "charge_card after 1 attempt(s): CardDeclined" in out  # never retried


def test_failing_workload_is_the_same_every_run(
    first_run: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    again = run_example(workdir / "again", workdir)
    assert again.returncode == 0, again.stderr[-3000:]

    def summary(run: subprocess.CompletedProcess[str]) -> list[str]:
        return [line for line in run.stdout.splitlines() if not line.startswith("saved")]

    assert summary(again) == summary(first_run)
