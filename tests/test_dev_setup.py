"""dev.py installs per command: `lab` the lesson extras, `test` the dev extra, each once.

The venv here is a stand-in: its "python" is an empty file that cannot run, so any attempt
to install (pip runs through it) fails loudly, and a test passes only if the stamps alone
decide, as they must, whether anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dev(venv: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("sitq_dev_setup", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    dev.VENV, dev.PYTHON = venv, venv / "bin" / "python"
    dev.PYTHON.parent.mkdir(parents=True)
    dev.PYTHON.write_text("")  # exists, cannot run
    return dev


def _current() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def test_lab_needs_only_the_lesson_extras_and_the_dev_set_covers_them(tmp_path: Path) -> None:
    dev = _dev(tmp_path / "venv")
    assert dev.LAB_EXTRAS == "notebook,postgres"
    dev.stamp(dev.TEST_EXTRAS).write_text(_current())
    dev.ensure_venv(dev.LAB_EXTRAS)  # `test` installed everything: nothing to do
    dev.ensure_venv(dev.TEST_EXTRAS)


def test_lab_installed_is_not_enough_for_test_and_a_changed_pyproject_reinstalls(
    tmp_path: Path,
) -> None:
    dev = _dev(tmp_path / "venv")
    dev.stamp(dev.LAB_EXTRAS).write_text(_current())
    dev.ensure_venv(dev.LAB_EXTRAS)
    with pytest.raises(OSError):  # it tried to install the dev extra
        dev.ensure_venv(dev.TEST_EXTRAS)
    dev.stamp(dev.LAB_EXTRAS).write_text("an older pyproject.toml")
    with pytest.raises(OSError):
        dev.ensure_venv(dev.LAB_EXTRAS)
