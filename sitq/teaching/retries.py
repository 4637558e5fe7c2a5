"""Checkers for notebook 05's exercises: retry strategies and edge cases.

A retry policy is only right if the *queue* does the right thing with it, so every checker
here runs the student's policy (and task) through a real sitq queue: SQLite in a temporary
directory, a FakeClock so minutes of backoff pass in milliseconds, and a seeded worker so a
run can be replayed. Then it reads `queue.history()` and answers with `Feedback`.

The tasks the checkers enqueue are defined in this module, so they are pickled by
reference and share this module's state with the worker, like any importable code.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sitq import FakeClock, RetryPolicy, TaskQueue
from sitq.teaching import Feedback, not_yet, passed
from sitq.teaching.sandbox import (
    Job,
    NotYet,
    Run,
    attempt_async,
    reject_stubs,
    run_jobs,
    sandbox,
    settle,
)

TOLERANCE = 1e-3  # seconds: epoch floats near 1.8e9 carry ~1e-7 s of rounding


#: A policy, or the student's function that builds one: a stub then raises
#: NotImplementedError *inside* the checker, so the exercise notebook still runs.
PolicyAnswer = RetryPolicy | Callable[[], RetryPolicy]


def _policy(answer: PolicyAnswer, hint: str) -> RetryPolicy:
    policy = answer() if callable(answer) else answer
    if not isinstance(policy, RetryPolicy):
        raise NotYet(f"expected a sitq.RetryPolicy, got {type(policy).__name__}", hint)
    # Call the student's custom delay function and retry_on/give_up_on predicates here
    # first: a stub or a bug then shows up as "not yet", not deep inside the worker.
    policy.preview()
    for case in ERROR_CASES.values():
        policy.should_retry(case[0](), 1)
    return policy


def _seconds(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}s" for v in values) + "]"


# --- tasks the checkers enqueue --------------------------------------------------------


class HTTPError(Exception):
    """A failed HTTP call with its status code (404 not found, 429 slow down, 503...)."""

    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        super().__init__(message or f"HTTP {status}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, str(self)))


#: The errors `check_error_conditions` throws at a policy, and whether each deserves a retry.
ERROR_CASES: dict[str, tuple[Callable[[], BaseException], bool]] = {
    "ConnectionError": (lambda: ConnectionError("connection reset by peer"), True),
    "TimeoutError": (lambda: TimeoutError("read timed out"), True),
    "HTTPError(503)": (lambda: HTTPError(503, "HTTP 503 service unavailable"), True),
    "HTTPError(429)": (lambda: HTTPError(429, "HTTP 429 too many requests"), True),
    "HTTPError(404)": (lambda: HTTPError(404, "HTTP 404 not found"), False),
    "ValueError": (lambda: ValueError("invalid literal for int(): 'abc'"), False),
    "KeyError": (lambda: KeyError("customer_id"), False),
}


async def always_fails(message: str = "the service is down") -> None:
    """A task that never works: the raw material for backoff schedules."""
    raise ConnectionError(message)


async def raise_error(case: str) -> None:
    """Raise the error named `case` in ERROR_CASES."""
    raise ERROR_CASES[case][0]()


# --- retry strategies ------------------------------------------------------------------

LINEAR_HINT = (
    "the wait after failed attempt k is k seconds (1 s, 2 s, 3 s...); RetryPolicy.linear "
    "builds that schedule too, and max_attempts=5 gives the 4 waits"
)


async def check_linear_backoff(answer: PolicyAnswer) -> Feedback:
    """Five attempts of a failing task, waiting 1 s, 2 s, 3 s, 4 s between them."""

    async def check() -> Feedback:
        policy = _policy(answer, LINEAR_HINT)
        run = await run_jobs([Job("task", always_fails)], policy)
        delays = run.delays_of("task")
        if len(delays) != 4:
            return not_yet(
                f"the task ran {len(delays) + 1} time(s); the exercise asks for 5 attempts",
                "max_attempts counts every attempt, the first included: 5 attempts = 4 retries",
            )
        if all(abs(d - k) < TOLERANCE for k, d in enumerate(delays, 1)):
            return passed(f"the queue waited {_seconds(delays)}: linear backoff, 1 s per step")
        shape = "they double each time: that is exponential" if _doubles(delays) else ""
        return not_yet(
            f"the queue waited {_seconds(delays)} between attempts, not [1s, 2s, 3s, 4s]"
            + (f" ({shape})" if shape else ""),
            "a linear wait grows by the same step each time: delay = 1.0 * attempt",
        )

    return await attempt_async(check, LINEAR_HINT)


def _doubles(delays: Sequence[float]) -> bool:
    return len(delays) > 1 and all(
        abs(b - 2 * a) < TOLERANCE for a, b in itertools.pairwise(delays)
    )


JITTER_HINT = (
    "take the capped exponential wait, min(20, 2 ** (attempt - 1)), and draw a random "
    "number between 0 and it from `rng`"
)


def check_full_jitter(full_jitter: Callable[[int, random.Random], float]) -> Feedback:
    """A hand-written full-jitter delay: uniform(0, min(20, 1 * 2**(attempt-1)))."""
    from sitq.teaching import attempt as run_check

    def check() -> Feedback:
        for k in range(1, 9):
            ceiling = min(20.0, 2.0 ** (k - 1))
            draws = [float(full_jitter(k, rng)) for rng in (random.Random(s) for s in range(300))]
            if min(draws) < 0 or max(draws) > ceiling + TOLERANCE:
                return not_yet(
                    f"for attempt {k} your delays ran from {min(draws):.3g}s to "
                    f"{max(draws):.3g}s; full jitter stays between 0 and {ceiling:g}s",
                    "the ceiling is the capped exponential delay, min(20, 2 ** (attempt - 1))",
                )
            if max(draws) - min(draws) < 0.5 * ceiling:
                return not_yet(
                    f"for attempt {k} your delays barely vary ({min(draws):.3g}s to "
                    f"{max(draws):.3g}s): clients that failed together would retry together",
                    "draw the whole delay at random between 0 and the ceiling",
                )
        same = [full_jitter(3, random.Random(7)) for _ in range(2)]
        if same[0] != same[1]:
            return not_yet(
                "the same seed gave different delays, so a run cannot be replayed",
                "draw from the `rng` argument, not from the module-level `random`",
            )
        return passed("delays spread over [0, min(20, 2**(attempt-1))] and replay with a seed")

    return run_check(check, hint=JITTER_HINT)


JITTER_POLICY_HINT = (
    "one of RetryPolicy's constructors does exponential backoff with jitter: give it a "
    "base of 1 s, a cap of 20 s and 5 attempts"
)


async def check_jitter_policy(answer: PolicyAnswer) -> Feedback:
    """20 tasks failing at the same instant must retry at spread-out times, under the cap."""

    async def check() -> Feedback:
        policy = _policy(answer, JITTER_POLICY_HINT)
        jobs = [Job(f"client {i}", always_fails) for i in range(20)]
        run = await run_jobs(jobs, policy)
        delays = [run.delays_of(job.label) for job in jobs]
        if any(len(d) != 4 for d in delays):
            return not_yet(
                f"tasks made {sorted({len(d) + 1 for d in delays})} attempts; the exercise asks "
                "for 5",
                "max_attempts=5",
            )
        for k in range(4):
            ceiling = min(20.0, 2.0**k)
            worst = max(d[k] for d in delays)
            if worst > ceiling + TOLERANCE:
                return not_yet(
                    f"a wait before retry {k + 1} was {worst:.3g}s, above the ceiling of "
                    f"{ceiling:g}s (base 1 s, doubling, capped at 20 s)",
                    JITTER_POLICY_HINT,
                )
        distinct = len({round(d[0], 3) for d in delays})
        if distinct < 15:
            return not_yet(
                f"20 tasks failed together and their first retries came at only {distinct} "
                "different time(s): they still retry in lockstep",
                "jitter must be drawn when each retry is scheduled (by the worker's rng), not "
                "baked into the task: use RetryPolicy.exponential_jitter",
            )
        return passed(
            f"20 simultaneous failures retried at {distinct} different times, all under the cap"
        )

    return await attempt_async(check, JITTER_POLICY_HINT)


CONDITIONS_HINT = (
    "is_transient: isinstance checks, plus exc.status (429, or 500 and up) for an "
    "HTTPError; then pass the function itself as the policy's retry_on="
)


async def check_error_conditions(answer: PolicyAnswer) -> Feedback:
    """Transient errors retried to the budget, permanent ones failed at once."""

    async def check() -> Feedback:
        policy = _policy(answer, CONDITIONS_HINT)
        if policy.max_attempts < 2:
            return not_yet("the policy never retries (max_attempts=1)", CONDITIONS_HINT)
        run = await run_jobs([Job(case, raise_error, (case,)) for case in ERROR_CASES], policy)
        wrong_cases = []
        for case, (_, transient) in ERROR_CASES.items():
            made, expected = len(run.attempts_of(case)), policy.max_attempts if transient else 1
            if made != expected:
                verdict = "retried" if transient else "failed at once"
                wrong_cases.append(f"{case} ran {made}x (it should be {verdict})")
        if not wrong_cases:
            return passed("transient errors were retried, permanent ones failed at the first try")
        return not_yet(
            "; ".join(wrong_cases),
            "retry ConnectionError, TimeoutError and HTTPError 429 or 5xx; nothing else",
        )

    return await attempt_async(check, CONDITIONS_HINT)


# --- edge cases ------------------------------------------------------------------------

MANY_HINT = (
    "the task: raise ConnectionError while sitq.current_task().attempt is below 8; the "
    "policy: 8 attempts, and a cap on its waits"
)


async def check_many_retries(task: Callable[[], Any], answer: PolicyAnswer) -> Feedback:
    """A task failing its first 7 attempts must succeed on the 8th, waiting under 60 s."""

    async def check() -> Feedback:
        policy = _policy(answer, MANY_HINT)
        run = await run_jobs([Job("task", task)], policy)
        reject_stubs(run.history, MANY_HINT)
        result, attempts = run.results["task"], run.attempts_of("task")
        failures = [a for a in attempts if a.outcome != "succeeded"]
        if any(a.error_type != "ConnectionError" for a in failures):
            kinds = sorted({str(a.error_type) for a in failures})
            return not_yet(f"the task failed with {', '.join(kinds)}", MANY_HINT)
        if result is not None and result.is_success() and len(attempts) < 8:
            return not_yet(
                f"the task succeeded on attempt {len(attempts)}; it should fail 7 times first",
                "sitq.current_task().attempt tells the task which attempt it is (1, 2, ...)",
            )
        if result is None or not result.is_success():
            return not_yet(
                f"the policy gave up after {len(attempts)} attempt(s); the task needs 8",
                "max_attempts counts every attempt, the first included",
            )
        if len(attempts) > 8:
            return not_yet(f"the task needed {len(attempts)} attempts, not 8", MANY_HINT)
        waited = sum(run.delays_of("task"))
        if waited > 60 + TOLERANCE:
            return not_yet(
                f"it succeeded, but only after waiting {waited:.4g}s in total (limit 60 s)",
                "cap the backoff: RetryPolicy.exponential(1.0, cap=10.0, max_attempts=8) "
                "waits 1, 2, 4, 8, 10, 10, 10 s",
            )
        return passed(f"succeeded on attempt 8 after {waited:.4g}s of backoff in total")

    return await attempt_async(check, MANY_HINT)


DEAD_HINT = (
    "max_attempts counts every attempt; requeue_all: `await queue.dead_letters()`, then "
    "`await queue.requeue(task_id)` for each, and return the count"
)


async def check_dead_letters(
    task: Callable[[], Any],
    answer: PolicyAnswer,
    requeue_all: Callable[[TaskQueue], Awaitable[int]],
) -> Feedback:
    """An always-failing task dies after exactly 4 attempts; requeue gives 4 more."""

    async def check() -> Feedback:
        policy = _policy(answer, DEAD_HINT)
        async with sandbox() as box:
            view = box.queue.with_options(retry=policy)
            ids = [await view.enqueue(task) for _ in range(3)]
            if not await settle(box):
                return not_yet("the tasks were still retrying after 1000 attempts", DEAD_HINT)
            reject_stubs(await box.queue.history(), DEAD_HINT)
            dead = {r.task_id: r for r in await box.queue.dead_letters()}
            if set(dead) != set(ids):
                return not_yet(
                    f"{len(set(ids) - set(dead))} of 3 tasks did not end as dead letters",
                    "the task must fail every time (raise an exception on every attempt)",
                )
            counts = sorted({r.attempts for r in dead.values()})
            if counts != [4]:
                return not_yet(
                    f"the dead letters show {counts} attempt(s); the exercise asks for 4",
                    "a PermanentError is never retried; otherwise max_attempts=4 gives 4 tries",
                )
            requeued = await requeue_all(box.queue)
            statuses = {await box.queue.status(i) for i in ids}
            if requeued != 3 or statuses != {"queued"}:
                return not_yet(
                    f"requeue_all returned {requeued!r} and left the tasks {sorted(statuses)}",
                    DEAD_HINT,
                )
            await settle(box)
            again = sorted({len(await box.queue.history(i)) for i in ids})
            if again != [8]:
                return not_yet(f"after requeue the histories hold {again} attempts", DEAD_HINT)
        return passed("3 dead letters after 4 attempts each; requeued, they got 4 fresh tries")

    return await attempt_async(check, DEAD_HINT)


#: The network partition of `check_partition`, in seconds after the checker's start.
PARTITION = (5.0, 65.0)
#: When each job of the partition scenario becomes due, in seconds after the start.
PARTITION_JOBS = {"before": 0.0, "early": 10.0, "middle": 30.0, "late": 50.0, "after": 70.0}
PARTITION_HINT = (
    "the task: fail while down_from <= sitq.current_task().started_at < down_until; the "
    "policy: waits adding up to more than 55 s, in at most 10 attempts"
)


async def run_partition(task: Callable[[float, float], Any], policy: RetryPolicy) -> Run:
    """The partition scenario: the network is down from start+5 s to start+65 s, and five
    jobs `task(down_from, down_until)` are due at 0, 10, 30, 50 and 70 s."""
    start = FakeClock().now()  # where the sandbox's FakeClock starts, too
    window = (start + PARTITION[0], start + PARTITION[1])
    jobs = [Job(label, task, window, delay) for label, delay in PARTITION_JOBS.items()]
    return await run_jobs(jobs, policy)


async def check_partition(task: Callable[[float, float], Any], answer: PolicyAnswer) -> Feedback:
    """Jobs hit by the partition must fail only inside it and succeed after recovery."""

    async def check() -> Feedback:
        policy = _policy(answer, PARTITION_HINT)
        run = await run_partition(task, policy)
        reject_stubs(run.history, PARTITION_HINT)
        down_from, down_until = (run.start + t for t in PARTITION)
        for label in ("before", "after"):
            made = run.attempts_of(label)
            if len(made) != 1 or made[0].outcome != "succeeded":
                return not_yet(
                    f"the job due at t={PARTITION_JOBS[label]:g}s, while the network was up, "
                    f"did not succeed at once ({made[0].error_type}: {made[0].error_message})",
                    PARTITION_HINT,
                )
        for label in ("early", "middle", "late"):
            made = run.attempts_of(label)
            failed = [a for a in made if a.outcome != "succeeded"]
            other = [a.error_type for a in failed if a.error_type != "ConnectionError"]
            if other:
                return not_yet(f"the {label} job failed with {other[0]}", PARTITION_HINT)
            if any(not down_from <= a.started_at < down_until for a in failed):
                return not_yet(f"the {label} job failed while the network was up", PARTITION_HINT)
            if made[-1].outcome != "succeeded":
                gave_up = made[-1].finished_at - run.start
                return not_yet(
                    f"the {label} job gave up at t={gave_up:.3g}s, before the network came back "
                    f"at t={PARTITION[1]:g}s: its retries waited {sum(run.delays_of(label)):.3g}s "
                    "in total",
                    "the delays must add up to more than the outage (55 s for the early job): "
                    "more attempts, or a longer backoff",
                )
            if len(made) > 10:
                return not_yet(
                    f"the {label} job called the dead network {len(failed)} times",
                    "back off more gently: growing delays reach the end of the outage in few calls",
                )
        worst = max(len(run.attempts_of(label)) for label in PARTITION_JOBS)
        return passed(f"every job got through once the network was back (at most {worst} attempts)")

    return await attempt_async(check, PARTITION_HINT)
