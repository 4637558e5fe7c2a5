"""Checkers for exercises/05_retry_strategies' jitter: a full-jitter delay, then a jitter policy.

Full jitter waits uniform(0, ceiling), where the ceiling is the capped exponential wait
min(20, 1 * 2 ** (attempt - 1)). A range check alone is fooled by waits of only 0 or the
ceiling, or by waits bunched in the upper half, so both checkers draw many seeded waits
and test them against that uniform distribution (Kolmogorov-Smirnov, sitq.teaching.stats).
"""

from __future__ import annotations

import dataclasses
import numbers
import random
from collections.abc import Callable, Sequence

from sitq import RetryPolicy
from sitq.teaching import Feedback, attempt, not_yet, passed
from sitq.teaching.sandbox import (
    TOLERANCE,
    Job,
    PolicyAnswer,
    always_fails,
    attempt_async,
    run_jobs,
    student_policy,
)
from sitq.teaching.stats import ks_uniform

#: Below this p-value the waits are judged "not uniform". Right answers land far above
#: it, the wrong ones far below (p < 1e-15 with these sample sizes), so a fixed seed
#: is not what makes them pass.
ALPHA = 1e-4
SAMPLES = 1000  # waits drawn per attempt number from the student's function
CLIENTS, ROUNDS = 20, 5  # the jitter policy: 20 tasks fail together, in 5 seeded runs
#: The policy is also run with this many attempts: its first 4 waits stay below 8 s, so
#: only later ones show whether the 20 s cap is there (ceilings 16, 20, 20, 20).
PROBE_ATTEMPTS = 9


def ceiling(attempt: int) -> float:
    """The capped exponential wait after failed attempt `attempt`: 1, 2, 4, 8, 16, 20, 20..."""
    return min(20.0, 1.0 * 2.0 ** (attempt - 1))


def misfit(waits: Sequence[float], top: float, where: str, hint: str) -> Feedback | None:
    """None if `waits` look like uniform(0, top); else "not yet" saying how they differ."""
    low, high = min(waits), max(waits)
    if low < -TOLERANCE or high > top + TOLERANCE:
        return not_yet(
            f"{where} the waits ran from {low:.3g}s to {high:.3g}s; full jitter stays "
            f"between 0 and {top:g}s",
            "the ceiling is the capped exponential wait, min(20, 1 * 2 ** (attempt - 1))",
        )
    fit = ks_uniform(waits, top)
    if fit.p_value >= ALPHA:
        return None
    shape, advice = _shape(waits, top)
    return not_yet(
        f"{where} the {len(waits)} waits are not spread evenly over [0, {top:g}s]: {shape} "
        f"(Kolmogorov-Smirnov test: largest gap D = {fit.statistic:.2f}, {_p(fit.p_value)})",
        advice or hint,
    )


def _p(p_value: float) -> str:
    return "p < 1e-15" if p_value < 1e-15 else f"p = {p_value:.1g}"


def _shape(waits: Sequence[float], top: float) -> tuple[str, str]:
    """What is wrong with the waits, in words, and the advice that fixes it ('' = general)."""
    low, high = min(waits), max(waits)
    values = sorted({round(w, 6) for w in waits})
    if len(values) == 1:
        return f"every one was {values[0]:g}s", (
            "each retry draws its own random wait, from 0 up to a ceiling that doubles "
            "after each failure (1, 2, 4, 8 s)"
        )
    if len(values) <= 3:
        return f"they take only the values {values}", (
            "draw any number between 0 and the ceiling, e.g. rng.uniform(0, ceiling), not "
            "a choice among a few values"
        )
    if low >= 0.4 * top:
        return f"none was below {low:.3g}s", (
            "full jitter draws from 0 up to the ceiling; starting at half the ceiling is "
            '"equal" jitter (jitter="equal" in sitq), another variant'
        )
    if high <= 0.9 * top:
        return f"none was above {high:.3g}s, though the ceiling is {top:g}s", (
            "the waits must reach up to the ceiling, min(20, 1 * 2 ** (attempt - 1)): check "
            "the base (1 s) and that the ceiling doubles after each failure (1, 2, 4, 8 s: "
            "growing by 1 s each time is linear, not exponential)"
        )
    return f"half of them were below {sorted(waits)[len(waits) // 2]:.3g}s", ""


# --- 2a: a full-jitter delay function --------------------------------------------------

JITTER_HINT = (
    "take the capped exponential wait, min(20, 2 ** (attempt - 1)), and draw a random "
    "number between 0 and it from `rng`: rng.uniform(0, ceiling)"
)


def check_full_jitter(full_jitter: Callable[[int, random.Random], float]) -> Feedback:
    """A hand-written full-jitter delay: uniform(0, min(20, 1 * 2**(attempt-1)))."""

    def check() -> Feedback:
        for k in range(1, 9):
            rng = random.Random(k)
            waits = [full_jitter(k, rng) for _ in range(SAMPLES)]
            if not all(_is_number(w) for w in waits):
                bad = next(w for w in waits if not _is_number(w))
                return not_yet(f"full_jitter({k}, rng) returned {bad!r:.60}", "return a float")
            if (problem := misfit(waits, ceiling(k), f"for attempt {k}", JITTER_HINT)) is not None:
                return problem
        same = [full_jitter(3, random.Random(7)) for _ in range(2)]
        if same[0] != same[1]:
            return not_yet(
                "the same seed gave different delays, so a run cannot be replayed",
                "draw from the `rng` argument, not from the module-level `random`",
            )
        return passed(
            f"{SAMPLES} waits per attempt fit uniform(0, min(20, 2**(attempt-1))) "
            "(Kolmogorov-Smirnov test), and replay with a seed"
        )

    return attempt(check, hint=JITTER_HINT)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --- 2b: a policy with full jitter -----------------------------------------------------

JITTER_POLICY_HINT = (
    "one of RetryPolicy's constructors does exponential backoff with jitter: give it a "
    "base of 1 s, a cap of 20 s, 5 attempts and full jitter"
)


async def check_jitter_policy(answer: PolicyAnswer) -> Feedback:
    """20 tasks failing at the same instant must retry at spread-out times, under the cap,
    and the waits before each retry must be uniform up to the doubling ceiling; given
    more attempts, the same policy must stop doubling at the 20 s cap."""

    async def check() -> Feedback:
        policy = student_policy(answer, JITTER_POLICY_HINT)
        rounds = await _waits(policy)
        if made := sorted({len(d) + 1 for waits in rounds for d in waits} - {5}):
            return not_yet(f"tasks made {made} attempts; the exercise asks for 5", "max_attempts=5")
        if (problem := _judge_waits(rounds, range(4))) is not None:
            return problem
        distinct = min(len({round(d[0], 3) for d in waits}) for waits in rounds)
        if distinct < 15:
            return not_yet(
                f"{CLIENTS} tasks failed together and their first retries came at only "
                f"{distinct} different time(s): they still retry in lockstep",
                "jitter must be drawn when each retry is scheduled (by the worker's rng), not "
                "baked into the task: use RetryPolicy.exponential_jitter",
            )
        if (problem := _judge_fit(rounds, range(4))) is not None:
            return problem
        longer = dataclasses.replace(policy, max_attempts=PROBE_ATTEMPTS)
        probe = await _waits(longer)
        if (problem := _judge_cap(probe)) is not None:
            return problem
        return passed(
            f"{CLIENTS} simultaneous failures retried at {distinct} or more different times "
            f"in each of {ROUNDS} runs; the waits before retries 1-4 fit uniform(0, 1/2/4/8 s), "
            f"and with {PROBE_ATTEMPTS} attempts those before retries 5-8 fit uniform(0, 16/20 s)"
        )

    return await attempt_async(check, JITTER_POLICY_HINT)


async def _waits(policy: RetryPolicy) -> list[list[list[float]]]:
    """Per seeded run, each of the CLIENTS tasks' measured waits (all fail at once)."""
    jobs = [Job(f"client {i}", always_fails) for i in range(CLIENTS)]
    rounds = []
    for seed in range(ROUNDS):
        run = await run_jobs(jobs, policy, seed=seed)
        rounds.append([run.delays_of(job.label) for job in jobs])
    return rounds


def _judge_waits(rounds: list[list[list[float]]], retries: range) -> Feedback | None:
    """ "not yet" if a wait before one of `retries` (0-based) is above its ceiling."""
    for k in retries:
        top, worst = ceiling(k + 1), max(d[k] for waits in rounds for d in waits)
        if worst > top + TOLERANCE:
            return not_yet(
                f"a wait before retry {k + 1} was {worst:.3g}s, above the ceiling of "
                f"{top:g}s (base 1 s, doubling, capped at 20 s)",
                "the jittered wait is drawn below the capped exponential wait, never added "
                "on top of it: " + JITTER_POLICY_HINT,
            )
    return None


def _judge_fit(rounds: list[list[list[float]]], retries: range) -> Feedback | None:
    """ "not yet" if the waits before one of `retries` (0-based) are not uniform."""
    for k in retries:
        waits = [d[k] for runs in rounds for d in runs]
        where = f"before retry {k + 1},"
        if (problem := misfit(waits, ceiling(k + 1), where, JITTER_POLICY_HINT)) is not None:
            return problem
    return None


def _judge_cap(probe: list[list[list[float]]]) -> Feedback | None:
    """ "not yet" unless the probe's later waits stay under, and fit, the capped ceiling."""
    made = {len(d) + 1 for waits in probe for d in waits}
    if made != {PROBE_ATTEMPTS}:
        return not_yet(
            f"given max_attempts={PROBE_ATTEMPTS}, your policy made {sorted(made)} attempts",
            "let max_attempts decide how many attempts there are (a delay function returning "
            "None gives up early)",
        )
    later = range(4, PROBE_ATTEMPTS - 1)
    problem = _judge_waits(probe, later)  # (a "not yet" Feedback is falsy: no `or` here)
    if problem is None:
        problem = _judge_fit(probe, later)
    if problem is None:
        return None
    return not_yet(
        f"with {PROBE_ATTEMPTS} attempts instead of 5 (the first 4 waits never reach 20 s): "
        + problem.message,
        "cap the exponential wait at 20 s before drawing: uniform(0, min(20, 2 ** (attempt - 1))); "
        "RetryPolicy.exponential_jitter takes cap=20.0",
    )
