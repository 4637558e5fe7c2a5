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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Reading:
    """One measured number. `key` names it for ratios and JSON (the runner puts the
    group's key in front); `work` and `contender` are the table's first two columns, and
    an empty `work` means the group's title."""

    key: str
    contender: str
    value: float
    unit: str
    work: str = ""


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

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_json(self) -> dict[str, object]:
        return {
            "work": self.work,
            "contender": self.contender,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
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
