"""Checkers for the notebooks' "Try it yourself" exercises.

Each checker looks at what a student built and answers with `Feedback`: a clear pass, or
"not yet" with a hint. A checker never raises on a wrong answer, so an exercise notebook
runs top to bottom before it is solved, and the student sees where they stand.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feedback:
    """The verdict of one checker."""

    passed: bool
    message: str
    hint: str = ""

    def __str__(self) -> str:
        if self.passed:
            return f"✅ Passed: {self.message}"
        text = f"❌ Not yet: {self.message}"
        return f"{text}\n   Hint: {self.hint}" if self.hint else text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1b7f2a" if self.passed else "#b3261e"
        body = html.escape(str(self)).replace("\n", "<br>")
        return f'<div style="color:{colour};font-family:monospace">{body}</div>'

    def __bool__(self) -> bool:
        return self.passed


def passed(message: str) -> Feedback:
    return Feedback(True, message)


def not_yet(message: str, hint: str = "") -> Feedback:
    return Feedback(False, message, hint)


def attempt(check: Callable[[], Feedback], *, hint: str = "") -> Feedback:
    """Run a check, turning a NotImplementedError or a crash into "not yet" feedback.

    An exercise stub raises NotImplementedError until the student fills it in; any other
    exception is reported by name so the student can find it.
    """
    try:
        return check()
    except NotImplementedError:
        return not_yet("the exercise is not filled in yet (it raises NotImplementedError)", hint)
    except Exception as exc:  # a student's bug: report it, do not crash the notebook
        return not_yet(f"your code raised {type(exc).__name__}: {exc}", hint)


def close_enough(actual: Any, expected: Any, tolerance: float = 1e-9) -> bool:
    """Compare numbers or lists of numbers with a tolerance."""
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(close_enough(a, e, tolerance) for a, e in zip(actual, expected, strict=True))
        )
    try:
        return abs(float(actual) - float(expected)) <= tolerance
    except (TypeError, ValueError):
        return False


# --- a gate the notebook holds, so a task can be watched while it runs ----------------

_GATES: dict[str, Gate] = {}


class Gate:
    """A door a notebook holds shut, so a task stays *running* while the student looks.

    A task gets a pickled copy of what it touches, so an `asyncio.Event` from a notebook
    would arrive as a copy nobody can set. A Gate travels by its name and, in the process
    that made it (a worker inside the notebook), comes back as the very same object.
    In the task: `await gate.wait()`. In the notebook: `await gate.reached()`, look
    around, then `gate.open()`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._arrived = asyncio.Event()
        self._opened = asyncio.Event()
        _GATES[name] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_gate_named, (self.name,))

    def __repr__(self) -> str:
        state = "open" if self._opened.is_set() else "closed"
        return f"Gate({self.name!r}, {state})"

    async def wait(self) -> None:
        """Called by the task: say "I am here", then wait until the notebook opens."""
        self._arrived.set()
        await self._opened.wait()

    async def reached(self, timeout: float = 5.0) -> None:
        """Called by the notebook: return once a task waits at this gate."""
        await asyncio.wait_for(self._arrived.wait(), timeout)
        await asyncio.sleep(0)  # let writes the task began first (e.g. progress) go ahead

    def open(self) -> None:
        """Let every task waiting here (and any that comes later) go on."""
        self._opened.set()


def _gate_named(name: str) -> Gate:
    try:
        return _GATES[name]
    except KeyError:
        raise LookupError(
            f"no Gate named {name!r} in this process: a Gate only works with a worker "
            "running in the same process (the notebook's own worker)"
        ) from None
