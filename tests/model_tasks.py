"""Task functions for the model-based test (tests/test_model.py), and their call log.

The state machine needs to know how often the engine really *ran* each task, not only what
the database says about it. These tasks write every execution into `EXECUTIONS`, keyed by
the id of the task being run (from `sitq.current_task()`), with the attempt number the
worker gave it.

They live in an importable module (tests/ is on sys.path under pytest), so cloudpickle
sends them by reference: the worker, running in the same process, calls these very
functions and appends to this very dict.
"""

from __future__ import annotations

from collections import defaultdict

import sitq

#: task id -> attempt numbers of its executions, in the order they ran.
EXECUTIONS: defaultdict[str, list[int]] = defaultdict(list)


def record_execution() -> int:
    """Log one execution of the running task; return how many it has had so far."""
    context = sitq.current_task()
    runs = EXECUTIONS[context.task_id]
    runs.append(context.attempt)
    return len(runs)


async def fail_then_succeed(failures: int) -> int:
    """Fail the first `failures` executions, then succeed; returns the execution count.

    `failures=0` is a task that always succeeds; a huge number, one that always fails.
    """
    executions = record_execution()
    if executions <= failures:
        raise sitq.TransientError(f"planned failure {executions} of {failures}")
    return executions
