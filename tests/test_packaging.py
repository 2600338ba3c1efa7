"""Packaging rules: a pure core, a guarded adapters folder, no forgotten package."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

import sergeant

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEAVY = ("redis", "pymongo", "msgpack", "psutil", "sergeant.adapters")


def test_importing_the_core_pulls_in_no_backend() -> None:
    """``import sergeant`` (and its ports and worker) loads no driver or adapter."""
    code = (
        "import sys, sergeant, sergeant.protocols, sergeant.worker;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert out.strip() == "[]"


def test_the_core_source_imports_only_stdlib_and_attrs() -> None:
    """No module under sergeant/ imports a backend library or the adapters."""
    pattern = re.compile(
        r"^\s*(import|from)\s+(redis|pymongo|msgpack|psutil|sergeant\.adapters)\b"
    )

    offenders = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in (ROOT / "sergeant").rglob("*.py")
        if path.name != "__main__.py"  # the `python -m sergeant` entry point
        for line in path.read_text().splitlines()
        if pattern.match(line)
    ]

    assert offenders == []


def test_bare_adapters_import_is_refused() -> None:
    """Importing the folder as a top-level ``adapters`` package fails with a hint."""
    code = "import adapters"

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )

    assert result.returncode != 0
    assert "import them as 'sergeant.adapters'" in result.stderr


def test_every_adapters_subpackage_is_listed_for_the_wheel() -> None:
    """pyproject's packages list names every package folder under adapters/."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {"sergeant.adapters"} | {
        "sergeant.adapters." + ".".join(p.parent.relative_to(ROOT / "adapters").parts)
        for p in (ROOT / "adapters").rglob("__init__.py")
        if p.parent != ROOT / "adapters"
    }
    core = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "sergeant").rglob("__init__.py")
    }

    assert on_disk | core <= listed
    assert listed <= on_disk | core


def test_public_names_are_sorted_and_importable() -> None:
    """``sergeant.__all__`` is sorted and every name in it exists."""
    assert list(sergeant.__all__) == sorted(sergeant.__all__)
    for name in sergeant.__all__:
        assert hasattr(sergeant, name), name


def test_python_dash_m_sergeant_runs_the_command() -> None:
    """``python -m sergeant --help`` is the ``sergeant`` command's help."""
    result = subprocess.run(
        [sys.executable, "-m", "sergeant", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0
    assert "supervise" in result.stdout
