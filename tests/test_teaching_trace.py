"""Lesson 16's tracer and its reading helpers, checked for what does not vary.

The lesson's route figure and numbers describe the engine as it is (`figure-varies`, and its
counts are not compared by nbval): they change whenever the engine does. What must hold on
every run: hops and hops back counted per thread on a route built by hand; a coroutine
resuming after an `await` is not a new call; a real task's route starts with `enqueue`,
shows claim -> decide -> settle in that order and ends with 49; the figure has one row per
module; and the helpers find the code they show (the caller of `state.after_attempt`, the
claim and settle statements of both backends) in the running code, not in a copy.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from sitq import TaskQueue, Worker
from sitq.backends.postgres import PostgresBackend
from sitq.backends.sqlite import SQLiteBackend
from sitq.policy import state
from sitq.teaching import inside
from sitq.teaching.trace import Call, Route, trace


def route_of(*calls: tuple[str, str, str]) -> Route:
    """A route from (thread, module, function) triples, in the order given."""
    return Route(
        [
            Call(step=n, module=module, function=function, thread=thread, at=float(n))
            for n, (thread, module, function) in enumerate(calls)
        ]
    )


#: Two threads interleaved: main goes a -> b -> a -> c, the connection's thread b -> b -> d.
INTERLEAVED = route_of(
    ("main", "sitq.a", "f"),
    ("conn", "sitq.b", "g"),
    ("main", "sitq.b", "h"),
    ("conn", "sitq.b", "i"),
    ("main", "sitq.a", "f2"),
    ("conn", "sitq.d", "j"),
    ("main", "sitq.c", "k"),
)


def test_hops_are_counted_along_each_threads_own_path() -> None:
    """main crosses a->b, b->a, a->c (3), conn b->d (1); interleaving adds no crossing."""
    assert INTERLEAVED.hops == 4
    assert INTERLEAVED.hops_back == 1  # main's b -> a, into a module it had been in
    assert INTERLEAVED.modules == ["sitq.a", "sitq.b", "sitq.d", "sitq.c"]
    assert INTERLEAVED.summary().startswith("4 modules, 4 hops between modules (1 back")


def test_a_module_entered_by_another_thread_first_is_not_a_hop_back() -> None:
    """conn entered b first; main going into b is new to main, so not back."""
    route = route_of(("conn", "sitq.b", "g"), ("main", "sitq.a", "f"), ("main", "sitq.b", "h"))
    assert (route.hops, route.hops_back) == (1, 0)


def test_the_figure_has_one_row_per_module_and_one_line_per_thread() -> None:
    ax = INTERLEAVED.figure()
    try:
        labels = [tick.get_text() for tick in ax.get_yticklabels()]
        assert labels == ["a", "b", "d", "c"]  # first entered at the top, "sitq." dropped
        assert [line.get_label() for line in ax.get_lines()] == ["main", "conn"]
        conn = ax.get_lines()[1]
        assert list(conn.get_xdata()) == [1, 3, 5]
        assert list(conn.get_ydata()) == [1, 1, 2]  # b, b, d
    finally:
        plt.close("all")


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """A module of our own to trace and to read: `probe`."""
    (tmp_path / "probe.py").write_text(
        "import asyncio\n\n\n"
        "def target():\n    return 1\n\n\n"
        "async def slow():\n    await asyncio.sleep(0)\n    await asyncio.sleep(0)\n"
        "    return target()\n\n\n"
        "def outer():\n"
        "    def inner():\n        return target()\n\n"
        "    return inner\n\n\n"
        "class Shop:\n    def other(self):\n        return target()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("probe", None)
    return importlib.import_module("probe")


async def test_a_coroutine_resuming_after_await_is_one_call(probe: object) -> None:
    with trace("probe") as route:
        await probe.slow()  # type: ignore[attr-defined]
    assert [(c.module, c.function) for c in route.calls] == [
        ("probe", "slow"),
        ("probe", "target"),
    ]


def test_callers_are_the_functions_on_the_route_whose_own_body_calls(probe: object) -> None:
    """outer only defines inner: it is inner that calls target. A function the route did
    not enter is not listed, even if its body calls target."""
    route = route_of(
        ("main", "probe", "outer"),
        ("main", "probe", "outer.<locals>.inner"),
        ("main", "probe", "target"),
    )
    found = inside.callers(probe.target, route)  # type: ignore[attr-defined]
    assert [source.title for source in found] == ["probe.outer.<locals>.inner"]
    assert found[0].text.startswith("def inner():")  # dedented
    route.calls.append(Call(step=3, module="probe", function="Shop.other", thread="main", at=3))
    titles = [source.title for source in inside.callers(probe.target, route)]  # type: ignore[attr-defined]
    assert titles == ["probe.outer.<locals>.inner", "probe.Shop.other"]


async def square(x: int) -> int:
    return x * x


async def test_a_real_task_is_claimed_run_decided_and_settled_in_that_order(
    tmp_path: Path,
) -> None:
    with trace() as route:
        queue = await TaskQueue(SQLiteBackend(tmp_path / "q.db")).connect()
        worker = Worker(queue.backend, worker_id="w")
        await worker.run_once()  # connects the worker too, under the tracer
        route.clear()
        task_id = await queue.enqueue(square, 7)
        assert await worker.run_once() == 1
        result = await queue.get_result(task_id)
    try:
        assert result.value == 49
        print(route.summary())  # the cost of the path today, shown when a test fails
        assert route.modules[0] == TaskQueue.__module__
        assert state.__name__ in route.modules
        assert any(m.startswith(inside.storage_package(queue.backend)) for m in route.modules)
        assert inside.landmarks(route, queue.backend) == dict.fromkeys(
            inside.landmarks(route, queue.backend), True
        )
        assert [label for label, _, _ in inside.parts(route)] == list(inside.ENTRY_POINTS)
        threads = len({call.thread for call in route.calls})
        assert len(route.calls) > route.hops > route.hops_back
        # each thread's first entry into a module, after its first, is a hop and not back
        assert route.hops - route.hops_back >= len(route.modules) - threads

        asking = inside.callers(state.after_attempt, route)
        assert asking and all("after_attempt(" in source.text for source in asking)
        ax = inside.draw(route)
        assert len(ax.get_yticks()) == len(route.modules)
        assert any(t.get_text() == "state decides" for t in ax.texts)
    finally:
        plt.close("all")
        await queue.close()


def test_landmarks_fail_on_a_route_that_settles_before_deciding() -> None:
    """The landmarks can fail: a route with no decision between claim and settle."""
    enqueue, run_once, get_result = inside.ENTRY_POINTS.values()
    route = route_of(
        ("main", enqueue.__module__, enqueue.__qualname__),
        ("main", run_once.__module__, run_once.__qualname__),
        ("main", "sitq.backends.sqlite.ops", "claim"),
        ("main", get_result.__module__, get_result.__qualname__),
        ("main", "sitq.backends.sqlite.ops", "read"),
    )
    seen = inside.landmarks(route, SQLiteBackend)
    assert seen["it starts with the queue's enqueue"]
    assert seen["get_result reads the outcome through the backend"]
    assert not seen["state.after_attempt decides, once"]
    assert not seen["the worker's turn calls the backend (the claim) before the decision"]


@pytest.mark.parametrize("backend", [SQLiteBackend, PostgresBackend], ids=["sqlite", "postgres"])
def test_the_claim_and_settle_statements_are_found_in_each_backends_modules(
    backend: type,
) -> None:
    claim, settle = inside.claim_sql(backend), inside.settle_sql(backend)
    package = inside.storage_package(backend)
    assert claim.title.startswith(package + ".") and settle.title.startswith(package + ".")
    assert claim.language == settle.language == "sql"
    assert "CLAIM" in claim.title and "SETTLE" in settle.title
    assert inside.sql_checks(backend) == dict.fromkeys(inside.sql_checks(backend), True)
    assert "\n\n" not in claim.text  # blank lines closed up


def test_a_backend_without_statements_says_what_was_looked_for() -> None:
    with pytest.raises(LookupError, match="no statement in builtins that claims"):
        inside.claim_sql(object)


def test_sources_show_side_by_side_as_escaped_columns() -> None:
    python = inside.source_of(inside.side_by_side)
    sql = inside.Source("shop.CHARGE", "SELECT 1 WHERE a < b", "sql")
    page = inside.side_by_side(python, sql)._repr_html_()
    assert page.count("flex:1 1 0") == 2
    assert "sitq.teaching.inside.side_by_side" in page and "shop.CHARGE" in page
    assert "a < b" not in page and "&lt;" in page  # escaped, whatever the highlighter
    assert python.text.startswith("def side_by_side(")
    assert str(inside.side_by_side(python, sql)).endswith("shop.CHARGE\nSELECT 1 WHERE a < b")


def test_the_modules_table_lists_each_module_once_with_its_first_call() -> None:
    lines = inside.modules_table(INTERLEAVED).splitlines()
    assert lines[1:] == [
        "   0      2  sitq.a (f)",
        "   1      3  sitq.b (g)",
        "   5      1  sitq.d (j)",
        "   6      1  sitq.c (k)",
    ]


def test_tracing_leaves_no_profiler_behind() -> None:
    with trace():
        pass
    assert sys.getprofile() is None


async def test_a_thread_started_inside_the_trace_is_traced() -> None:
    from sitq.policy.state import on_enqueue

    with trace() as route:
        await asyncio.to_thread(on_enqueue, 0.0, 0.0)
    threads = {call.thread for call in route.calls if call.function == "on_enqueue"}
    assert len(threads) == 1 and threads != {"MainThread"}
