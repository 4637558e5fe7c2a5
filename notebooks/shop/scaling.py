"""Task functions for notebooks/15_scaling_out.ipynb.

The notebook starts several worker processes with `python -m sitq worker URL --import
shop.scaling` and lets them drain one queue together. To check that every task ran
exactly once, and to see which process ran it, each run appends one line `ORDER PID` to
`runs.txt` in the folder it is given: a worker is another process, so it cannot tell the
notebook anything through memory. (Lesson 14's shop/reliability.py works the same way.)

The work itself is tiny on purpose: with nothing to compute, the time it takes to drain the
queue is the queue's own cost (claiming, settling, writing), which is what lesson 15 measures.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

RUNS_FILE = "runs.txt"


def log_receipt(order: int, folder: str) -> int:
    """Log the receipt of `order`: note that it ran in this process; return the process id.

    The shop's shortest job, kept short on purpose. One write to a file opened with
    O_APPEND: lines from several processes never mix.
    """
    fd = os.open(Path(folder) / RUNS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{order} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return os.getpid()


def runs(folder: str | os.PathLike[str]) -> Counter[int]:
    """How many times each order's task ran, from the folder's runs.txt."""
    path = Path(folder) / RUNS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(int(line.split()[0]) for line in lines)


def processes(folder: str | os.PathLike[str]) -> Counter[int]:
    """How many tasks each process (by its id) ran, from the folder's runs.txt."""
    path = Path(folder) / RUNS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(int(line.split()[1]) for line in lines)
