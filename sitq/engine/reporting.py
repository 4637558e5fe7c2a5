"""What a worker tells the world about each task: log records and hooks.

One INFO record when a task starts, one record when it ends (INFO for success or cancel,
WARNING for a failed attempt that will be retried, ERROR for a task that failed for good),
each naming the task, its id, the attempt, the outcome and the duration. Records carry
`task_id`, `task_name`, `attempt` and `error_type` as attributes too, so a logging handler
can filter or alert on them without parsing text. Hooks (`WorkerHooks`) are called after
the outcome is stored, never before.
"""

from __future__ import annotations

import logging
from typing import Any

from sitq.backends.base import ClaimedTask
from sitq.engine.execution import text_of
from sitq.engine.hooks import TaskEvent, WorkerHooks, call_hook
from sitq.policy.state import Decision
from sitq.task import TaskStatus

logger: logging.Logger = logging.getLogger("sitq.worker")


def type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__name__


def message(error: BaseException | None) -> str | None:
    """The error's text; safe for a task's exception whose __str__ raises (even SystemExit)."""
    return None if error is None else text_of(error)


def _fields(claimed: ClaimedTask, attempt: int, error: BaseException | None) -> dict[str, Any]:
    return {
        "task_id": claimed.task_id,
        "task_name": claimed.name,
        "attempt": attempt,
        "error_type": type_name(error),
    }


def started(claimed: ClaimedTask) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return  # the usual case in a notebook or a benchmark: build no record at all
    logger.info(
        "task %s (%s) started, attempt %d",
        claimed.task_id,
        claimed.name,
        claimed.attempt,
        extra=_fields(claimed, claimed.attempt, None),
    )


def _described(claimed: ClaimedTask, duration: float | None) -> tuple[str, str]:
    """The log line's subject ("task <id> (<name>)") and how long the attempt took."""
    took = "" if duration is None else f" in {duration:.3f}s"
    return f"task {claimed.task_id} ({claimed.name})", took


def finished(
    claimed: ClaimedTask,
    worker_id: str,
    hooks: WorkerHooks,
    decision: Decision,
    error: BaseException | None,
    value: object = None,
    duration: float | None = None,
    attempt: int | None = None,
) -> None:
    """Log the stored outcome of one attempt and call the matching hooks."""
    number = claimed.attempt if attempt is None else attempt
    event = TaskEvent(claimed.task_id, claimed.name, number, worker_id)
    if error is None:
        if logger.isEnabledFor(logging.INFO):  # else build no record that nobody reads
            head, took = _described(claimed, duration)
            fields = _fields(claimed, number, error)
            logger.info("%s succeeded on attempt %d%s", head, number, took, extra=fields)
        call_hook(hooks, "on_success", event, value)
        return
    head, took = _described(claimed, duration)
    fields = _fields(claimed, number, error)
    if decision.status is TaskStatus.CANCELLED:  # a choice, not a failure
        logger.info("%s cancelled on attempt %d%s", head, number, took, extra=fields)
        return
    call_hook(hooks, "on_failure", event, error)
    what = f"{type_name(error)}: {message(error)}"
    if decision.retries or decision.runs_now:
        delay = decision.delay or 0.0
        logger.warning(
            "%s attempt %d failed%s: %s; retrying in %.3gs",
            head,
            number,
            took,
            what,
            delay,
            extra=fields,
        )
        call_hook(hooks, "on_retry", event, error, delay)
    elif decision.status is TaskStatus.FAILED:
        logger.error(
            "%s failed for good after attempt %d%s: %s", head, number, took, what, extra=fields
        )
        call_hook(hooks, "on_dead_letter", event, error)
