"""Shared fixtures: real stacks (supervisord + two gunicorn colors + nginx) stopped by pid in teardown."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from example.stack import NGINX, Stack  # noqa: E402


def require_nginx() -> None:
    """The e2e tests need Debian's nginx; fail loudly (never skip) when it is missing."""
    if not os.access(NGINX, os.X_OK):
        pytest.fail(f"{NGINX} is missing: run `make test` (it installs Debian's nginx) or scripts/bootstrap.sh")


@pytest.fixture(scope="module")
def make_stack() -> Iterator[Callable[..., Stack]]:
    """Factory of laid-out (not started) stacks in short /tmp folders; every one is stopped by pid."""
    require_nginx()
    stacks: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp"))
        stack = Stack(root, **kwargs)  # type: ignore[arg-type]
        stacks.append(stack)
        return stack.layout()

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop()
            stack.drop()
            shutil.rmtree(stack.root, ignore_errors=True)


def status(stack: Stack) -> dict:
    """`supervisorctl bluegreen status --json` of the only app, as a user scripts it."""
    out = stack.ctl("bluegreen", "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)[0]
