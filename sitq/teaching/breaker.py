"""Checker for the breaker exercise (exercises/06_edge_cases): a circuit breaker by hand.

The student writes a class (or a function returning an object) with sitq's own protocol,
`Breaker(failure_threshold, recovery_timeout, clock)` with `allow()`, `record_success()`
and `record_failure()`, and the checker plays stories against it on a FakeClock: failures
in a row, a success in between, a probe that succeeds, a probe that fails, failures spread
out in time. Each story is replayed with two settings (3 failures and 30 s, 5 failures and
12 s), so numbers typed into the class instead of read from its arguments do not pass.

A breaker that opens but never half-opens, one that never closes again, one that counts
failures that are not consecutive, and one that lets every call through while half open
all look right in a quick demo; each of them breaks one step of a story here, and the
"not yet" names that step and what a breaker must do there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sitq import FakeClock
from sitq.teaching import Feedback, attempt, not_yet, passed

#: The student's answer: called with the three keywords, it returns a breaker.
BreakerFactory = Callable[..., Any]

#: (failure_threshold, recovery_timeout) the stories are played with.
SETTINGS = ((3, 30.0), (5, 12.0))

BREAKER_HINT = (
    "keep a state (closed, open, half open), a count of failures in a row and the time it "
    "opened (self.clock.now()); allow() answers from the state, record_success() and "
    "record_failure() change it"
)
METHODS = ("allow", "record_success", "record_failure")


@dataclass(frozen=True)
class Step:
    """One step of a story: `allow` (must say True), `refuse` (allow() must say False),
    `ok` / `fail` (report an outcome), or `wait` (move the clock by `seconds`)."""

    action: str
    why: str = ""  # for allow / refuse: why that answer is the right one
    lesson: str = ""  # the hint when a breaker answers wrong here
    seconds: float = 0.0


COUNT_LESSON = (
    "count failures in a row: record_failure() adds one, and the breaker opens when the "
    "count reaches failure_threshold (not before, not after)"
)
RESET_LESSON = (
    "only failures in a row count: record_success() sets the count back to 0, so a "
    "success between failures starts the count again"
)
HALF_OPEN_LESSON = (
    "an open breaker half-opens once self.clock.now() - opened_at >= recovery_timeout (read "
    "the clock you are given, not time.time(): the checker moves that clock), and then "
    "allow() says True once, for the probe"
)
ONE_PROBE_LESSON = (
    "half open lets ONE probe through: allow() says True once, then False until that "
    "probe's outcome is reported"
)
CLOSE_LESSON = (
    "a probe that succeeds closes the breaker: record_success() in half open sets the state "
    "back to closed (and the failure count to 0), so calls go through again"
)
REOPEN_LESSON = (
    "a probe that fails opens the breaker again at once (one failure is enough while half "
    "open), and the recovery timeout starts again from that moment: set opened_at anew"
)
REPROBE_LESSON = (
    "a probe that fails opens the breaker again (record_failure() in half open: state open, "
    "opened_at = now), and recovery_timeout later it half-opens for a new probe"
)
OPENED_AT_LESSON = (
    "the recovery timeout counts from the moment the breaker opened (the failure that "
    "reached the threshold), not from the first failure"
)


def _calls(n: int, outcome: str, why: str, lesson: str = COUNT_LESSON) -> list[Step]:
    """n calls that are let through (allow() says True) and end with `outcome`."""
    return [step for _ in range(n) for step in (Step("allow", why, lesson), Step(outcome))]


def _trip(n: int) -> list[Step]:
    """n failures in a row from a closed breaker: it must be open at the end."""
    return [
        *_calls(n, "fail", f"fewer than {n} failures in a row: still closed"),
        Step("refuse", f"{n} failures in a row open it: calls are refused", COUNT_LESSON),
    ]


def stories(n: int, timeout: float) -> dict[str, list[Step]]:
    """The stories played against a breaker that opens at n failures, for `timeout` s."""
    almost = timeout - 0.1
    return {
        "failures in a row": [
            Step("allow", "a new breaker is closed", BREAKER_HINT),
            *_trip(n),
            Step("wait", seconds=almost),
            Step("refuse", f"only {almost:g} s of the {timeout:g} s passed: still open",
                 HALF_OPEN_LESSON),
        ],
        "a success in between": [
            *_calls(n - 1, "fail", "still closed"),
            Step("allow", f"{n - 1} failures in a row: still closed", COUNT_LESSON),
            Step("ok"),
            *_calls(n - 1, "fail", "the success set the count back to 0: still closed",
                    RESET_LESSON),
            Step("allow", f"only {n - 1} failures in a row since the success: still closed",
                 RESET_LESSON),
            Step("fail"),
            Step("refuse", f"now {n} failures in a row: open", COUNT_LESSON),
        ],
        "a probe that succeeds": [
            *_trip(n),
            Step("wait", seconds=timeout),
            Step("allow", f"{timeout:g} s after opening it half-opens: a probe goes through",
                 HALF_OPEN_LESSON),
            Step("refuse", "the probe is still out: half open admits one call", ONE_PROBE_LESSON),
            Step("ok"),
            Step("allow", "the probe succeeded: closed again", CLOSE_LESSON),
            Step("ok"),
            *_calls(n - 1, "fail", "closed again, with a fresh count: still closed",
                    CLOSE_LESSON),
            Step("allow", f"{n - 1} failures since it closed: still closed", CLOSE_LESSON),
            Step("fail"),
            Step("refuse", f"{n} new failures in a row open it again", COUNT_LESSON),
        ],
        "a probe that fails": [
            *_trip(n),
            Step("wait", seconds=timeout),
            Step("allow", f"{timeout:g} s after opening it half-opens: a probe goes through",
                 HALF_OPEN_LESSON),
            Step("fail"),
            Step("refuse", "the probe failed: open again at once", REOPEN_LESSON),
            Step("wait", seconds=almost),
            Step("refuse", f"{almost:g} s since the probe failed: still open", REOPEN_LESSON),
            Step("wait", seconds=0.1),
            Step("allow", f"{timeout:g} s since the probe failed: a new probe", REPROBE_LESSON),
            Step("ok"),
            Step("allow", "the new probe succeeded: closed again", CLOSE_LESSON),
        ],
        "failures spread out in time": [
            *[step for _ in range(n - 1)
              for step in (*_calls(1, "fail", "fewer failures than the threshold: closed"),
                           Step("wait", seconds=timeout))],
            Step("allow", f"{n - 1} failures in a row, however far apart: still closed",
                 COUNT_LESSON),
            Step("fail"),
            Step("refuse", f"{n} failures in a row: it opened just now", OPENED_AT_LESSON),
            Step("wait", seconds=almost),
            Step("refuse", f"it opened {almost:g} s ago (its first failure is older): still "
                 "open", OPENED_AT_LESSON),
        ],
    }  # fmt: skip


class _Wrong(Exception):
    """A step where the breaker did not do what the story says: the feedback to give."""

    def __init__(self, feedback: Feedback) -> None:
        super().__init__(feedback.message)
        self.feedback = feedback


def _play(make: BreakerFactory, n: int, timeout: float, name: str, steps: list[Step]) -> None:
    """Play one story against a fresh breaker; raise _Wrong at the first wrong answer."""
    clock = FakeClock()
    breaker = make(failure_threshold=n, recovery_timeout=timeout, clock=clock)
    if missing := [m for m in METHODS if not callable(getattr(breaker, m, None))]:
        raise _Wrong(
            not_yet(
                f"your breaker ({type(breaker).__name__}) has no {', '.join(missing)}() method",
                "the interface: allow() -> bool, record_success(), record_failure()",
            )
        )
    done: list[str] = []
    for step in steps:
        if step.action == "wait":
            clock.advance(step.seconds)
            done.append(f"{step.seconds:g} s")
            continue
        if step.action in ("ok", "fail"):
            (breaker.record_success if step.action == "ok" else breaker.record_failure)()
            if done and done[-1] == "a call allowed":
                done.pop()  # the call's outcome says it was allowed
            done.append("a success" if step.action == "ok" else "a failure")
            continue
        said = breaker.allow()
        if not isinstance(said, bool):
            raise _Wrong(
                not_yet(f"allow() returned {said!r:.60}", "return True (go ahead) or False")
            )
        expected = step.action == "allow"
        if said != expected:
            story = _narrate(done)
            raise _Wrong(
                not_yet(
                    f"story {name!r} (failure_threshold={n}, recovery_timeout={timeout:g}): "
                    f"after {story}, allow() said {said}; it should say {expected}, because "
                    f"{step.why}",
                    step.lesson or BREAKER_HINT,
                )
            )
        if said:
            done.append("a call allowed")


PLURALS = {"a failure": "failures", "a success": "successes", "a call allowed": "calls allowed"}


def _narrate(done: list[str]) -> str:
    """What happened so far, runs counted: "3 failures, 30 s, a call allowed"."""
    parts: list[str] = []
    for event, count in _runs(done):
        parts.append(event if count == 1 else f"{count} {PLURALS[event]}")
    return ", ".join(parts) if parts else "nothing yet"


def _runs(events: list[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for event in events:
        if runs and runs[-1][0] == event and not event.endswith(" s"):
            runs[-1] = (event, runs[-1][1] + 1)
        else:
            runs.append((event, 1))
    return runs


def check_breaker(make_breaker: BreakerFactory) -> Feedback:
    """The breaker opens at failure_threshold failures in a row (a success resets the
    count), half-opens after recovery_timeout on the given clock for one probe, closes
    when the probe succeeds and opens again, for a fresh timeout, when it fails."""

    def check() -> Feedback:
        for n, timeout in SETTINGS:
            for name, steps in stories(n, timeout).items():
                try:
                    _play(make_breaker, n, timeout, name, steps)
                except _Wrong as wrong:
                    return wrong.feedback
        return passed(
            f"all {len(stories(3, 30.0))} stories, with {SETTINGS[0][0]} failures and "
            f"{SETTINGS[0][1]:g} s and with {SETTINGS[1][0]} and {SETTINGS[1][1]:g} s: it opens "
            "after failures in a row only, half-opens for one probe on time, closes when the "
            "probe succeeds and opens again when it fails"
        )

    return attempt(check, hint=BREAKER_HINT)
