"""pytest settings for checking the lessons with nbval (`pytest --nbval notebooks/`).

The test plumbing sits beside the lessons because pytest reads a conftest.py only in or
above the folder it tests (above is the repository root, where tests/ would get it too);
the other two files are hidden (.pytest.ini, .sanitize.cfg), and neither `sitq lessons`
nor `python3 dev.py lab` (which opens such a copy) hands any of them to a learner.

nbval runs every notebook in a fresh kernel and compares each cell's output with the one
stored in the file. Two things would make that comparison fail for reasons that are not
mistakes in a lesson, so they are settled here, for every way of starting pytest:

- output that differs on every run (task ids, memory addresses, temporary paths) is
  replaced by the patterns in .sanitize.cfg before comparing;
- the order of a set of strings depends on Python's hash seed, so the kernel gets a fixed
  one (PYTHONHASHSEED=0).

Matplotlib needs nothing: the lessons that plot say `%matplotlib inline`, as in JupyterLab.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Found next to this file, so it works from the repository root and from notebooks/ alike
#: (a relative path on the command line would only work from one of them).
SANITIZE_FILE = Path(__file__).resolve().parent / ".sanitize.cfg"

#: Environment for the kernels. nbval starts each kernel as a child process, which
#: inherits os.environ as it is when the kernel starts, that is, after pytest_configure.
KERNEL_ENVIRONMENT = {
    "PYTHONHASHSEED": "0",  # a set prints in the same order on every run
    "JUPYTER_PLATFORM_DIRS": "1",  # silences jupyter_core's warning about moving its paths
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences the debugger's frozen-modules warning
}


def pytest_configure(config: pytest.Config) -> None:
    """Use .sanitize.cfg unless another file was given, and set the kernels' environment."""
    if getattr(config.option, "nbval_sanitize_with", "missing") is None:
        config.option.nbval_sanitize_with = str(SANITIZE_FILE)
    for name, value in KERNEL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
