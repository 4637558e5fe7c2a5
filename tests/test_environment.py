"""environment.yml must list what pyproject.toml needs (conda cannot solve it here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _environment_names() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("- ") and not line.endswith(":"):
            names.add(_name(line[2:]))
    return names


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_lists_every_runtime_dependency() -> None:
    runtime = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    missing = runtime - _environment_names()
    assert not missing, f"environment.yml lacks runtime dependencies {sorted(missing)}"


def test_environment_lists_every_extra_dependency() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    wanted = {_name(r) for reqs in extras.values() for r in reqs if not r.startswith("sitq")}
    missing = wanted - _environment_names()
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_environment_installs_the_project_and_needs_python_311() -> None:
    text = (ROOT / "environment.yml").read_text()
    assert "- -e ." in text
    assert "python>=3.11" in text
    assert "conda-forge" in text
