"""The retry-conditions checker: it judges `is_transient` itself, then the policy using it.

Before, the checker never called the student's `is_transient`, counted attempts against
whatever max_attempts the policy had, and threw only one 4xx and one 5xx at it: so
`status != 404`, `status in (429, 503)` and `fixed(600, max_attempts=10)` all passed.
"""

from __future__ import annotations

import pytest
from teaching_asserts import assert_not_yet, assert_passed, stub

from sitq import RetryPolicy
from sitq.teaching import retries as r
from sitq.teaching.conditions import ERROR_CASES, judge_is_transient
from sitq.teaching.retries import HTTPError

# --- right answers, in several styles ------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def by_status_first(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)
    if status is not None:
        return status == 429 or 500 <= status <= 599
    return isinstance(exc, (ConnectionError, TimeoutError))


def one_expression(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or (
        isinstance(exc, HTTPError) and (exc.status in {429} or exc.status // 100 == 5)
    )


@pytest.mark.parametrize("helper", [is_transient, by_status_first, one_expression])
@pytest.mark.parametrize(
    "policy",
    [
        lambda f: RetryPolicy.fixed(1.0, max_attempts=3, retry_on=f),
        lambda f: RetryPolicy(max_attempts=3, base=1.0, retry_on=f),
        lambda f: RetryPolicy.linear(1.0, step=0.0, max_attempts=3, retry_on=f),
        lambda f: RetryPolicy.fixed(1.0, max_attempts=3, give_up_on=lambda e: not f(e)),
    ],
    ids=["fixed", "dataclass", "linear-step-0", "give_up_on"],
)
async def test_right_answers_pass(helper, policy) -> None:
    assert_passed(await r.check_error_conditions(helper, lambda: policy(helper)))


def test_the_cases_cover_the_tempting_mistakes() -> None:
    names = set(ERROR_CASES)
    assert {"HTTPError(400)", "HTTPError(401)", "HTTPError(500)", "HTTPError(502)"} <= names
    assert {"HTTPError(431)", "HTTPError(451)", "HTTPError(499)"} <= names  # status >= 429
    assert {"TypeError", "AttributeError"} <= names  # a blacklist retries bugs
    assert {"FileNotFoundError", "PermissionError"} <= names  # isinstance(exc, OSError)
    assert "ConnectionResetError" in names  # a subclass: type(exc) == ConnectionError misses it
    judge_is_transient(is_transient)  # the reference answer agrees with every case


# --- wrong answers ---------------------------------------------------------------------------


def not_404(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status != 404
    return isinstance(exc, ConnectionError | TimeoutError)


def only_429_and_503(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status in (429, 503)
    return isinstance(exc, ConnectionError | TimeoutError)


def exact_types(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status >= 500
    return type(exc) in (ConnectionError, TimeoutError)


def no_return_for_false(exc: BaseException) -> bool:
    if is_transient(exc):
        return True
    return None  # type: ignore[return-value]  # what a missing `return False` gives


def everything(exc: BaseException) -> bool:
    return True


def from_429_up(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status >= 429
    return isinstance(exc, ConnectionError | TimeoutError)


def blacklist(exc: BaseException) -> bool:
    """What is NOT worth a retry, listed; everything else is retried, bugs included."""
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status >= 500
    return not isinstance(exc, ValueError | KeyError)


def any_oserror(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, OSError)  # ConnectionError and TimeoutError are OSErrors...


def over_500_only(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status > 500  # off by one: 500 itself is left out
    return isinstance(exc, ConnectionError | TimeoutError)


def reversed_range(exc: BaseException) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status == 429 or exc.status <= 500  # the comparison turned around
    return isinstance(exc, ConnectionError | TimeoutError)


def good(f=is_transient) -> RetryPolicy:
    return RetryPolicy.fixed(1.0, max_attempts=3, retry_on=f)


@pytest.mark.parametrize(
    ("helper", "policy", "words"),
    [
        (is_transient, RetryPolicy.fixed(600, max_attempts=10), ["up to 10 attempts", "for 3"]),
        (is_transient, RetryPolicy.fixed(600, max_attempts=3, retry_on=is_transient), ["600s"]),
        (
            not_404,
            good(not_404),
            [
                "5 of 19",
                "is_transient(HTTPError(400)) returned True",
                "HTTPError(401)) returned True",
            ],
        ),
        (only_429_and_503, good(only_429_and_503), ["HTTPError(500)) returned False", "(502))"]),
        (
            exact_types,
            good(exact_types),
            ["is_transient(ConnectionResetError) returned False", "isinstance"],
        ),
        (no_return_for_false, good(), ["returned None", "True (worth a retry) or False"]),
        # the helper is never called (or wrong), and the policy goes its own way:
        (stub, good(lambda e: is_transient(e)), ["not filled in"]),
        (
            everything,
            good(is_transient),
            ["12 of 19", "is_transient(HTTPError(400)) returned True"],
        ),
        (
            from_429_up,
            good(from_429_up),
            ["3 of 19", "HTTPError(431)) returned True", "(451)", "(499)", "not exc.status >= 429"],
        ),
        (
            blacklist,
            good(blacklist),
            ["is_transient(TypeError) returned True", "AttributeError", "a whitelist"],
        ),
        (
            any_oserror,
            good(any_oserror),
            ["FileNotFoundError) returned True", "PermissionError", "not OSError"],
        ),
        (over_500_only, good(over_500_only), ["HTTPError(500)) returned False"]),
        (reversed_range, good(reversed_range), ["HTTPError(400)) returned True", "only 429"]),
        (
            is_transient,
            RetryPolicy.fixed(1.0, max_attempts=3, retry_on=[ConnectionError, TimeoutError]),
            ["HTTPError(429) ran 1x", "says it is worth a retry", "retry_on=is_transient"],
        ),
        (is_transient, RetryPolicy.fixed(1.0, max_attempts=3), ["ran 3x", "not worth a retry"]),
        (is_transient, stub, ["not filled in"]),
    ],
    ids=[
        "600s-10-attempts",
        "600s",
        "status-not-404",
        "status-429-503",
        "type-equals",
        "returns-None",
        "helper-stub",
        "helper-says-yes",
        "status-from-429",
        "blacklist",
        "any-oserror",
        "status-over-500",
        "reversed-range",
        "policy-by-class",
        "policy-retries-all",
        "policy-stub",
    ],
)
async def test_wrong_answers_get_a_hint(helper, policy, words) -> None:
    assert_not_yet(await r.check_error_conditions(helper, policy), *words)


def not_filled_in(exc: BaseException) -> bool:
    raise NotImplementedError


def crashes_on_plain_errors(exc: BaseException) -> bool:
    return exc.status >= 500  # type: ignore[attr-defined]


async def test_bugs_in_the_policys_predicate_are_caught_before_the_queue() -> None:
    predicate = good(not_filled_in)
    assert_not_yet(await r.check_error_conditions(is_transient, predicate), "not filled in")
    buggy = good(crashes_on_plain_errors)
    assert_not_yet(await r.check_error_conditions(is_transient, buggy), "AttributeError")
