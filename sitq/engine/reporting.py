"""What a worker tells the world about each task: log records and hooks.

One INFO record when a task starts (`sitq.engine.running`), one record when it ends (INFO
for success or cancel, WARNING for a failed attempt that will be retried, ERROR for a task
that failed for good), each naming the task, its id, the attempt, the outcome and the
duration. Records carry `task_id`, `task_name`, `attempt` and `error_type` as attributes
too, so a logging handler can filter or alert on them without parsing text. Hooks
(`WorkerHooks`) are called after the outcome is stored, never before. A plain success
with nobody listening (no INFO log, no `on_success` hook) is not reported at all:
`TaskRunner.report` skips it.
"""

from __future__ import annotations

import logging
from typing import Any

from sitq.backends.base import ClaimedTask
from sitq.engine.hooks import TaskEvent, WorkerHooks, call_hook
from sitq.errors import text_of
from sitq.policy.retry import WorkerLost
from sitq.policy.state import Decision
from sitq.task import TaskStatus

logger: logging.Logger = logging.getLogger("sitq.worker")


def type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__name__


def message(error: BaseException | None) -> str | None:
    """The error's text; safe for a task's exception whose __str__ raises (even SystemExit)."""
    return None if error is None else text_of(error)


def fields(task: ClaimedTask, attempt: int, error: BaseException | None) -> dict[str, Any]:
    """A log record's attributes, for handlers that filter or alert on them."""
    return {
        "task_id": task.task_id,
        "task_name": task.name,
        "attempt": attempt,
        "error_type": type_name(error),
    }


def started(task: ClaimedTask) -> None:
    logger.info("task %s (%s) started, attempt %d", task.task_id, task.name, task.attempt,
                extra=fields(task, task.attempt, None))  # fmt: skip


def decided(task: ClaimedTask, worker_id: str, hooks: WorkerHooks) -> None:
    """A lost lease a claim itself ended (`state.LOST_WHEN_SPENT`): log it, call the hooks."""
    assert task.decided is not None
    lost_by = task.lost_attempt.worker_id if task.lost_attempt else "?"
    error = WorkerLost(f"worker {lost_by} stopped renewing its lease")
    finished(task, worker_id, hooks, Decision(task.decided), error)


def finished(
    task: ClaimedTask,
    worker_id: str,
    hooks: WorkerHooks,
    decision: Decision,
    error: BaseException | None,
    value: object = None,
    duration: float | None = None,
    attempt: int | None = None,
) -> None:
    """Log the stored outcome of one attempt and call the matching hooks."""
    number = task.attempt if attempt is None else attempt
    event = TaskEvent(task.task_id, task.name, number, worker_id)
    head = f"task {task.task_id} ({task.name})"
    took = "" if duration is None else f" in {duration:.3f}s"
    if error is None:
        if logger.isEnabledFor(logging.INFO):  # else build no record that nobody reads
            logger.info("%s succeeded on attempt %d%s", head, number, took,
                        extra=fields(task, number, error))  # fmt: skip
        call_hook(hooks, "on_success", event, value)
        return
    extra = fields(task, number, error)
    if decision.status is TaskStatus.CANCELLED:  # a choice, not a failure
        logger.info("%s cancelled on attempt %d%s", head, number, took, extra=extra)
        return
    call_hook(hooks, "on_failure", event, error)
    what = f"{type_name(error)}: {message(error)}"
    if decision.retries or decision.runs_now:
        delay = decision.delay or 0.0
        logger.warning("%s attempt %d failed%s: %s; retrying in %.3gs", head, number, took,
                       what, delay, extra=extra)  # fmt: skip
        call_hook(hooks, "on_retry", event, error, delay)
    elif decision.status is TaskStatus.FAILED:
        logger.error("%s failed for good after attempt %d%s: %s", head, number, took, what,
                     extra=extra)  # fmt: skip
        call_hook(hooks, "on_dead_letter", event, error)
