"""`sitq schedules`, and the periodic tasks `sitq status` lists under the counts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from sitq.cli.common import shown
from sitq.overview import ScheduleInfo


def list_schedules(schedules: list[ScheduleInfo], args: argparse.Namespace) -> int:
    """One tab-separated line per periodic task: name, task, when it ticks, missed-tick
    policy, next tick, last tick (UTC, ISO 8601), last error (or all of it as JSON)."""
    if args.json:
        print(json.dumps([_schedule_json(info) for info in schedules]))
        return 0
    for info in schedules:
        error = (info.last_error or "").splitlines()[0] if info.last_error else ""
        fields = [info.name, info.task_name, info.when, f"missed={info.missed}",
                  utc(info.next_at), utc(info.last_tick_at), error]  # fmt: skip
        print("\t".join(shown(field) for field in fields))
    if not schedules:
        print("no schedules", file=sys.stderr)
    return 0


def print_schedules(schedules: list[ScheduleInfo]) -> None:
    """Under `sitq status`'s counts: each periodic task and its next tick, if there are any."""
    if not schedules:
        return
    count = len(schedules)
    print(f"\n{count} schedule{'' if count == 1 else 's'}:")
    for info in schedules:
        print(f"  {shown(info.name)}: {shown(info.when)}, next tick {utc(info.next_at)}")


def _schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": info.name, "task": info.task_name, "every": info.every, "cron": info.cron,
        "tz": info.tz, "missed": info.missed, "next_tick": utc(info.next_at),
        "last_tick": utc(info.last_tick_at) or None, "last_task_id": info.last_task_id,
        "last_error": info.last_error,
    }  # fmt: skip


def utc(timestamp: float | None) -> str:
    """A tick as ISO 8601 in UTC, "2026-01-01T09:00:00Z"; "" for none."""
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
