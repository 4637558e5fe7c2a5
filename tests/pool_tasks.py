"""Tasks for issue 21, points 3 and 6: process-pool tasks and tasks with hostile objects.

Plain functions, so a worker runs them in its thread pool, or in its process pool when
enqueued with `executor="process"`. Worker processes import this module with
`--import pool_tasks` (tests/ is on their PYTHONPATH, see tests/worker_processes.py), and
the tests import it by the same name, so functions travel by reference. Each execution
that matters is recorded ("start KEY PID") in the log file of tests/reliability_tasks.py.
"""

from __future__ import annotations

import os
import time

from reliability_tasks import FILE_POLL, record


def hold(key: str, release: str, seconds: float) -> str:
    """Run until the file `release` exists; raise if it does not within `seconds`."""
    record("start", key)
    deadline = time.monotonic() + seconds
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was not created within {seconds}s")
        time.sleep(FILE_POLL)
    record("end", key)
    return key


def die_when(path: str) -> None:
    """End this process abruptly (as a segfault or the OOM killer would) once `path`
    exists: a test makes its neighbours start first."""
    while not os.path.exists(path):
        time.sleep(FILE_POLL)
    os._exit(1)


def die() -> None:
    os._exit(1)


def where() -> int:
    return os.getpid()


def echo(value: int) -> int:
    return value


class PicklingExits:
    """A value whose pickling raises SystemExit (a library calling sys.exit in __reduce__)."""

    def __reduce__(self) -> tuple[object, ...]:
        raise SystemExit("exit from __reduce__")


class StrExits(Exception):
    """An exception whose text cannot be read: its __str__ raises SystemExit."""

    def __str__(self) -> str:
        raise SystemExit("exit from __str__")


def returns_unpicklable() -> PicklingExits:
    return PicklingExits()


async def returns_unpicklable_async() -> PicklingExits:
    return PicklingExits()


def raises_str_exits() -> None:
    raise StrExits()


async def raises_str_exits_async() -> None:
    raise StrExits()


def raises_generator_exit() -> None:
    raise GeneratorExit("raised by the task")


def raises_system_exit() -> None:
    raise SystemExit(3)


async def raises_system_exit_async() -> None:
    raise SystemExit(3)


def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("raised by the task")


async def raises_keyboard_interrupt_async() -> None:
    raise KeyboardInterrupt("raised by the task")
