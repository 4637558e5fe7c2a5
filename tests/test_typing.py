"""The typed API: what a type checker sees in a user's program, and what the same
mistakes do at run time.

`tests/typed_program.py` is a small user program. `mypy --strict` must accept its first
part (`@sitq.task` keeps the signature, `enqueue` checks the arguments against the function,
`get_result` of its id gives `Result[T]`) and flag exactly its lines marked `# MISTAKE`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

import sitq
from sitq import FakeClock, InvalidOptionError, TaskId, TaskQueue
from sitq.backends.sqlite import SQLiteBackend

PROGRAM = Path(__file__).with_name("typed_program.py")


def test_mypy_accepts_the_typed_program_and_flags_exactly_its_mistakes() -> None:
    out, err, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(PROGRAM)]
    )
    flagged = {int(n) for n in re.findall(rf"{re.escape(PROGRAM.name)}:(\d+): error", out)}
    lines = PROGRAM.read_text().splitlines()
    mistakes = {
        n for n, line in enumerate(lines, 1) if "MISTAKE" in line.split("#", 1)[-1] and "#" in line
    }
    assert len(mistakes) == 2
    print(out)  # the errors a user would see, for the record
    assert flagged == mistakes, f"mypy said:\n{out}{err}"
    assert "retries" in out and "dealy" in out  # it names the misspelt options


async def test_a_misspelt_option_names_the_option_meant(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "q.db"), clock=FakeClock())
    with pytest.raises(
        InvalidOptionError, match=r"retries= is not a task option; did you mean retry="
    ):
        queue.with_options(retries=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidOptionError, match=r"did you mean delay="):
        queue.with_options(dealy=5)  # type: ignore[call-arg]
    with pytest.raises(InvalidOptionError, match=r"colour= is not a task option; the options"):
        sitq.task(colour="red")  # type: ignore[call-arg]
    await queue.close()


async def test_the_id_is_a_plain_string_and_the_result_carries_the_value(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "q.db")
    async with TaskQueue(backend, clock=FakeClock()) as queue:
        task_id = await queue.enqueue(pow, 2, 10)
        assert isinstance(task_id, TaskId) and isinstance(task_id, str)
        assert str(task_id) == task_id and type(str(task_id)) is str
        worker = sitq.Worker(backend, clock=queue.clock)
        await worker.run_until_idle()
        result = await queue.get_result(task_id, timeout=1)
        assert result is not None and result.value == 1024
        assert await queue.get_result(str(task_id), timeout=1) == result


def test_pyright_sees_the_whole_public_api_typed() -> None:
    """`pyright --verifytypes sitq`: every symbol sitq exports has a type a checker can see
    (issue 26 asks for 99% at least; it reads 93.5% before the attributes were annotated)."""
    pytest.importorskip("pyright", reason="pip install pyright (part of the dev extra)")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--verifytypes", "sitq", "--ignoreexternal",
         "--outputjson"],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    report = json.loads(done.stdout)
    score = report["typeCompleteness"]["completenessScore"]
    print(
        f"pyright type completeness: {score:.1%}",
        report["typeCompleteness"]["exportedSymbolCounts"],
    )
    assert score >= 0.99
