"""Hooks: where your monitoring and alerting plug into a worker.

Subclass `WorkerHooks` and override what you need (every method is a documented no-op),
then pass `Worker(..., hooks=MyHooks())`. Hooks run on the worker's event loop right after
the outcome is stored, so they see the same state as `queue.status`. A hook that raises is
logged and ignored, even with SystemExit (say it printed a task's exception whose __str__
raises that): monitoring must never break the work it watches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sitq.errors import traceback_of

logger: logging.Logger = logging.getLogger("sitq.worker")


@dataclass(frozen=True)
class TaskEvent:
    """What a hook is told about: which task, which attempt, on which worker."""

    task_id: str
    task_name: str
    attempt: int
    worker_id: str


class WorkerHooks:
    """No-op lifecycle hooks; override the ones you need."""

    def on_success(self, event: TaskEvent, value: object) -> None:
        """A task attempt returned `value`; the task is done."""

    def on_failure(self, event: TaskEvent, error: BaseException) -> None:
        """An attempt raised `error` (called for every failed attempt, retried or not)."""

    def on_retry(self, event: TaskEvent, error: BaseException, delay: float) -> None:
        """The failed attempt will be retried after `delay` seconds."""

    def on_dead_letter(self, event: TaskEvent, error: BaseException) -> None:
        """The task failed for good and is now a dead letter (see `queue.dead_letters()`)."""

    def on_worker_stopped(self, worker_id: str, error: BaseException) -> None:
        """The worker's loop ended by itself: `error` is one no retry mends (a damaged
        database, `DatabaseCorruptError`). It claims nothing more; call `stop()` to hand
        back what it holds. `sitq worker` exits with code 3. Alert a person."""


def call_hook(hooks: WorkerHooks, name: str, *args: object) -> None:
    """Call one hook, logging (not raising) whatever it throws."""
    try:
        getattr(hooks, name)(*args)
    except BaseException as exc:
        # Formatted by traceback_of, not logger.exception: the hook may have re-raised the
        # task's own exception, whose __str__ may raise past the logging module.
        logger.error("hook %s of %r raised; ignored:\n%s", name, hooks, traceback_of(exc))
