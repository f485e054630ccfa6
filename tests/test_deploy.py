"""The pure parts of deploy: which refs are refused before anything runs."""

from __future__ import annotations

import subprocess

import pytest

from supervisor_bluegreen.listener.failpoint import ROLLBACK_POINTS, branch, deploy_points
from supervisor_bluegreen.shared.refs import ref_problem
from supervisor_bluegreen.shared.stepdefs import PRESETS


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/yearbook-export", "HEAD~2", "main^", "3f2c1a9", "a" * 40])
def test_ordinary_refs_pass(ref: str) -> None:
    assert ref_problem(ref) is None


@pytest.mark.parametrize(
    "ref",
    [
        "main;reboot",
        "$(reboot)",
        "`id`",
        "a b",
        "-x",
        "--upload-pack=sh",
        "a..b",
        "x.lock",
        "main@{1}",
        "a|b",
        "",
        "x/",
    ],
)
def test_refs_a_shell_or_git_option_could_read_are_refused(ref: str) -> None:
    assert ref_problem(ref) == f"refusing ref {ref!r}: use a branch, tag or commit (letters, digits and ._/@^~- only)"


@pytest.mark.integration
@pytest.mark.parametrize("point", [*deploy_points(PRESETS["django"]), *ROLLBACK_POINTS])
def test_every_failpoint_names_a_branch_git_takes(point: str) -> None:
    """The fault matrix pushes a branch per point; "health gate" once made 'k-health gate' and git refused it."""
    name = branch(point)
    assert ref_problem(name) is None
    done = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
