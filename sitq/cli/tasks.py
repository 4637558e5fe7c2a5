"""How the CLI shows tasks: `sitq show` (one task in full), `sitq dead` (one line per dead
letter), their JSON forms, and how attempts are counted across requeues.

Everything comes from the task's row as stored data (`TaskInfo`): nothing is unpickled,
so inspecting a queue never runs code from it. Stored text (a name, an error, a
traceback) has its control characters escaped (`shown`), so a row cannot forge a line or
send escape sequences to the terminal; a multi-line error or traceback keeps its lines,
each indented under its label.
"""

from __future__ import annotations

from typing import Any

from sitq.cli.common import shown
from sitq.task import Attempt, TaskInfo, to_datetime

LABEL_WIDTH = 10  # "traceback" and a space: every value starts in the same column


def tries_text(info: TaskInfo) -> str:
    """ "2 of 5": the attempts the task's retry budget counts (those since its last
    requeue), out of that budget. A requeue gives a fresh budget and keeps the numbering,
    so after one a dead letter reads "3 of 3 (6 in all)", never "6 of 3"."""
    tries = info.attempts if info.tries is None else info.tries
    text = str(tries) if info.max_attempts is None else f"{tries} of {info.max_attempts}"
    return text if tries == info.attempts else f"{text} ({info.attempts} in all)"


def dead_line(info: TaskInfo) -> str:
    """One tab-separated line: id, name, attempts, the error's first line."""
    error = f"{info.error_type}: {info.error}" if info.error_type else (info.error or "")
    first_line = error.splitlines()[0] if error else ""
    return "\t".join(shown(text) for text in (info.task_id, info.name, tries_text(info),
                                               first_line))  # fmt: skip


def task_json(info: TaskInfo, history: list[Attempt] | None = None) -> dict[str, Any]:
    """A task as JSON-ready data; times as ISO 8601 UTC strings (None when unset).
    `attempts` counts every attempt; `tries` those since the last requeue, which the
    budget `max_attempts` counts."""
    data: dict[str, Any] = {
        "id": info.task_id,
        "name": info.name,
        "status": str(info.status),
        "attempts": info.attempts,
        "tries": info.attempts if info.tries is None else info.tries,
        "max_attempts": info.max_attempts,
        "retry_policy": info.retry_policy,
        "priority": info.priority,
        "enqueued_at": _iso(info.enqueued_at),
        "due_at": _iso(info.due_at),
        "started_at": _iso(info.started_at),
        "finished_at": _iso(info.finished_at),
        "worker_id": info.worker_id,
        "error_type": info.error_type,
        "error": info.error,
        "traceback": info.traceback,
        "progress": info.progress,
        "progress_message": info.progress_message,
    }
    if history is not None:
        data["history"] = [attempt_json(a) for a in history]
    return data


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "worker_id": attempt.worker_id,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "error_type": attempt.error_type,
        "error": attempt.error_message,
        "next_delay": attempt.next_delay,
    }


def task_lines(info: TaskInfo, history: list[Attempt]) -> list[str]:
    """`sitq show`: one labelled field a line, then one line per attempt, oldest first."""
    fields: list[tuple[str, str | None]] = [
        ("id", info.task_id),
        ("task", info.name),
        ("status", str(info.status)),
        ("attempts", tries_text(info)),
        ("retry", info.retry_policy),
        ("priority", str(info.priority)),
        ("enqueued", _when(info.enqueued_at)),
        ("due", _when(info.due_at)),
        ("started", _when(info.started_at)),
        ("finished", _when(info.finished_at)),
        ("worker", info.worker_id),
        ("progress", _progress(info)),
        ("error", f"{info.error_type}: {info.error}" if info.error_type else info.error),
        ("traceback", info.traceback.rstrip("\n") if info.traceback else None),
    ]
    multi_line = {"error", "traceback"}  # other stored text stays on its one line
    lines = [
        _field(label, value, label in multi_line) for label, value in fields if value is not None
    ]
    for attempt in history:
        error = f"  {attempt.error_type}: {attempt.error_message or ''}".rstrip(": ")
        took = attempt.finished_at - attempt.started_at
        lines.append(shown(f"  #{attempt.attempt} {attempt.outcome} on {attempt.worker_id} at "
                           f"{_when(attempt.started_at)} ({took:.3f}s){error}"))  # fmt: skip
    if history:
        lines.insert(len(lines) - len(history), "history")
    return lines


def _field(label: str, value: str, multi_line: bool = False) -> str:
    """`label     value`; with `multi_line`, further lines of the value are indented to
    its column (else a newline is escaped, as every other control character is)."""
    text = shown(value, keep="\n" if multi_line else "").replace("\n", "\n" + " " * LABEL_WIDTH)
    return f"{label:<{LABEL_WIDTH}}{text}"


def _progress(info: TaskInfo) -> str | None:
    if info.progress is None:
        return None
    return f"{info.progress:.0%} {info.progress_message or ''}".rstrip()


def _when(timestamp: float | None) -> str | None:
    moment = to_datetime(timestamp)
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _iso(timestamp: float | None) -> str | None:
    moment = to_datetime(timestamp)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
