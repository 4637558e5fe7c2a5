"""Checker for the retry conditions exercise: `is_transient(exc)` and the policy using it.

Both halves are judged: the student's `is_transient` is called on nineteen errors, each
one picked for a mistake it reveals (a 400 and a 401 for `status != 404`, a 500 and a 502
for `status in (429, 503)`, a 431, a 451 and a 499 for `status >= 429`, a
ConnectionResetError for `type(exc) == ConnectionError`, a TypeError and an
AttributeError for a blacklist such as `not isinstance(exc, ValueError | KeyError)`, a
FileNotFoundError and a PermissionError for `isinstance(exc, OSError)`); then the policy
runs those errors through a real queue, where the attempts each one got, and the waits
between them, must be what "3 attempts, 1 s apart, retrying only what is_transient
accepts" means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sitq.teaching import Feedback, not_yet, passed
from sitq.teaching.sandbox import (
    TOLERANCE,
    Job,
    NotYet,
    PolicyAnswer,
    attempt_async,
    run_jobs,
    seconds,
    student_policy,
)


class HTTPError(Exception):
    """A failed HTTP call with its status code (404 not found, 429 slow down, 503...)."""

    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        super().__init__(message or f"HTTP {status}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, str(self)))


@dataclass(frozen=True)
class ErrorCase:
    """An error the checker throws, whether a retry may help, and why."""

    make: Callable[[], BaseException]
    transient: bool
    why: str
    lesson: str = ""  # the hint for the mistake that gets this case wrong ("" = general)


def _http(status: int, text: str) -> Callable[[], BaseException]:
    return lambda: HTTPError(status, f"HTTP {status} {text}")


#: The hints for the mistakes the cases below reveal (the first wrong case's is given).
FOUR_XX = (
    'a 4xx status says the request itself is wrong, and only 429 ("too many requests") '
    "passes with time: test exc.status == 429 or exc.status >= 500"
)
FROM_429 = (
    'of the 4xx codes only 429 says "try later": test exc.status == 429 or '
    "exc.status >= 500, not exc.status >= 429 (431, 451 and 499 are the client's own mistakes)"
)
BLACKLIST = (
    "list what is worth a retry (a whitelist: ConnectionError, TimeoutError, 429, 5xx), not "
    "what is not: a blacklist retries every error you did not think of, bugs included"
)
NOT_OSERROR = (
    "ConnectionError and TimeoutError are OSErrors, but so are FileNotFoundError and "
    "PermissionError, which waiting never fixes: test the two classes, not OSError"
)

#: The errors `check_error_conditions` throws at the answer, by name.
ERROR_CASES: dict[str, ErrorCase] = {
    "ConnectionError": ErrorCase(
        lambda: ConnectionError("connection refused"), True, "the next connection may work"
    ),
    "ConnectionResetError": ErrorCase(
        lambda: ConnectionResetError("connection reset by peer"),
        True,
        "it is a ConnectionError too (a subclass): isinstance() sees that, type(exc) == does not",
    ),
    "TimeoutError": ErrorCase(lambda: TimeoutError("read timed out"), True, "the next may not"),
    "HTTPError(429)": ErrorCase(_http(429, "too many requests"), True, "slow down, then retry"),
    "HTTPError(500)": ErrorCase(
        _http(500, "internal server error"), True, "a 5xx is server trouble, which passes"
    ),
    "HTTPError(502)": ErrorCase(
        _http(502, "bad gateway"), True, "every 5xx is server trouble, not only 503"
    ),
    "HTTPError(503)": ErrorCase(_http(503, "service unavailable"), True, "a 5xx passes"),
    "HTTPError(400)": ErrorCase(
        _http(400, "bad request"), False, "the same request will be just as bad next time", FOUR_XX
    ),
    "HTTPError(401)": ErrorCase(
        _http(401, "unauthorized"), False, "asking again will not log you in", FOUR_XX
    ),
    "HTTPError(404)": ErrorCase(
        _http(404, "not found"), False, "it will not appear by waiting", FOUR_XX
    ),
    "HTTPError(431)": ErrorCase(
        _http(431, "request header fields too large"),
        False,
        "the headers stay too large however long you wait",
        FROM_429,
    ),
    "HTTPError(451)": ErrorCase(
        _http(451, "unavailable for legal reasons"), False, "the law will not change", FROM_429
    ),
    "HTTPError(499)": ErrorCase(
        _http(499, "client closed request"), False, "a 4xx is the client's side", FROM_429
    ),
    "ValueError": ErrorCase(
        lambda: ValueError("invalid literal for int(): 'abc'"), False, "bad data stays bad"
    ),
    "KeyError": ErrorCase(lambda: KeyError("customer_id"), False, "a missing key stays missing"),
    "TypeError": ErrorCase(
        lambda: TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        False,
        "it is a bug in the code, which runs the same way next time",
        BLACKLIST,
    ),
    "AttributeError": ErrorCase(
        lambda: AttributeError("'NoneType' object has no attribute 'email'"),
        False,
        "it is a bug in the code, which runs the same way next time",
        BLACKLIST,
    ),
    "FileNotFoundError": ErrorCase(
        lambda: FileNotFoundError(2, "No such file or directory", "invoice.pdf"),
        False,
        "the file will not appear by waiting",
        NOT_OSERROR,
    ),
    "PermissionError": ErrorCase(
        lambda: PermissionError(13, "Permission denied", "/var/spool/out"),
        False,
        "the permissions stay the same",
        NOT_OSERROR,
    ),
}

ATTEMPTS, WAIT = 3, 1.0  # what the exercise asks: 3 attempts, 1 s apart

CONDITIONS_HINT = (
    "is_transient: isinstance checks, plus exc.status (429, or 500 and up) for an "
    "HTTPError; then pass the function itself as the policy's retry_on="
)


async def raise_error(case: str) -> None:
    """The task the checker enqueues: raise the error named `case` in ERROR_CASES."""
    raise ERROR_CASES[case].make()


def judge_is_transient(is_transient: Callable[[BaseException], bool]) -> None:
    """Raise NotYet unless `is_transient` classifies every error in ERROR_CASES right."""
    wrong, lessons = [], []
    for name, case in ERROR_CASES.items():
        verdict = is_transient(case.make())
        if not isinstance(verdict, bool):
            raise NotYet(
                f"is_transient({name}) returned {verdict!r:.60}",
                "return True (worth a retry) or False, on every path through the function",
            )
        if verdict != case.transient:
            wrong.append(f"is_transient({name}) returned {verdict}, but {case.why}")
            lessons.append(case.lesson)
    if wrong:
        raise NotYet(
            f"{len(wrong)} of {len(ERROR_CASES)} errors were judged wrong: " + "; ".join(wrong[:3]),
            next((lesson for lesson in lessons if lesson), CONDITIONS_HINT),
        )


async def check_error_conditions(
    is_transient: Callable[[BaseException], bool], answer: PolicyAnswer
) -> Feedback:
    """is_transient right on every error; the policy: 3 attempts, 1 s apart, for exactly
    the errors is_transient accepts, and 1 attempt for the others."""

    async def check() -> Feedback:
        judge_is_transient(is_transient)
        policy = student_policy(answer, CONDITIONS_HINT)
        for case in ERROR_CASES.values():
            policy.should_retry(case.make(), 1)  # a predicate's bug shows here, not in a worker
        if policy.max_attempts != ATTEMPTS:
            return not_yet(
                f"the policy makes up to {policy.max_attempts} attempts; the exercise asks "
                f"for {ATTEMPTS}",
                "max_attempts counts every attempt, the first included: 3 = 1 try + 2 retries",
            )
        run = await run_jobs([Job(name, raise_error, (name,)) for name in ERROR_CASES], policy)
        wrong = []
        for name, case in ERROR_CASES.items():
            made = len(run.attempts_of(name))
            if made != (ATTEMPTS if case.transient else 1):
                says = "worth" if case.transient else "not worth"
                wrong.append(
                    f"{name} ran {made}x, though your is_transient says it is {says} a retry"
                )
        if wrong:
            return not_yet(
                "; ".join(wrong[:3]),
                "the policy must ask your function: RetryPolicy.fixed(..., retry_on=is_transient)",
            )
        waits = run.delays_of("ConnectionError")
        if any(abs(w - WAIT) > TOLERANCE for w in waits):
            return not_yet(
                f"the queue waited {seconds(waits)} between attempts; the exercise asks for "
                f"attempts {WAIT:g} s apart",
                "RetryPolicy.fixed(1.0, ...) waits 1 s before every retry",
            )
        transient = sum(case.transient for case in ERROR_CASES.values())
        return passed(
            f"is_transient is right on all {len(ERROR_CASES)} errors, and the policy retried "
            f"the {transient} transient ones {ATTEMPTS} times, 1 s apart, and failed the "
            f"other {len(ERROR_CASES) - transient} at the first try"
        )

    return await attempt_async(check, CONDITIONS_HINT)
