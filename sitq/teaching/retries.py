"""Checkers for the retry exercises (exercises/05_retry_strategies, 06_edge_cases).

A retry policy is only right if the *queue* does the right thing with it, so every checker
runs the student's policy (and task) through a real sitq queue: SQLite in a temporary
directory, a FakeClock so minutes of backoff pass in milliseconds, and a seeded worker so a
run can be replayed. Then it reads `queue.history()` and answers with `Feedback`.

This module holds the first exercise (linear backoff) and gathers the others, so that a
notebook needs one import: `from sitq.teaching import retries`. Each exercise's checker
lives in its own module: jitter, conditions (which errors to retry), edge_cases.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from sitq.teaching import Feedback, not_yet, passed
from sitq.teaching.breaker import check_breaker
from sitq.teaching.conditions import ERROR_CASES, HTTPError, check_error_conditions
from sitq.teaching.edge_cases import (
    PARTITION,
    PARTITION_JOBS,
    check_dead_letters,
    check_many_retries,
    check_partition,
    run_partition,
)
from sitq.teaching.jitter import check_full_jitter, check_jitter_policy
from sitq.teaching.sandbox import (
    TOLERANCE,
    Job,
    PolicyAnswer,
    always_fails,
    attempt_async,
    run_jobs,
    seconds,
    student_policy,
)

__all__ = [
    "ERROR_CASES",
    "PARTITION",
    "PARTITION_JOBS",
    "HTTPError",
    "always_fails",
    "check_breaker",
    "check_dead_letters",
    "check_error_conditions",
    "check_full_jitter",
    "check_jitter_policy",
    "check_linear_backoff",
    "check_many_retries",
    "check_partition",
    "run_partition",
]

# --- retry strategies ------------------------------------------------------------------

LINEAR_HINT = (
    "the wait after failed attempt k is k seconds (1 s, 2 s, 3 s...); RetryPolicy.linear "
    "builds that schedule too, and max_attempts=5 gives the 4 waits"
)


#: Attempts of the second run: a schedule that stops growing after the fourth wait (a
#: table of four waits, a cap at 4 s) is only seen with more attempts than the exercise's.
PROBE_ATTEMPTS = 9


async def check_linear_backoff(answer: PolicyAnswer) -> Feedback:
    """Five attempts of a failing task, waiting 1 s, 2 s, 3 s, 4 s between them; and the
    same policy given more attempts keeps growing by 1 s (5 s, 6 s...)."""

    async def check() -> Feedback:
        policy = student_policy(answer, LINEAR_HINT)
        run = await run_jobs([Job("task", always_fails)], policy)
        delays = run.delays_of("task")
        if len(delays) != 4:
            return not_yet(
                f"the task ran {len(delays) + 1} time(s); the exercise asks for 5 attempts",
                "max_attempts counts every attempt, the first included: 5 attempts = 4 retries",
            )
        if all(abs(d - k) < TOLERANCE for k, d in enumerate(delays, 1)):
            longer = dataclasses.replace(policy, max_attempts=PROBE_ATTEMPTS)
            more = (await run_jobs([Job("task", always_fails)], longer)).delays_of("task")
            if len(more) == PROBE_ATTEMPTS - 1 and all(
                abs(d - k) < TOLERANCE for k, d in enumerate(more, 1)
            ):
                return passed(
                    f"the queue waited {seconds(delays)}, and {seconds(more[4:])} when given "
                    f"{PROBE_ATTEMPTS} attempts: linear backoff, 1 s per step"
                )
            return not_yet(
                f"with {PROBE_ATTEMPTS} attempts instead of 5, the queue waited {seconds(more)}: "
                "your schedule stops growing after the fourth wait",
                "write the rule, not the four numbers: delay = 1.0 * attempt keeps adding 1 s "
                "for every attempt (no cap, no table of waits)",
            )
        shape = "they double each time: that is exponential" if _doubles(delays) else ""
        return not_yet(
            f"the queue waited {seconds(delays)} between attempts, not [1s, 2s, 3s, 4s]"
            + (f" ({shape})" if shape else ""),
            "a linear wait grows by the same step each time: delay = 1.0 * attempt",
        )

    return await attempt_async(check, LINEAR_HINT)


def _doubles(delays: Sequence[float]) -> bool:
    return len(delays) > 1 and all(
        abs(b - 2 * a) < TOLERANCE for a, b in itertools.pairwise(delays)
    )
