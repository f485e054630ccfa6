"""How a release gets its dependencies: the way the app declares them, decided from its files (pure).

- ``uv.lock`` (with its ``pyproject.toml``): ``uv sync --frozen --inexact`` into the release's virtualenv:
  the lock's versions, its default groups (uv's ``dev`` too: the tests run there), and what else is there
  kept (pip, which the next release's copy needs; gunicorn where init added it); uv comes with this tool;
- a ``pyproject.toml`` without a lock: ``pip install .``;
- ``requirements.txt``: ``pip install -r requirements.txt``, plus each ``test_requirements`` file (what only
  the tests need, kept out of production requirements).

The install runs only when what decides it changed: the digest covers every file read to decide (a
requirements file's ``-r`` includes too) and the command itself, so a switch from pip to uv installs again.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)", re.M)
NONE_FOUND = (
    "the checkout has no uv.lock, pyproject.toml or requirements.txt: nothing says which packages the app "
    "needs (add one, or set step_deps to the command that installs them)"
)


@dataclass(frozen=True)
class Install:
    """What the deps step runs in the checkout, and what decides whether it must."""

    kind: str  # uv, pyproject, requirements
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # added to the build environment
    inputs: dict[str, bytes]  # every file read to decide, by its path in the checkout

    def digest(self) -> str:
        """Changes when an input or the command changes: the install is due again."""
        h = hashlib.sha256("\0".join(self.argv).encode())
        for name in sorted(self.inputs):
            h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(self.inputs[name]).digest())
        return h.hexdigest()

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(sorted(self.inputs))})"


def uv_executable() -> str:
    """uv installed beside this tool (its dependency, from PyPI): the virtualenv's bin/ this python runs from."""
    return os.path.join(os.path.dirname(sys.executable), "uv")


def requirement_files(read: Callable[[str], bytes | None], name: str, depth: int = 5) -> dict[str, bytes]:
    """``name`` and every file it includes (``-r``, ``-c``; relative to it), as read; absent ones left out."""
    data = read(name)
    if data is None:
        return {}
    found = {name: data}
    if depth > 0:
        for included in INCLUDE.findall(data.decode("utf-8", "replace")):
            path = posixpath.normpath(posixpath.join(posixpath.dirname(name), included))
            if path not in found and not path.startswith("../") and not posixpath.isabs(path):
                found.update(requirement_files(read, path, depth - 1))
    return found


def plan(
    read: Callable[[str], bytes | None], python: str, venv: str, test_requirements: tuple[str, ...] = ()
) -> Install | None:
    """The install the checkout's files ask for (``read`` gives a file of the checkout, None when absent),
    into ``venv`` with ``python``; None when the app declares no dependencies at all."""
    pyproject, lock = read("pyproject.toml"), read("uv.lock")
    if lock is not None and pyproject is not None:
        return Install(
            "uv",
            (uv_executable(), "sync", "--frozen", "--inexact", "--quiet", "--python", python),
            # the virtualenv is the release's; the python is the one given (never one uv downloads); TLS trusts
            # the system's certificates, as Debian's pip does (a proxy's CA installed there works for both)
            (("UV_PROJECT_ENVIRONMENT", venv), ("UV_PYTHON_DOWNLOADS", "never"), ("UV_SYSTEM_CERTS", "1")),
            {"pyproject.toml": pyproject, "uv.lock": lock},
        )
    inputs = requirement_files(read, "requirements.txt")
    if inputs:
        argv = [python, "-m", "pip", "install", "--quiet", "--requirement", "requirements.txt"]
        for extra in test_requirements:
            found = requirement_files(read, extra)
            if not found:
                continue
            inputs.update(found)
            argv += ["--requirement", extra]
        return Install("requirements", tuple(argv), (), inputs)
    if pyproject is not None:
        return Install("pyproject", (python, "-m", "pip", "install", "--quiet", "."), (), {"pyproject.toml": pyproject})
    return None
