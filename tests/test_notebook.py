"""Issue 4, point 5: Jupyter. HTML tables for results, history and queue summaries;
`enable_asyncio_run()`; importing sitq patches nothing; and the same in a real kernel."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitq import (
    Attempt,
    FakeClock,
    History,
    QueueSummary,
    RetryPolicy,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.notebook import history_html, result_html, table_html

T0 = 1_000.0


async def fails_with_markup() -> None:
    raise ValueError("<b>bold</b> & co")


async def returns_markup() -> str:
    return "<script>alert(1)</script>"


def attempt(n: int, outcome: str, start: float, error: str | None = None) -> Attempt:
    """Attempt n of task "fetch": ran 0.5 s from `start`; a retry waits 2 s."""
    delay = 2.0 if outcome == "retrying" else None
    error_type = error and "ConnectionError"
    return Attempt("3f2a9c11-aaaa", "fetch", n, "w1", T0 + start, T0 + start, T0 + start + 0.5,
                   outcome, error_type, error, delay)  # fmt: skip


# -- HTML reprs ---------------------------------------------------------------------------


def test_table_html_escapes_every_cell() -> None:
    html = table_html(["<h>"], [["a & b"], [None], [0.5]])
    assert "<th>&lt;h&gt;</th>" in html
    assert "<td>a &amp; b</td>" in html and "<td></td>" in html and "<td>0.500</td>" in html


async def test_result_html(queue: TaskQueue, worker: Worker) -> None:
    ok = await queue.enqueue(returns_markup)
    bad = await queue.enqueue(fails_with_markup)
    await worker.run_until_idle()
    [good, failed] = await queue.gather([ok, bad])
    assert good is not None and failed is not None

    html = good._repr_html_()
    assert html == result_html(good)
    assert "<td>succeeded</td>" in html and "<td>returns_markup</td>" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    failed_html = failed._repr_html_()
    assert "<td>failed</td>" in failed_html
    assert "ValueError: &lt;b&gt;bold&lt;/b&gt; &amp; co" in failed_html


def test_history_html_rows_and_relative_times() -> None:
    records = [attempt(1, "retrying", 0, "<down>"), attempt(2, "succeeded", 2.5)]
    html = history_html(records)

    assert html.count("<tr>") == 3  # header and two attempts
    for header in ("task", "attempt", "outcome", "error", "start (s)", "took (s)", "worker"):
        assert f"<th>{header}</th>" in html
    assert "<td>fetch</td>" in html and "3f2a9c" not in html  # a name, never a hash id
    assert "<td>ConnectionError: &lt;down&gt;</td>" in html
    assert "<td>2.500</td>" in html  # seconds since the first attempt, not an epoch
    assert "<td>2.000</td>" in html  # the wait before the next try


def test_history_html_numbers_tasks_that_share_a_name() -> None:
    first, second = attempt(1, "succeeded", 0), attempt(1, "succeeded", 1)
    other = Attempt("77b01e2a", "shop.mail:send_receipt", 1, "w1", T0, T0, T0, "succeeded")
    records = [first, other, dataclasses.replace(second, task_id="90aa4c11")]
    html = history_html(records)

    assert "<td>fetch #1</td>" in html and "<td>fetch #2</td>" in html
    assert "<td>send_receipt</td>" in html


def test_history_html_cuts_long_histories() -> None:
    records = [attempt(n, "retrying", n) for n in range(1, 121)]
    html = history_html(records, max_rows=50)
    assert html.count("<tr>") == 51
    assert "and 70 more attempts (of 120)" in html
    assert "no attempts" in history_html([])


async def test_history_is_a_list_that_shows_as_a_table(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    policy = RetryPolicy.fixed(1, max_attempts=2)
    task_id = await queue.with_options(retry=policy).enqueue(fails_with_markup)
    await worker.run_until_idle()

    history = await queue.history(task_id)

    assert isinstance(history, History) and isinstance(history, list)
    assert [a.outcome for a in history] == ["retrying", "failed"]
    assert history == list(history) and len(history[:1]) == 1
    assert repr(history) == repr(list(history))  # the text form is a plain list's
    html = history._repr_html_()
    assert html.count("<tr>") == 3 and "<td>retrying</td>" in html and "&lt;b&gt;" in html


async def test_queue_summary(queue: TaskQueue, worker: Worker) -> None:
    await queue.enqueue(returns_markup)
    await queue.enqueue(fails_with_markup)
    await worker.run_until_idle()
    await queue.with_options(delay=9).enqueue(returns_markup)

    summary = await queue.summary()

    assert isinstance(summary, QueueSummary)
    assert summary.counts == await queue.counts()
    assert (summary.total, summary.waiting, summary.finished, summary.dead_letters) == (3, 1, 2, 1)
    assert summary["succeeded"] == summary[TaskStatus.SUCCEEDED] == 1
    assert repr(summary) == (
        "QueueSummary(blocked=0, queued=0, scheduled=1, running=0, retrying=0, succeeded=1, "
        "failed=1, cancelled=0; total=3)"
    )
    html = summary._repr_html_()
    assert "<th>status</th><th>tasks</th>" in html
    for status in TaskStatus:
        assert f"<td>{status.value}</td>" in html
    assert "<tr><td>failed</td><td>1</td></tr>" in html
    assert "<tr><td>total</td><td>3</td></tr>" in html


# -- the event loop: nothing patched unless asked -------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter, so a patch it applies cannot leak into other tests."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_sitq_patches_nothing() -> None:
    done = run_python(
        """
        import asyncio, sys
        original = asyncio.run
        import sitq, sitq.notebook, sitq.sync, sitq.plots
        assert asyncio.run is original, asyncio.run
        assert "nest_asyncio2" not in sys.modules and "nest_asyncio" not in sys.modules
        print("clean")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "clean\n"


def test_enable_asyncio_run_allows_asyncio_run_inside_a_running_loop() -> None:
    done = run_python(
        """
        import asyncio
        import sitq.notebook

        async def main():
            await asyncio.sleep(0)
            return 42

        async def cell():
            try:
                asyncio.run(main())
            except RuntimeError as exc:
                print("before:", exc)
            sitq.notebook.enable_asyncio_run()
            print("after:", asyncio.run(main()))

        asyncio.run(cell())
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "before: asyncio.run() cannot be called from a running event loop\nafter: 42\n"
    )


# -- a real Jupyter kernel ------------------------------------------------------------------


class Kernel:
    """A running IPython kernel that executes cells and returns what they output."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3")

    def run(self, code: str) -> list[tuple[str, dict[str, Any]]]:
        outputs: list[tuple[str, dict[str, Any]]] = []

        def keep(msg: dict[str, Any]) -> None:
            kinds = ("stream", "execute_result", "display_data", "update_display_data", "error")
            if msg["msg_type"] in kinds:
                outputs.append((msg["msg_type"], msg["content"]))

        self.client.execute_interactive(textwrap.dedent(code), timeout=60, output_hook=keep)
        return outputs

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    """A fresh kernel per test (about 0.6 s), so one test's patch never meets another."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))  # connection files go here
    started = Kernel()
    yield started
    started.close()


def stdout(outputs: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(c["text"] for kind, c in outputs if kind == "stream" and c["name"] == "stdout")


def test_in_a_kernel_sync_queue_works_without_any_patch(kernel: Kernel) -> None:
    outputs = kernel.run(
        """
        import asyncio, tempfile
        from pathlib import Path
        import sitq

        tmp = tempfile.TemporaryDirectory()
        queue = sitq.SyncTaskQueue(sitq.SQLiteBackend(Path(tmp.name) / "q.db")).connect()
        worker = queue.worker()
        worker.start()
        ids = queue.enqueue_many([sitq.call(pow, 2, n) for n in range(5)])
        print([r.value for r in queue.gather(ids, timeout=10, progress=True)])
        print(hasattr(asyncio.get_running_loop(), "_nest_patched"))
        queue.summary()
        """
    )
    assert [kind for kind, _ in outputs if kind == "error"] == []
    assert stdout(outputs) == "[1, 2, 4, 8, 16]\nFalse\n"
    widget = "application/vnd.jupyter.widget-view+json"
    widgets = [c for _, c in outputs if widget in c.get("data", {})]
    assert widgets, "in a kernel with ipywidgets, tqdm.auto draws the bar as a widget"
    [ended] = [c["data"] for kind, c in outputs if kind == "update_display_data"]
    assert ended == {"text/plain": "tasks: 5/5 finished"}  # what a saved notebook keeps
    [result] = [c["data"] for kind, c in outputs if kind == "execute_result"]
    assert "<tr><td>succeeded</td><td>5</td></tr>" in result["text/html"]
    assert result["text/plain"].startswith("QueueSummary(")

    closed = kernel.run("thread = queue.thread\nqueue.close()\nprint(thread.is_alive())")
    assert stdout(closed) == "False\n"


def test_in_a_kernel_enable_asyncio_run(kernel: Kernel) -> None:
    script = "import asyncio\n\nasync def main():\n    return 'ran'\n\nprint(asyncio.run(main()))\n"
    refused = kernel.run(script)
    assert [c["ename"] for kind, c in refused if kind == "error"] == ["RuntimeError"]

    allowed = kernel.run("import sitq.notebook\nsitq.notebook.enable_asyncio_run()\n" + script)
    assert stdout(allowed) == "ran\n"
