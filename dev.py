#!/usr/bin/env python3
"""The project's two commands, on any machine with Python 3.11+ (no make, no conda needed).

    python3 dev.py lab    start JupyterLab on notebooks/ (the lessons; SQLite, embedded)
    python3 dev.py docs   build the website into site/ (`docs serve`: preview it)
    python3 dev.py test   run every check: ruff, mypy --strict, the tests (SQLite and, when a
                          server answers, PostgreSQL), and the notebooks (nbval)

Both create the virtual environment `.venv` and install sitq into it (editable, with its
`dev` extra) when it is missing or when pyproject.toml has changed since.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".sitq-installed"


def ensure_venv() -> None:
    """Create .venv and install the project once, and again when pyproject.toml changes."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must also run on an old Python
        sys.exit(f"sitq needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV.name}/ ...", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def checkout_env() -> dict[str, str]:
    """Keep Jupyter's and matplotlib's caches inside the checkout (.cache/ is gitignored)."""
    cache = ROOT / ".cache"
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_RUNTIME_DIR": str(cache / "jupyter-runtime"),
            "JUPYTER_CONFIG_DIR": str(cache / "jupyter-config"),
            "MPLCONFIGDIR": str(cache / "matplotlib"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
    )
    return env


def unit_test_env() -> dict[str, str]:
    """For tests/: a fixed hash seed, and matplotlib drawing to files only (no window).

    The notebooks do not get these from here: notebooks/conftest.py sets their kernels'
    environment, so `python3 dev.py test` checks them exactly as plain `pytest --nbval` does.
    """
    return {**checkout_env(), "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}


def run(*args: str, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, cwd=ROOT, env=env).returncode


def lab(*extra: str) -> int:
    """JupyterLab on the lessons; extra arguments (e.g. --port 9999) go to jupyter lab."""
    args = [str(BIN / "jupyter"), "lab", "--notebook-dir", str(ROOT / "notebooks"), *extra]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI machines often run as root
    return run(*args)


def test(*extra: str) -> int:
    steps = [
        ((str(PYTHON), "-m", "ruff", "check", "."), checkout_env()),
        ((str(PYTHON), "-m", "ruff", "format", "--check", "."), checkout_env()),
        ((str(PYTHON), "-m", "mypy"), checkout_env()),  # strict, on sitq/: see [tool.mypy]
        ((str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", "tests", *extra), unit_test_env()),
    ]
    if any((ROOT / "notebooks").rglob("*.ipynb")):
        # Exactly what a teacher types: notebooks/pytest.ini and notebooks/conftest.py hold
        # the nbval settings (current environment, sanitize file), so there are no flags here.
        steps.append(((str(PYTHON), "-m", "pytest", "--nbval", "notebooks"), checkout_env()))
    for command, env in steps:
        code = run(*command, env=env)
        if code:
            return code
    return 0


def docs(*extra: str) -> int:
    """The website (mkdocs.yml) into site/; `docs serve` previews it with live reload."""
    action = list(extra) or ["build", "--site-dir", str(ROOT / "site")]
    return run(str(BIN / "mkdocs"), *action, env={**checkout_env(), "NO_MKDOCS_2_WARNING": "1"})


def main() -> int:
    commands = {"lab": lab, "docs": docs, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_venv()
    return commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
