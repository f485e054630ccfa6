"""One version source, `bluegreen --version`, and the shipped files printed with the installed executable's path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor_bluegreen import __version__
from supervisor_bluegreen.ctl import example_files
from supervisor_bluegreen.ctl.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_setup_reads_the_one_version() -> None:
    setup = (REPO / "setup.py").read_text()
    assert "version=VERSION" in setup and not re.search(r'version="\d', setup)
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == __version__


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"bluegreen {__version__}"


@pytest.mark.parametrize("name", list(example_files.EXAMPLES))
def test_every_example_is_shipped(name: str) -> None:
    assert Path(example_files.example_path(name)).is_file()
    assert example_files.example_text(name, "/opt/bg/bin/bluegreen")


def test_include_names_the_installed_executable(capsys: pytest.CaptureFixture[str]) -> None:
    text = example_files.example_text("include", "/opt/supervisor-bluegreen/bin/bluegreen")
    assert "command = /opt/supervisor-bluegreen/bin/bluegreen listener --config" in text
    assert example_files.PLACEHOLDER_EXE not in text
    assert main(["example", "include"]) == 0
    printed = capsys.readouterr().out
    assert f"command = {example_files.bluegreen_executable()} listener" in printed


def test_examples_are_conf_itself_not_a_copy() -> None:
    """In a checkout the examples are conf/; setup.py installs that same folder as supervisor_bluegreen/examples."""
    assert Path(example_files.examples_dir()) == REPO / "conf"
    setup = (REPO / "setup.py").read_text()
    assert 'package_dir={"supervisor_bluegreen.examples": "conf"}' in setup
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
