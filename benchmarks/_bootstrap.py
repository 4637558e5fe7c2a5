"""Let `python3 benchmarks/run.py` work from a fresh clone, with any Python 3.11+.

The benchmark needs sitq and its `bench` extra (huey), which live in the project's virtual
environment, `.venv` (made by `python3 dev.py test` or `python3 dev.py lab`). Started by
another Python that lacks them, `run_in_project_env` makes that environment if it is missing
(with dev.py's own `ensure_venv`) and runs the same command again with its Python, so the
benchmark measures the checkout it sits in and nothing has to be installed by hand.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("sitq", "aiosqlite", "huey")


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _dev_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sitq_dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_project_env() -> None:
    """Return if this Python has what the benchmark needs; else run it again in .venv."""
    missing = missing_modules()
    if not missing:
        return
    dev = _dev_py()
    if Path(sys.prefix).resolve() == Path(dev.VENV).resolve():  # .venv, but incomplete
        sys.exit(
            f"benchmarks/run.py: {', '.join(missing)} missing from {dev.VENV}: run "
            "`python3 dev.py test` once (it installs the dev extra), or "
            "`pip install -e '.[bench]'`"
        )
    print(
        f"benchmarks/run.py: this Python has no {', '.join(missing)}; running it with "
        f"{dev.PYTHON} (made now if missing)",
        flush=True,
    )
    dev.ensure_venv()
    script = str(Path(sys.argv[0]).resolve())
    os.execv(dev.PYTHON, [str(dev.PYTHON), script, *sys.argv[1:]])


run_in_project_env()
