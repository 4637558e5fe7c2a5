"""Checkers for exercises/06_edge_cases: many retries, dead letters, a partition.

Each one runs the student's task *and* policy through a real queue in virtual time and
reads the attempt history, so a task that does not do what the scenario says (one that
ignores the network partition, say) is caught as surely as a policy that gives up early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sitq import FakeClock, RetryPolicy, TaskQueue
from sitq.teaching import Feedback, not_yet, passed
from sitq.teaching.sandbox import (
    TOLERANCE,
    Job,
    NotYet,
    PolicyAnswer,
    Run,
    attempt_async,
    reject_stubs,
    run_jobs,
    sandbox,
    settle,
    student_policy,
)

# --- edge cases ------------------------------------------------------------------------

MANY_HINT = (
    "the task: raise ConnectionError while sitq.current_task().attempt is below 8; the "
    "policy: 8 attempts, and a cap on its waits"
)
#: The waits must add up to at least this: 1 s per retry on average. Retrying a service
#: that is down every few milliseconds only hammers it (8 calls in 0.13 s with a 1 ms
#: doubling backoff), and "under 60 s" alone would let that pass.
MIN_TOTAL_WAIT = 7.0


async def check_many_retries(task: Callable[[], Any], answer: PolicyAnswer) -> Feedback:
    """A task failing its first 7 attempts must succeed on the 8th, having waited at least
    7 s (1 s per retry on average) and under 60 s in total."""

    async def check() -> Feedback:
        policy = student_policy(answer, MANY_HINT)
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
        off_by_one = (
            "attempts are numbered from 1: fail while attempt < 8 (attempts 1 to 7), not "
            "while attempt <= 8"
        )
        if result is not None and not result.is_success() and len(attempts) >= 8:
            return not_yet(
                f"the task failed on all {len(attempts)} attempts; it should succeed on the 8th",
                off_by_one,
            )
        if result is None or not result.is_success():
            return not_yet(
                f"the policy gave up after {len(attempts)} attempt(s); the task needs 8",
                "max_attempts counts every attempt, the first included",
            )
        if len(attempts) > 8:
            return not_yet(f"the task needed {len(attempts)} attempts, not 8", off_by_one)
        waited = sum(run.delays_of("task"))
        if waited > 60 + TOLERANCE:
            return not_yet(
                f"it succeeded, but only after waiting {waited:.4g}s in total (limit 60 s)",
                "cap the backoff: RetryPolicy.exponential(1.0, cap=10.0, max_attempts=8) "
                "waits 1, 2, 4, 8, 10, 10, 10 s",
            )
        if waited < MIN_TOTAL_WAIT - TOLERANCE:
            return not_yet(
                f"it succeeded, but the 8 calls came within {waited:.2g}s: against a service "
                "that is down, that is hammering it, not waiting for it",
                f"keep the waits short, not tiny: at least {MIN_TOTAL_WAIT:g} s in all (1 s "
                "per retry on average), e.g. a base of 1 s whose doubling a cap stops",
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
        policy = student_policy(answer, DEAD_HINT)
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


def judge_the_call(run: Run) -> None:
    """Raise NotYet at the first attempt that disobeys the network: every attempt that
    starts inside the partition must fail with ConnectionError, every other one succeed.

    Checking only that jobs get through is not enough: a call that ignores the partition
    and always answers "200 OK" gets through at once.
    """
    label_of = {task_id: label for label, task_id in run.ids.items()}
    for a in sorted(run.history, key=lambda a: a.started_at):
        t = a.started_at - run.start
        if any(abs(t - edge) < TOLERANCE for edge in PARTITION):
            continue  # on the edge, < and <= may both be meant
        at = f"the {label_of[a.task_id]} job's attempt at t={t:.3g}s"
        if PARTITION[0] < t < PARTITION[1] and a.outcome == "succeeded":
            raise NotYet(
                f"{at} succeeded while the network was down (from {PARTITION[0]:g} s to "
                f"{PARTITION[1]:g} s): your call ignores the partition",
                "raise ConnectionError when down_from <= sitq.current_task().started_at "
                "< down_until",
            )
        if PARTITION[0] < t < PARTITION[1] and a.error_type != "ConnectionError":
            raise NotYet(f"{at} failed with {a.error_type}, not ConnectionError", PARTITION_HINT)
        if not PARTITION[0] < t < PARTITION[1] and a.outcome != "succeeded":
            raise NotYet(
                f"{at} failed while the network was up ({a.error_type}: {a.error_message})",
                "fail only while the network is down, and then on every attempt: compare "
                "sitq.current_task().started_at with down_from and down_until",
            )


async def check_partition(task: Callable[[float, float], Any], answer: PolicyAnswer) -> Feedback:
    """The call fails exactly while the network is down; every job gets through once it is
    back, without calling the dead network more than 10 times."""

    async def check() -> Feedback:
        policy = student_policy(answer, PARTITION_HINT)
        run = await run_partition(task, policy)
        reject_stubs(run.history, PARTITION_HINT)
        judge_the_call(run)
        for label in ("early", "middle", "late"):
            made = run.attempts_of(label)
            failed = [a for a in made if a.outcome != "succeeded"]
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
