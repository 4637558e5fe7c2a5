"""Interleaved rounds: every contender of a group runs once per round, in turn.

Noise on a shared machine (another process waking up, the disk flushing) comes in bursts.
Running A, B, C, A, B, C... rather than A, A, A, B, B, B... spreads a burst over all
contenders, so their ratio stays fair even when the absolute numbers wobble. Each contender
gets a fresh empty folder per round; contenders that keep state across rounds (a prefilled
database, running worker processes) hold it themselves and release it in `close`.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Reading:
    """One measured number. `key` names it for ratios and JSON (the runner puts the
    group's key in front); `work` and `contender` are the table's first two columns, and
    an empty `work` means the group's title. `cpu`, if measured: CPU seconds (user + system)
    the process doing the work spent per 1,000 tasks, the table's CPU column."""

    key: str
    contender: str
    value: float
    unit: str
    work: str = ""
    cpu: float | None = None


@dataclass
class Timed:
    """What `timed()` read: wall-clock seconds, and this process's CPU seconds."""

    seconds: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timed]:
    """Time the block: wall clock, and the CPU (user + system) of this whole process.

    `time.process_time()` counts every thread of the process (aiosqlite's thread, huey's
    consumer threads) to the nanosecond; the usual utime and stime come in 10 ms ticks.
    """
    result = Timed()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - wall
        result.cpu = time.process_time() - cpu


def rate(
    key: str, contender: str, n: int, took: Timed, unit: str = "tasks/s", work: str = ""
) -> Reading:
    """`n` tasks in the time `took`: tasks a second, and CPU seconds per 1,000 tasks."""
    return Reading(key, contender, n / took.seconds, unit, work, cpu=1000 * took.cpu / n)


Measure = Callable[[Path], Awaitable[list[Reading]]]


class Stateful(Protocol):
    """A contender that keeps something across rounds (a prefilled file, processes)."""

    async def run(self, workdir: Path) -> list[Reading]: ...

    async def close(self) -> None: ...


@dataclass
class Contender:
    """Something measured once per round. `run` gets a fresh empty folder each round."""

    name: str
    run: Measure
    close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def keeping(cls, name: str, stateful: Stateful) -> Contender:
        """A contender whose state lives across rounds and is released by its `close`."""
        return cls(name, stateful.run, stateful.close)


@dataclass
class Group:
    """Contenders measured round-robin against each other."""

    key: str
    title: str
    contenders: list[Contender]
    rounds: int


@dataclass
class Series:
    """Every round's value of one reading, with the summary the table prints."""

    key: str
    work: str
    contender: str
    unit: str
    values: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU s per 1,000 tasks, if measured

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    def as_json(self) -> dict[str, object]:
        cpu: dict[str, object] | None = None  # None: not measured for this reading
        if self.cpu:
            cpu = {"median": self.cpu_median, "min": min(self.cpu), "max": max(self.cpu)}
            cpu["values"] = self.cpu
        return {
            "work": self.work,
            "contender": self.contender,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
            "cpu_seconds_per_1000": cpu,
        }


async def run_groups(
    groups: list[Group], root: Path, log: Callable[[str], None]
) -> dict[str, Series]:
    """Run every group in order; return the series by key, in the order first seen."""
    series: dict[str, Series] = {}
    for group in groups:
        started = time.perf_counter()
        try:
            for round_no in range(group.rounds):
                for contender in group.contenders:
                    for reading in await _run_in_fresh_dir(contender, root, round_no):
                        _add(series, group, reading)
        finally:
            for contender in group.contenders:
                if contender.close is not None:
                    await contender.close()
        log(f"  {group.title}: {time.perf_counter() - started:.1f}s")
    return series


async def _run_in_fresh_dir(contender: Contender, root: Path, round_no: int) -> list[Reading]:
    workdir = root / f"{contender.name}-{round_no}"
    workdir.mkdir(parents=True)
    try:
        return await contender.run(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _add(series: dict[str, Series], group: Group, reading: Reading) -> None:
    key = f"{group.key}.{reading.key}"
    if key not in series:
        work = reading.work or group.title
        series[key] = Series(key, work, reading.contender, reading.unit)
    series[key].values.append(reading.value)
    if reading.cpu is not None:
        series[key].cpu.append(reading.cpu)
