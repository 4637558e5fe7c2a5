"""Retry policies: which failures deserve another attempt, and how long to wait first.

A failed attempt raises two separate questions, answered here by pure code (no I/O, no
asyncio, no clock), so every rule can be printed, plotted and tested in isolation:

1. *Should it run again?* `RetryPolicy.should_retry` classifies the error: a
   `PermanentError` never, a `Retry` always (while attempts remain), others by the
   policy's `retry_on` / `give_up_on` lists.
2. *After how long?* `RetryPolicy.delay` gives the backoff. Waiting longer after each
   failure gives a struggling service room to recover; random jitter stops a crowd of
   clients that failed together from all retrying at the same instant.

Randomness only ever comes from the `random.Random` you pass in, so a seed replays the
same schedule: `policy.preview(seed=0)` is what a notebook plots.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sitq.policy.classify import (
    ErrorMatcher,
    ErrorSpec,
    ErrorTest,
    PermanentError,
    Retry,
    TaskTimeout,
    TransientError,
    WorkerLost,
    as_seconds,
    error_matcher,
    is_number,
)

__all__ = [
    "NO_RETRY", "ErrorMatcher", "ErrorSpec", "ErrorTest", "PermanentError", "Retry",
    "RetryPolicy", "TaskTimeout", "TransientError", "WorkerLost", "error_matcher",
]  # fmt: skip

DelayFunction = Callable[[int, BaseException | None], float | None]


BACKOFFS = ("fixed", "linear", "exponential", "exponential_jitter", "custom")
JITTERS = ("full", "equal", "decorrelated")


@dataclass(frozen=True, repr=False)
class RetryPolicy:
    """How many attempts a task gets, which errors are retried, and the wait before each.

    Build one with a classmethod (`fixed`, `linear`, `exponential`, `exponential_jitter`,
    `custom`); `RetryPolicy(max_attempts=1)` means "run once, never retry". `max_attempts`
    counts every attempt, the first one included. Policies are immutable values, so one
    can be shared by many tasks and workers.
    """

    max_attempts: int = 1
    backoff: str = "fixed"
    base: float = 0.0
    step: float = 0.0
    factor: float = 2.0
    cap: float | None = None
    jitter: str | None = None
    fn: DelayFunction | None = None
    retry_on: ErrorSpec = None
    give_up_on: ErrorSpec = None
    _retry_match: ErrorMatcher | None = field(init=False, compare=False, default=None)
    _give_up_match: ErrorMatcher | None = field(init=False, compare=False, default=None)

    def __post_init__(self) -> None:
        _check_max_attempts(self.max_attempts)
        if self.backoff not in BACKOFFS:
            raise ValueError(f"backoff must be one of {', '.join(BACKOFFS)}; got {self.backoff!r}")
        self._set("base", as_seconds("base delay", self.base))
        self._set("step", as_seconds("step", self.step))
        if self.cap is not None:
            self._set("cap", as_seconds("cap", self.cap))
            if self.cap < self.base:
                raise ValueError(
                    f"cap ({self.cap:g}s) is below the base delay ({self.base:g}s), so it "
                    "would cut every delay; raise cap or lower base"
                )
        if not (is_number(self.factor) and math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(
                f"factor must be a finite number >= 1 (delays must not shrink); got {self.factor!r}"
            )
        self._set("factor", float(self.factor))
        if self.backoff == "exponential_jitter" and self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}; got {self.jitter!r}")
        if self.backoff == "custom" and not callable(self.fn):
            raise TypeError(
                f"custom needs a function fn(attempt, exc) -> float | None; got {self.fn!r}"
            )
        for name in ("retry_on", "give_up_on"):
            spec = getattr(self, name)
            if isinstance(spec, list | set | frozenset):  # keep the policy hashable
                self._set(name, tuple(spec))
        self._set("_retry_match", error_matcher(self.retry_on, "retry_on"))
        self._set("_give_up_match", error_matcher(self.give_up_on, "give_up_on"))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ may normalise

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def fixed(
        cls,
        delay: float,
        *,
        max_attempts: int = 3,
        retry_on: ErrorSpec = None,
        give_up_on: ErrorSpec = None,
    ) -> RetryPolicy:
        """The same wait every time: delay, delay, delay."""
        return cls(max_attempts, "fixed", base=delay, retry_on=retry_on, give_up_on=give_up_on)

    @classmethod
    def linear(
        cls,
        base: float,
        *,
        step: float | None = None,
        max_attempts: int = 3,
        cap: float | None = None,
        retry_on: ErrorSpec = None,
        give_up_on: ErrorSpec = None,
    ) -> RetryPolicy:
        """A wait that grows by `step` (default: base) each time: base, base+step, ..."""
        step = base if step is None else step
        return cls(
            max_attempts,
            "linear",
            base=base,
            step=step,
            cap=cap,
            retry_on=retry_on,
            give_up_on=give_up_on,
        )

    @classmethod
    def exponential(
        cls,
        base: float,
        *,
        factor: float = 2.0,
        cap: float | None = None,
        max_attempts: int = 5,
        retry_on: ErrorSpec = None,
        give_up_on: ErrorSpec = None,
    ) -> RetryPolicy:
        """A wait multiplied by `factor` each time, never above `cap`: 1, 2, 4, 8..."""
        return cls(
            max_attempts,
            "exponential",
            base=base,
            factor=factor,
            cap=cap,
            retry_on=retry_on,
            give_up_on=give_up_on,
        )

    @classmethod
    def exponential_jitter(
        cls,
        base: float,
        *,
        factor: float = 2.0,
        cap: float | None = None,
        jitter: str = "full",
        max_attempts: int = 5,
        retry_on: ErrorSpec = None,
        give_up_on: ErrorSpec = None,
    ) -> RetryPolicy:
        """Exponential backoff with random spread (AWS Architecture Blog's jitter variants).

        full: uniform(0, e); equal: e/2 + uniform(0, e/2), where e is the capped exponential
        delay; decorrelated: min(cap, uniform(base, 3 * previous delay)).
        """
        return cls(
            max_attempts,
            "exponential_jitter",
            base=base,
            factor=factor,
            cap=cap,
            jitter=jitter,
            retry_on=retry_on,
            give_up_on=give_up_on,
        )

    @classmethod
    def custom(
        cls,
        fn: DelayFunction,
        *,
        max_attempts: int = 5,
        retry_on: ErrorSpec = None,
        give_up_on: ErrorSpec = None,
    ) -> RetryPolicy:
        """Your own rule: `fn(attempt, exc)` returns the delay, or None to give up."""
        return cls(max_attempts, "custom", fn=fn, retry_on=retry_on, give_up_on=give_up_on)

    # --- how long to wait ------------------------------------------------------------

    def delay(
        self,
        attempt: int,
        exc: BaseException | None = None,
        rng: random.Random | None = None,
        previous: float | None = None,
    ) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based); None = give up.

        Only jitter draws from `rng` (default: a fresh, unseeded Random). `previous` is the
        delay chosen last time, which decorrelated jitter grows from.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt is 1-based (1 = the first attempt failed); got {attempt!r}")
        if self.backoff == "custom":
            return self._custom_delay(attempt, exc)
        if self.backoff == "exponential_jitter":
            return self._jittered(attempt, rng or random.Random(), previous)
        if self.backoff == "linear":
            return self._capped(self.base + self.step * (attempt - 1))
        if self.backoff == "exponential":
            return self._exponential(attempt)
        return self.base

    def _capped(self, seconds: float) -> float:
        return seconds if self.cap is None else min(seconds, self.cap)

    def _exponential(self, attempt: int) -> float:
        try:
            raw = self.base * self.factor ** (attempt - 1) if self.base else 0.0
        except OverflowError:  # factor ** 2000 does not fit in a float
            raw = math.inf
        return self._capped(raw)

    def _jittered(self, attempt: int, rng: random.Random, previous: float | None) -> float:
        if self.jitter == "decorrelated":
            last = self.base if previous is None else max(previous, self.base)
            return self._capped(rng.uniform(self.base, last * 3))
        ceiling = self._exponential(attempt)
        if self.jitter == "equal":
            return ceiling / 2 + rng.uniform(0, ceiling / 2)
        return rng.uniform(0, ceiling)

    def _custom_delay(self, attempt: int, exc: BaseException | None) -> float | None:
        assert self.fn is not None
        seconds = self.fn(attempt, exc)
        return None if seconds is None else as_seconds("the custom retry function's delay", seconds)

    def preview(self, n: int | None = None, *, seed: int = 0) -> list[float]:
        """The delays before the first `n` retries (default: all max_attempts - 1 of them).

        Never more than the policy would really make, and shorter if it gives up early.
        The same seed gives the same list; no exception is passed (custom fns get None).
        """
        n = self.max_attempts - 1 if n is None else min(n, self.max_attempts - 1)
        rng, delays, previous = random.Random(seed), [], None
        for attempt in range(1, n + 1):
            previous = self.delay(attempt, None, rng, previous)
            if previous is None:
                break
            delays.append(previous)
        return delays

    # --- whether to retry at all -----------------------------------------------------

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """True if failed attempt `attempt` (1-based), ended by `exc`, earns another try."""
        if attempt >= self.max_attempts:
            return False  # the budget is spent, whatever the error
        if isinstance(exc, Retry):
            return True  # the task asked for it explicitly
        if isinstance(exc, PermanentError):
            return False
        if self._give_up_match is not None and self._give_up_match(exc):
            return False  # give_up_on wins over retry_on
        if self._retry_match is not None:
            return self._retry_match(exc)
        return isinstance(exc, Exception)  # not KeyboardInterrupt, SystemExit...

    def next_delay(
        self,
        attempt: int,
        exc: BaseException,
        rng: random.Random | None = None,
        previous: float | None = None,
    ) -> float | None:
        """Both questions at once: None to give up, else the seconds before the retry."""
        if not self.should_retry(exc, attempt):
            return None
        if isinstance(exc, Retry) and exc.delay is not None:
            return exc.delay
        return self.delay(attempt, exc, rng, previous)

    def __repr__(self) -> str:
        """Reads like the call that builds the policy, e.g. RetryPolicy.fixed(2.0, ...)."""
        if self.backoff == "fixed" and self.base == 0:
            head, args = "RetryPolicy(", []
        else:
            head = f"RetryPolicy.{self.backoff}("
            args = [repr(self.fn) if self.backoff == "custom" else repr(self.base)]
        if self.backoff == "linear":
            args.append(f"step={self.step!r}")
        if self.backoff.startswith("exponential"):
            args.append(f"factor={self.factor!r}")
        if self.cap is not None:
            args.append(f"cap={self.cap!r}")
        if self.jitter is not None:
            args.append(f"jitter={self.jitter!r}")
        args.append(f"max_attempts={self.max_attempts}")
        for name in ("retry_on", "give_up_on"):
            if getattr(self, name) is not None:
                args.append(f"{name}={getattr(self, name)!r}")
        return head + ", ".join(args) + ")"


def _check_max_attempts(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"max_attempts must be an int >= 1 (it counts attempts, the first included; "
            f"1 = never retry); got {value!r}"
        )


#: The default: run once, never retry. A plain failure is final at once.
NO_RETRY = RetryPolicy(max_attempts=1)
