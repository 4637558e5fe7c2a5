"""Task functions for notebooks/14_reliability.ipynb.

The notebook starts real workers with `python -m sitq worker DB --import
shop.reliability`, as you would start them in production with `--import
myapp.tasks`: the worker imports this module, and the notebook imports it too, so both
sides agree on what `charge_card` means.

A worker is another process, so a task cannot tell the notebook anything through memory.
Each task writes what it does as one line of `events.txt` in the folder it is given
(opened with O_APPEND, so lines from several processes never mix). The notebook reads that
file to count how often something really happened.

Every task then waits for a file named `go` in its folder: that stands for slow work, and
lets the notebook decide when the work ends (or crash the worker before it does).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

GATE_POLL = 0.01  # seconds between two looks for the `go` file: the task's own work loop


def note(folder: str, line: str) -> None:
    """Append one line to the folder's events.txt, in a single write."""
    fd = os.open(Path(folder) / "events.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def events(folder: str | os.PathLike[str]) -> list[str]:
    """The lines of the folder's events.txt, oldest first (none if it does not exist)."""
    path = Path(folder) / "events.txt"
    return path.read_text().splitlines() if path.exists() else []


async def slow_work(folder: str, gate: str = "go") -> None:
    """Stand-in for slow work: it lasts until the file `gate` appears in `folder`."""
    while not (Path(folder) / gate).exists():
        await asyncio.sleep(GATE_POLL)


async def make_thumbnail(photo: str, folder: str) -> str:
    """A task with no side effect: its only output is its return value."""
    note(folder, f"started {photo}")
    await slow_work(folder)
    return f"{photo}: thumbnail made"


async def charge_card(order_id: str, cents: int, folder: str) -> str:
    """Charge a customer, then do slower work (send the receipt, say).

    NOT idempotent: every run charges again. The charge is the events.txt line.
    """
    note(folder, f"charge {order_id} {cents}")
    await slow_work(folder)
    return f"{order_id}: paid"


async def charge_card_once(order_id: str, cents: int, folder: str) -> str:
    """The idempotent version: the charge is recorded under the ORDER's id.

    `INSERT OR IGNORE` into a table whose primary key is the order id does the check and
    the write in one atomic step: a second run finds the row and charges nothing. (With a
    real payment service, send the order id as its "idempotency key".)
    """
    with sqlite3.connect(Path(folder) / "payments.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, cents INT)")
        inserted = db.execute(
            "INSERT OR IGNORE INTO payments VALUES (?, ?)", (order_id, cents)
        ).rowcount
    db.close()
    note(folder, f"charge {order_id} {cents}" if inserted else f"skip {order_id}: already paid")
    await slow_work(folder)
    return f"{order_id}: paid"


def payments(folder: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """The rows of the idempotent task's payments table."""
    with sqlite3.connect(Path(folder) / "payments.db") as db:
        rows = db.execute("SELECT order_id, cents FROM payments ORDER BY order_id").fetchall()
    db.close()
    return rows
