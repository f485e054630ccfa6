"""The files the README tells people to copy, as shipped: ``bluegreen example include|ini|programs|hook``.

One source of truth: the repository's ``conf/`` folder, which the wheel installs as the package data
``supervisor_bluegreen/examples/`` (see setup.py). They are printed with the real path of the installed
``bluegreen`` executable in place of the ``/usr/local/bin/bluegreen`` they are written with.
"""

from __future__ import annotations

import os
import shutil
import sys

from supervisor_bluegreen.shared.config import DEFAULT_CONFIG

PLACEHOLDER_EXE = "/usr/local/bin/bluegreen"
EXAMPLES = {
    "include": ("supervisor/bluegreen.conf", "the supervisord include: rpcinterface, ctlplugin, event listener"),
    "ini": ("bluegreen.ini", f"an app config (socket switch): {DEFAULT_CONFIG}"),
    "nginx-mode-ini": ("bluegreen-nginx-mode.ini", "an app config in the seed's nginx switch mode"),
    "programs": ("supervisor/abiapp.conf", "the two colors and a Celery worker as supervisord programs"),
    "hook": (("hooks/pre-receive", "hooks/post-receive"), "the git hook of the bare repository"),
    "site": ("nginx/site.conf.j2", "the nginx site template (jinja2)"),
}


def examples_dir() -> str:
    """``supervisor_bluegreen/examples`` when installed from a wheel, the checkout's ``conf/`` otherwise."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package, above ctl/
    installed = os.path.join(here, "examples")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(here), "conf")


def bluegreen_executable() -> str:
    """The ``bluegreen`` script of this installation: next to the running interpreter, else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "bluegreen")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("bluegreen") or PLACEHOLDER_EXE


def example_path(name: str) -> str:
    """The file behind ``bluegreen example NAME``; KeyError for an unknown name."""
    rel = EXAMPLES[name][0]
    candidates = (rel,) if isinstance(rel, str) else rel
    base = examples_dir()
    for candidate in candidates:
        path = os.path.join(base, candidate)
        if os.path.exists(path):
            return path
    return os.path.join(base, candidates[-1])


def example_text(name: str, executable: str = "") -> str:
    """The example ``name`` with the installed ``bluegreen`` executable's real path filled in."""
    with open(example_path(name), encoding="utf-8") as f:
        text = f.read()
    return text.replace(PLACEHOLDER_EXE, executable or bluegreen_executable())


def main(name: str, as_path: bool = False) -> int:
    if name not in EXAMPLES:
        print(f"error: unknown example {name!r}; one of: {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    if as_path:
        print(example_path(name))
        return 0
    print(example_text(name), end="")
    return 0
