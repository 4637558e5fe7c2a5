"""sitq against huey and the raw limits, on SQLite and on PostgreSQL, in one run: the table
of issues 10, 11 and 23 with their targets.

Every SQLite contender runs at the same durability (WAL, synchronous=NORMAL): sitq, huey
(through a small subclass: huey's default is FULL, an extra row for reference), and the raw
limits, plain sqlite3 INSERTs and a minimal queue one by one and in batches of 10. On
PostgreSQL the limit is the same batch-10 queue in raw asyncpg. So each ratio reads against
the peer and against the physical limit, in tasks a second and in CPU seconds per 1,000
tasks (user + system of the process doing the work).

Every group of contenders runs in interleaved rounds (A, B, C, A, B, C...), so noise on a
shared machine hits all of them alike; the table gives the median of the rounds with min and
max, then the ratios the issues set targets for, each marked pass or FAIL. SQLite databases
live in temp folders, PostgreSQL ones in fresh schemas; the full results go to a JSON file
(a temp path unless --json is given).

    .venv/bin/python benchmarks/run.py            # the full run (a few minutes)
    .venv/bin/python benchmarks/run.py --quick    # small sizes, a minute or two: the same ratios
    .venv/bin/python benchmarks/run.py --only enqueue,drain --json /tmp/bench.json

Needs the `bench` extra (huey): `pip install -e .[bench]`, part of the `dev` extra that
`python3 dev.py test` installs in .venv. Started by a Python without them (`python3
benchmarks/run.py` in a fresh clone), it makes .venv if needed and reruns itself there.
Linux only for the worker processes' CPU and the RSS readings (they read /proc). The
PostgreSQL rows (issue 11) run on the server at SITQ_BENCH_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test, each contender in a fresh schema dropped
afterwards; with no server there, they are skipped, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import _bootstrap  # noqa: F401 - first: without sitq and huey here, reruns this in .venv
import _peers as peers
import _procs as procs
import _sitq as sitq_bench
import _tasks as tasks
from _databases import PostgresStore, SQLiteStore, postgres_version
from _procs import MakeStore
from _runner import Contender, Group, Series, run_groups


@dataclass(frozen=True)
class Sizes:
    """How much work each group does; --quick shrinks everything but the depths, and keeps
    100,000 finished tasks, not 1,000,000 (the ratio's label says which)."""

    rounds: int = 5
    one_by_one: int = 2_000
    many: int = 10_000
    drain: int = 5_000
    end_to_end: int = 2_000
    pickups: int = 30  # samples per round
    depths: tuple[int, ...] = (1_000, 10_000, 100_000)
    first: int = 1_000  # tasks drained at each depth
    kept: tuple[int, int] = (1_000, 1_000_000)  # finished tasks in the file: few, many
    process_tasks: int = 5_000  # no-op tasks per round, in each group of worker processes
    io_tasks: int = 2_000  # tasks awaiting I/O per round, in the same groups
    process_end_to_end: int = 1_000
    idle_rounds: int = 3
    idle_seconds: float = 3.0
    rss_tasks: int = 100_000


QUICK = Sizes(
    rounds=3,
    one_by_one=300,
    drain=500,
    end_to_end=500,
    pickups=5,
    first=150,
    process_tasks=600,
    io_tasks=600,
    process_end_to_end=200,
    idle_rounds=1,
    idle_seconds=2.0,
    rss_tasks=3_000,
    kept=(1_000, 100_000),
)


@dataclass(frozen=True)
class Target:
    """A number from the table, or a ratio of two, with the bound the issue sets (if any)."""

    label: str
    numerator: str
    denominator: str | None = None
    op: str = ""  # ">=" or "<=", empty: no target, shown for information
    bound: float = 0.0
    cpu: bool = False  # compare the CPU column (CPU s per 1,000 tasks), not the value


IO = f"tasks awaiting {tasks.IO_SECONDS * 1000:g} ms (I/O-like)"
POSTGRES = "pg-"  # the keys of the groups that need the PostgreSQL server
PG_P50 = "pg-pickup.processes.p50"


def targets(s: Sizes) -> list[Target]:
    """The ratios the issues set targets for, and a few shown for information (no bound).

    Issue 23 compares at equal durability: huey at synchronous=NORMAL is the peer, and the
    raw queues are the limit ("(limit)" in the label); no target reads against huey FULL.
    """
    few, many = s.kept
    kept = f"{many:,} / {few:,} finished tasks kept"
    enqueue, enqueue_huey = "enqueue.sitq", "enqueue.huey_normal"
    drain, drain_huey = "drain.sitq.c10", "drain.huey_normal"
    e2e, e2e_huey = "e2e.sitq", "e2e.huey_normal"
    pg_drain, pg_raw = "pg-drain.noop.1", "pg-drain.raw_asyncpg_b10"
    return [
        Target("enqueue 1 by 1: sitq / huey NORMAL", enqueue, enqueue_huey, ">=", 1.0),
        Target("enqueue 1 by 1, CPU a task: sitq / huey NORMAL", enqueue, enqueue_huey,
               "<=", 1.0, cpu=True),
        Target("enqueue 1 by 1: sitq / raw sqlite3 INSERT (limit)", enqueue,
               "enqueue.raw_sqlite3"),
        Target("enqueue 1 by 1: sitq / raw aiosqlite", enqueue, "enqueue.aiosqlite", ">=", 0.7),
        Target("enqueue_many: sitq / raw executemany", "many.sitq", "many.raw_executemany",
               ">=", 0.6),
        Target("drain c=10: sitq / huey NORMAL", drain, drain_huey, ">=", 1.2),
        Target("drain c=10, CPU a task: sitq / huey NORMAL", drain, drain_huey, "<=", 1.0,
               cpu=True),
        Target("drain c=10: sitq / raw batch-10 queue (limit)", drain, "drain.minimal_b10",
               ">=", 0.2),
        Target("drain c=10: sitq / raw minimal queue, one by one", drain, "drain.minimal"),
        Target("end to end: sitq / huey NORMAL", e2e, e2e_huey, ">=", 1.2),
        Target("end to end, CPU a task: sitq / huey NORMAL", e2e, e2e_huey, cpu=True),
        Target("drain at depth 100k / depth 1k", "depth.sitq.100000", "depth.sitq.1000",
               ">=", 0.8),
        Target("depth 100k: sitq / raw minimal queue", "depth.sitq.100000",
               "depth.minimal.100000"),
        Target(f"counts() time, {kept}", f"kept.counts.{many}", f"kept.counts.{few}",
               "<=", 1.2),
        Target(f"drain c=10, {kept}", f"kept.drain.{many}", f"kept.drain.{few}", ">=", 0.8),
        Target("pickup p50 in-process (ms)", "pickup.in.p50", None, "<=", 2.0),
        Target("pickup p50 across processes (ms)", "pickup.processes.p50", None, "<=", 20.0),
        Target("idle worker CPU (% of a core)", "idle.sitq", None, "<=", 2.0),
        Target("SQLite drain, 4 / 1 processes, no-op tasks", "procs.noop.4", "procs.noop.1"),
        Target(f"SQLite drain, 4 / 1 processes, {IO}", "procs.io.4", "procs.io.1"),
        Target("PostgreSQL drain, 1 process: sitq / raw asyncpg batch-10 (limit)", pg_drain,
               pg_raw, ">=", 0.6),
        Target(f"PostgreSQL drain, 4 / 1 processes, {IO}", "pg-drain.io.4", "pg-drain.io.1",
               ">=", 2.5),
        Target("PostgreSQL drain, 4 / 1 processes, no-op tasks", "pg-drain.noop.4",
               "pg-drain.noop.1"),
        Target("PostgreSQL end to end, 4 / 1 processes", "pg-e2e.4", "pg-e2e.1", ">=", 1.5),
        Target("PostgreSQL pickup p50 across processes (ms)", PG_P50, None, "<=", 10.0),
        Target("RSS growth over the tasks (MB)", "memory.rss", None, "<=", 20.0),
    ]  # fmt: skip


def plan(sizes: Sizes) -> list[Group]:
    """Every group of contenders, in the order they run."""
    s, rng = sizes, random.Random(1)
    gaps = [rng.uniform(0.02, 0.1) for _ in range(s.pickups)]
    return [
        Group("enqueue", f"enqueue one by one ({s.one_by_one:,})", [
            Contender("sitq", sitq_bench.enqueue_one_by_one(s.one_by_one)),
            Contender("huey-normal", peers.huey_enqueue(s.one_by_one, normal=True)),
            Contender("raw-sqlite3", peers.raw_sqlite3_one_by_one(s.one_by_one)),
            Contender("raw-aiosqlite", peers.raw_aiosqlite_one_by_one(s.one_by_one)),
            Contender("huey-full", peers.huey_enqueue(s.one_by_one, normal=False)),
        ], s.rounds),
        Group("many", f"enqueue_many ({s.many:,})", [
            Contender("sitq", sitq_bench.enqueue_many(s.many)),
            Contender("raw-executemany", peers.raw_executemany(s.many)),
        ], s.rounds),
        Group("drain", f"drain {s.drain:,} no-op tasks", [
            Contender("sitq-c1", sitq_bench.drain(s.drain, concurrency=1)),
            Contender("sitq-c10", sitq_bench.drain(s.drain, concurrency=10)),
            Contender("huey-normal", peers.huey_drain(s.drain, normal=True)),
            Contender("minimal-b10", peers.minimal_batch_drain(s.drain)),
            Contender("minimal", peers.minimal_drain(s.drain)),
            Contender("huey-full", peers.huey_drain(s.drain, normal=False)),
        ], s.rounds),
        Group("e2e", f"end to end: enqueue, run, result ({s.end_to_end:,})", [
            Contender("sitq", sitq_bench.end_to_end(s.end_to_end)),
            Contender("huey-normal", peers.huey_end_to_end(s.end_to_end, normal=True)),
            Contender("huey-full", peers.huey_end_to_end(s.end_to_end, normal=False)),
        ], s.rounds),
        Group("pickup", "pickup", [
            Contender("in-process", sitq_bench.pickup_in_process(gaps)),
            Contender.keeping("processes", procs.ProcessPickup(gaps)),
        ], s.rounds),
        Group("depth", f"first {s.first:,} drained at a depth", _depth_contenders(s), s.rounds),
        Group("kept", "finished tasks kept", [
            Contender.keeping(f"kept-{n}", sitq_bench.KeptRows(n, s.drain)) for n in s.kept
        ], s.rounds),
        Group("procs", "SQLite, worker processes", _drain_contenders(s, SQLiteStore, "SQLite"),
              s.rounds),
        Group("pg-drain", "PostgreSQL, worker processes", _postgres_drain_contenders(s), s.rounds),
        Group("pg-e2e", f"PostgreSQL end to end: enqueue, run, result ({s.process_end_to_end:,})", [
            Contender.keeping(
                f"e2e-{count}", procs.ProcessEndToEnd(count, s.process_end_to_end, PostgresStore)
            ) for count in (1, 4)
        ], s.rounds),
        Group("pg-pickup", "PostgreSQL pickup", [
            Contender.keeping("processes", procs.ProcessPickup(gaps, PostgresStore, PG_PICKUP)),
        ], s.rounds),
        Group("idle", f"idle worker CPU over {s.idle_seconds:g}s", [
            Contender.keeping("idle", procs.IdleCpu(s.idle_seconds)),
        ], s.idle_rounds),
        Group("memory", "memory and storage", [
            Contender("sitq", sitq_bench.memory_and_storage(s.rss_tasks)),
        ], 1),
    ]  # fmt: skip


PG_PICKUP = ", PostgreSQL (LISTEN/NOTIFY)"


def _drain_contenders(s: Sizes, store: MakeStore, where: str) -> list[Contender]:
    """One and four worker processes draining no-op tasks, then tasks awaiting I/O.

    No-op tasks measure only the database: every process waits on the same store. Tasks
    that await (as most real tasks do, on the network) leave each process's concurrency
    slots busy but its CPU free, so a second machine's worth of slots should run more.
    """
    kinds = [
        ("noop", tasks.noop, s.process_tasks, NOOP),
        ("io", tasks.io_wait, s.io_tasks, IO),
    ]
    return [
        Contender.keeping(
            f"{key}-{count}",
            procs.ProcessThroughput(count, n, func, key, store, _drain_work(n, what, where)),
        )
        for key, func, n, what in kinds
        for count in (1, 4)
    ]


def _postgres_drain_contenders(s: Sizes) -> list[Contender]:
    """The worker processes on PostgreSQL, with the raw asyncpg batch-10 queue (the limit)
    right after the no-op rows it is read against."""
    contenders = _drain_contenders(s, PostgresStore, "PostgreSQL")
    work = _drain_work(s.process_tasks, NOOP, "PostgreSQL")
    raw = Contender("raw-asyncpg-b10", peers.asyncpg_batch_drain(s.process_tasks, work))
    return [*contenders[:2], raw, *contenders[2:]]


NOOP = "no-op tasks"


def _drain_work(n: int, what: str, where: str) -> str:
    return f"drain {n:,} {what}, {where}"


def _depth_contenders(s: Sizes) -> list[Contender]:
    sitq_side = [
        Contender.keeping(f"sitq-{d}", sitq_bench.DepthDrain(d, s.first)) for d in s.depths
    ]
    raw_side = [
        Contender.keeping(f"raw-{d}", peers.MinimalDepthDrain(d, s.first)) for d in s.depths
    ]
    return sitq_side + raw_side


# -- the report ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the numbers were measured on, for the table's header and the JSON."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sitq": _version("sitq-queue"),  # the distribution's name (imported as sitq)
        "aiosqlite": _version("aiosqlite"),
        "huey": _version("huey"),
        "asyncpg": _version("asyncpg"),
        "commit": _git_commit(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def ratio_text(value: float) -> str:
    """Three decimals below 10, so 0.799 is not shown as a passing-looking 0.80."""
    return f"{value:.3f}" if abs(value) < 10 else number(value)


def table(series: dict[str, Series]) -> list[str]:
    """The readings, one row each: median, min, max, unit, then the CPU column (the median
    CPU seconds per 1,000 tasks of the process doing the work, where it was measured)."""
    rows = [("work", "contender", "median", "min", "max", "unit", "CPU s/1k")]
    previous = None
    for s in series.values():
        work = "" if s.work == previous else s.work
        previous = s.work
        values = (number(s.median), number(min(s.values)), number(max(s.values)))
        cpu = "" if s.cpu_median is None else f"{s.cpu_median:.3f}"
        rows.append((work, s.contender, *values, s.unit, cpu))
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  "
        + "  ".join(f"{r[i]:>{widths[i]}}" for i in (2, 3, 4))
        + f"  {r[5]:<{widths[5]}}  {r[6]:>{widths[6]}}"
        for r in rows
    ]


def judge(target: Target, series: dict[str, Series]) -> dict[str, object]:
    """The target's value from the medians (None if a reading is missing) and its verdict."""
    value = _median(series, target.numerator, target.cpu)
    if value is not None and target.denominator is not None:
        below = _median(series, target.denominator, target.cpu)
        value = value / below if below else None
    verdict = ""
    if target.op and value is not None:
        ok = value >= target.bound if target.op == ">=" else value <= target.bound
        verdict = "pass" if ok else "FAIL"
    return {**dataclasses.asdict(target), "value": value, "verdict": verdict}


def _median(series: dict[str, Series], key: str, cpu: bool) -> float | None:
    """The median of a reading, or of its CPU column; None if it was not measured."""
    if key not in series:
        return None
    return series[key].cpu_median if cpu else series[key].median


def ratio_lines(judged: list[dict[str, object]]) -> list[str]:
    width = max(len(str(j["label"])) for j in judged)
    lines = []
    for j in judged:
        value = "n/a" if j["value"] is None else ratio_text(float(j["value"]))  # type: ignore[arg-type]
        target = f"(target {j['op']} {j['bound']:g})" if j["op"] else ""
        lines.append(f"{j['label']:<{width}}  {value:>7}  {target:<18} {j['verdict']}".rstrip())
    return lines


def report(series: dict[str, Series], info: dict[str, str], mode: str, sizes: Sizes) -> list[str]:
    judged = [judge(t, series) for t in targets(sizes) if _present(t, series)]
    header = (
        f"sitq {info['sitq']} ({info['commit']}), {mode} mode, medians of {sizes.rounds} "
        f"interleaved rounds; {info['cores']} cores {info['cpu']}, Python {info['python']}, "
        f"SQLite {info['sqlite']}, huey {info['huey']}, aiosqlite {info['aiosqlite']}"
    )
    if "postgresql" in info:
        header += f", PostgreSQL {info['postgresql']}, asyncpg {info['asyncpg']}"
    cpu_note = (
        "CPU s/1k: CPU seconds (user + system) per 1,000 tasks of the process doing the "
        "work: this one, or the worker processes (not the PostgreSQL server's)"
    )
    ratios_title = "ratios of the medians, same run (CPU: of the CPU column; limit: a raw queue)"
    return [
        header, "", *table(series), cpu_note, "", ratios_title, *ratio_lines(judged)
    ]  # fmt: skip


def _present(target: Target, series: dict[str, Series]) -> bool:
    return target.numerator in series


# -- the command -----------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, a minute or two: the same rows and ratios",
    )
    parser.add_argument("--json", type=Path, help="where to write the results (default: temp)")
    parser.add_argument("--rounds", type=int, help="override the rounds per group")
    parser.add_argument("--only", help="comma-separated group keys, e.g. enqueue,drain")
    return parser.parse_args(argv)


def chosen_groups(args: argparse.Namespace, sizes: Sizes) -> list[Group]:
    groups = plan(sizes)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {g.key for g in groups}
        if unknown:
            raise SystemExit(
                f"unknown group(s) {sorted(unknown)}; known: {[g.key for g in groups]}"
            )
        groups = [g for g in groups if g.key in wanted]
    return groups


def without_postgres(groups: list[Group], info: dict[str, str]) -> tuple[list[Group], str]:
    """The groups that can run, and why the PostgreSQL ones cannot ("" if they can).

    The server is asked only when a PostgreSQL group is wanted; its version goes in `info`.
    """
    if not any(g.key.startswith(POSTGRES) for g in groups):
        return groups, ""
    try:
        info["postgresql"] = asyncio.run(postgres_version())
    except ConnectionError as exc:
        info["postgresql"] = "not reachable"
        return [g for g in groups if not g.key.startswith(POSTGRES)], str(exc)
    return groups, ""


def log(line: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    mode = "quick" if args.quick else "full"
    info = machine()
    log(f"sitq benchmarks, {mode} mode")
    groups, skipped = without_postgres(chosen_groups(args, sizes), info)
    if skipped:
        log(f"PostgreSQL rows skipped: {skipped}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sitq-bench-") as tmp:
        series = asyncio.run(run_groups(groups, Path(tmp), log))
    log(f"done in {time.perf_counter() - started:.0f}s")
    print("\n".join(report(series, info, mode, sizes)))
    if skipped:
        print(f"\nPostgreSQL rows skipped: {skipped}")
    out = args.json or Path(tempfile.mkstemp(prefix="sitq-bench-", suffix=".json")[1])
    document = {
        "mode": mode,
        "machine": info,
        "sizes": dataclasses.asdict(sizes),
        "series": {key: s.as_json() for key, s in series.items()},
        "targets": [judge(t, series) for t in targets(sizes)],
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
