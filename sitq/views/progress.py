"""A progress bar for waiting on many tasks, built on tqdm.

`tqdm.auto` draws a widget in JupyterLab and a text bar in a terminal. By default the bar
only appears on an interactive terminal, so logs of scripts, tests, CI and executed
notebooks stay clean and reproducible; pass `progress=True` to ask for it anywhere.
"""

from __future__ import annotations

import sys
from typing import Any


def interactive() -> bool:
    """True when stderr is a terminal someone is watching."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class ProgressBar:
    """A tqdm bar over `total` tasks, or nothing at all when disabled."""

    def __init__(self, total: int, enabled: bool | None = None, desc: str = "tasks") -> None:
        self._bar: Any = None
        if (interactive() if enabled is None else enabled) and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="task")

    def update(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
