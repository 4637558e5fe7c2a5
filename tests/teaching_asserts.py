"""Assertions shared by the tests of the exercise checkers (sitq.teaching)."""

from __future__ import annotations

from sitq.teaching import Feedback


def assert_not_yet(feedback: Feedback, *words: str) -> None:
    assert not feedback.passed, feedback
    assert feedback.hint, "a 'not yet' must come with a hint"
    text = str(feedback)
    assert text.startswith("❌ Not yet")
    for word in words:
        assert word in text, (word, text)


def assert_passed(feedback: Feedback) -> None:
    assert feedback.passed, feedback
    assert str(feedback).startswith("✅ Passed")


def stub(*args: object) -> object:
    raise NotImplementedError
