"""A user's program, for the type checker: tests/test_typing.py runs `mypy --strict` on it.

The first part must check cleanly: the decorated function keeps its signature, the id that
`enqueue` gives remembers what the task returns, and `get_result` of it is a `Result` of
that type. The last lines are the two mistakes issue 26 names; each is marked with a
comment saying so and must be flagged (and nothing else may be).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

import sitq
from sitq import Result, SyncTaskQueue, TaskId, TaskQueue


@sitq.task(timeout=10)
async def add(a: int, b: int) -> int:
    return a + b


def shout(text: str) -> str:
    return text.upper()


async def main(queue: TaskQueue) -> None:
    # @sitq.task returns the function it was given, with its signature, callable as before.
    same: Callable[[int, int], Coroutine[Any, Any, int]] = add
    assert same is add
    assert await add(1, 2) == 3
    task_id = await queue.enqueue(add, 2, 3)
    assert_type(task_id, TaskId[int])
    result = await queue.get_result(task_id, timeout=5)
    assert_type(result, Result[int] | None)
    if result is not None and result.value is not None:
        assert_type(result.value, int)
    loud = await queue.with_options(delay=5, retry=sitq.RetryPolicy.fixed(1)).enqueue(shout, "hi")
    assert_type(loud, TaskId[str])
    read_back = await queue.get_result("an id read from a file")
    assert_type(read_back, Result[Any] | None)


def in_a_script(queue: SyncTaskQueue) -> None:
    task_id = queue.enqueue(shout, "hello")
    assert_type(queue.get_result(task_id), Result[str] | None)


async def mistakes(queue: TaskQueue) -> None:
    await queue.enqueue(add, "two", 3, 4)  # a str for an int, one argument too many: MISTAKE
    queue.with_options(retries=3, dealy=5)  # MISTAKE: retry= and delay= misspelt
