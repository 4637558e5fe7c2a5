"""A progress bar for waiting on many tasks, built on tqdm.

`tqdm.auto` draws a widget in JupyterLab and a text bar in a terminal. By default the bar
only appears on an interactive terminal, so logs of scripts, tests, CI and executed
notebooks stay clean and reproducible; pass `progress=True` to ask for it anywhere.

In a notebook the widget is replaced, when the wait ends, by one line of text
("tasks: 20/20 finished"). A saved notebook keeps only a widget's text as it was when the
widget was drawn ("0/20"), so without that line a static copy (GitHub, nbviewer, an
executed lesson) would show a bar that never moved. The line uses public APIs only:
tqdm.notebook's `display=False` and `container`, and an IPython display handle.
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
        self._handle: Any = None  # the notebook display the widget sits in, if any
        self._total, self._desc = total, desc
        if not (interactive() if enabled is None else enabled) or total <= 0:
            return
        from tqdm.auto import tqdm

        if _is_notebook_bar(tqdm):
            from IPython import display as ipython_display

            show: Any = ipython_display.display  # untyped in IPython
            self._bar = tqdm(total=total, desc=desc, unit="task", display=False)
            self._handle = show(self._bar.container, display_id=True)
        else:
            self._bar = tqdm(total=total, desc=desc, unit="task")

    def update(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is None:
            return
        finished = self._bar.n
        self._bar.close()
        if self._handle is not None:
            text = f"{self._desc}: {finished}/{self._total} finished"
            self._handle.update({"text/plain": text}, raw=True)


def _is_notebook_bar(tqdm: Any) -> bool:
    """True when tqdm.auto chose the Jupyter widget (a kernel with ipywidgets)."""
    from tqdm.notebook import tqdm as notebook_tqdm

    return issubclass(tqdm, notebook_tqdm)
