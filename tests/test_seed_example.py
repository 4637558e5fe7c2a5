"""The tutorial page's example program runs unchanged against sitq.

`examples/seed_error_handling.py` is the code block of the seed page, copied verbatim (the
first test checks that, when the page is at hand). It is run in a subprocess in a temp dir,
as a student would run it, and must print what the page promises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "seed_error_handling.py"
SEED_PAGE = ROOT.parent / "shared" / "seed" / "error-handling.md"


def test_example_is_the_seed_code_verbatim() -> None:
    if not SEED_PAGE.exists():
        pytest.skip("the seed page is not beside this checkout")
    block = re.search(r"## Code Example\n\n```python\n(.*?)```", SEED_PAGE.read_text(), re.S)
    assert block is not None
    assert EXAMPLE.read_text() == block.group(1)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    workdir = tmp_path_factory.mktemp("seed")
    script = workdir / "error_handling.py"
    script.write_text(EXAMPLE.read_text())
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_seed_exits_cleanly(seed_run: subprocess.CompletedProcess[str]) -> None:
    assert seed_run.returncode == 0, seed_run.stderr[-3000:]


def test_seed_prints_its_promises(seed_run: subprocess.CompletedProcess[str]) -> None:
    out = seed_run.stdout
    assert "✓ Caught expected failure: Intentional failure for task 1" in out
    assert "Collected 3 failed tasks for manual review" in out
    assert "Circuit breaker OPEN: Skipping task 11" in out
    assert out.rstrip().endswith("=== Error handling example completed ===")
    assert "✗" not in out


def test_seed_enqueues_three_breaker_tasks_before_opening(seed_run) -> None:
    assert seed_run.stdout.count("Circuit breaker CLOSED: Enqueued task") == 3
    assert "Circuit breaker OPEN after 3 failures" in seed_run.stderr
