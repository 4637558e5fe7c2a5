#!/usr/bin/env python3
"""The project's two commands, on any machine with Python 3.11+ (no make, no conda needed).

    python3 dev.py lab    start JupyterLab on your copy of the lessons, in my-lessons/
                          (made from notebooks/ on first use; git ignores it)
    python3 dev.py docs   build the website into site/ (`docs serve`: preview it)
    python3 dev.py test   run every check: ruff, mypy --strict, the tests (SQLite and, when a
                          server answers, PostgreSQL), and the notebooks (nbval)

Both create the virtual environment `.venv` and install sitq into it (editable) with what
the command needs: `lab` the lesson extras (JupyterLab, matplotlib, asyncpg), `test` the
`dev` extra (those and the tools). Each set is installed once, and again when
pyproject.toml changes; pip shows its progress.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
LAB_EXTRAS = "notebook,postgres"  # lesson 15 uses PostgreSQL when SITQ_DATABASE_URL is set
TEST_EXTRAS = "dev"  # includes LAB_EXTRAS (see pyproject.toml)
LESSONS = ROOT / "my-lessons"  # the copy `lab` opens: running a lesson rewrites its file


def stamp(extras: str) -> Path:
    """One stamp per set of extras: `lab` then `test` installs only what `test` adds."""
    return VENV / f".sitq-installed-{extras.replace(',', '-')}"


def step(text: str) -> float:
    print(f"dev.py: {text}", flush=True)
    return time.monotonic()


def ensure_venv(extras: str = TEST_EXTRAS) -> None:
    """Create .venv and install sitq with `extras` once, and again when pyproject.toml
    changes. A set already installed with the dev extra counts as installed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must also run on an old Python
        sys.exit(f"sitq needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    for done in {stamp(extras), stamp(TEST_EXTRAS)}:
        if done.exists() and done.read_text() == wanted and PYTHON.exists():
            return
    if not PYTHON.exists():
        started = step(f"creating the virtual environment {VENV.name}/ ...")
        venv.create(VENV, with_pip=True)
        print(f"dev.py: made {VENV.name}/ in {time.monotonic() - started:.0f} s", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    started = step("upgrading pip in .venv ...")
    subprocess.run([*pip, "-q", "--upgrade", "pip"], check=True)
    step(
        f"installing sitq (editable) with [{extras}] and what it needs: the first time "
        "takes a few minutes; pip lists each package as it goes"
    )
    subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
    stamp(extras).write_text(wanted)
    print(f"dev.py: .venv ready in {time.monotonic() - started:.0f} s", flush=True)


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
    """JupyterLab on my-lessons/, a copy of notebooks/ made on first use: running a lesson
    saves its new outputs there, so the committed lessons (and git status) stay clean.
    Extra arguments (e.g. --port 9999) go to jupyter lab."""
    if LESSONS.exists():
        print(f"dev.py: opening your copy in {LESSONS.name}/ (delete it for fresh lessons)")
    else:
        code = run(str(BIN / "sitq"), "lessons", str(LESSONS))
        if code:
            return code
    args = [str(BIN / "jupyter"), "lab", "--notebook-dir", str(LESSONS), *extra]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI machines often run as root
    step("starting JupyterLab: it prints the address to open (Ctrl-C twice stops it)")
    return run(*args)


def test(*extra: str) -> int:
    steps = [
        ((str(PYTHON), "-m", "ruff", "check", "."), checkout_env()),
        ((str(PYTHON), "-m", "ruff", "format", "--check", "."), checkout_env()),
        ((str(PYTHON), "-m", "mypy"), checkout_env()),  # strict, on sitq/: see [tool.mypy]
        ((str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", "tests", *extra), unit_test_env()),
    ]
    if any((ROOT / "notebooks").rglob("*.ipynb")):
        # Exactly what a teacher types: notebooks/.pytest.ini and notebooks/conftest.py hold
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
    ensure_venv(LAB_EXTRAS if sys.argv[1] == "lab" else TEST_EXTRAS)
    return commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
