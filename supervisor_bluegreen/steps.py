"""Build steps of a deploy: argv templates, the Django preset, and running one as the app's user.

A step is an argv (never a shell string) expanded per color with ``%(python)s``, ``%(color)s``,
``%(checkout)s`` and ``%(static_root)s``. An empty argv is a step built into the deploy itself
(``backup``). Each runs in the idle color's checkout, with the color's environment, as the app's
user, with a timeout; its output goes line by line into the deploy log.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Color

STEP_KEYS = ("python", "color", "checkout", "static_root")
PRESETS = {"django": ("deps", "backup", "migrate", "collectstatic", "compress", "test")}


class StepError(Exception):
    """A build step failed; the message says how (exit status, timeout, cancel)."""


@dataclass(frozen=True)
class BuildStep:
    name: str
    argv: tuple[str, ...]  # empty: built into the deploy (backup)
    skip_unless: tuple[str, ...] = ()  # run only when this probe succeeds: optional tools such as compress
    when_changed: str = ""  # run only when this file of the checkout changed since the color last ran the step


def builtin_steps() -> dict[str, BuildStep]:
    """The steps of the Django preset: the color's dependencies, then the seed's hook in order."""
    manage = ("%(python)s", "manage.py")
    return {
        # dependencies belong to the color: installed into ITS virtualenv, and only when they changed
        "deps": BuildStep(
            "deps",
            ("%(python)s", "-m", "pip", "install", "--requirement", "requirements.txt"),
            when_changed="requirements.txt",
        ),
        "backup": BuildStep("backup", ()),
        "migrate": BuildStep("migrate", (*manage, "migrate", "--noinput")),
        "collectstatic": BuildStep("collectstatic", (*manage, "collectstatic", "--noinput")),
        # django-compressor's offline compression; skipped (and said so) when the app does not use it
        "compress": BuildStep("compress", (*manage, "compress", "--force"), skip_unless=(*manage, "help", "compress")),
        "test": BuildStep("test", (*manage, "test", "--noinput")),
    }


def values(color: Color) -> dict[str, str]:
    """What a step's argv may refer to."""
    return {
        "python": color.python or "python3",
        "color": color.name,
        "checkout": color.checkout,
        "static_root": color.static_root,
    }


def expand(argv: tuple[str, ...], color: Color) -> tuple[str, ...]:
    """The argv of a step for one color (the config checked that only known keys are used)."""
    known = values(color)
    out = []
    for word in argv:
        for key, value in known.items():
            word = word.replace(f"%({key})s", value)
        out.append(word)
    return tuple(out)


def environment(color: Color, user: str) -> dict[str, str]:
    """The step's environment: ours without supervisor's, plus the color's, plus the user's HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(dict(color.environment))
    if user:
        env.update(user_env(user))
    return env


def user_env(user: str) -> dict[str, str]:
    """HOME, USER and LOGNAME of ``user``, so tools read that user's dotfiles (~/.my.cnf, ~/.pgpass)."""
    entry = pwd.getpwnam(user)
    return {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user}


def credentials(user: str) -> dict[str, Any]:
    """Popen arguments that run a command as ``user`` (only possible, and only needed, as root)."""
    if not user or os.geteuid() != 0 or pwd.getpwuid(0).pw_name == user:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(user, entry.pw_gid)}


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the listener dies (kill -9 included), so no build runs on orphaned."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run(
    argv: tuple[str, ...],
    *,
    cwd: str,
    env: dict[str, str],
    user: str,
    timeout: float,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Run one command, its output into ``log``; StepError on a non-zero exit, a timeout or a cancel."""
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent, **credentials(user),
        )  # fmt: skip
    except OSError as exc:
        raise StepError(f"cannot run {argv[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    why = ""
    while proc.poll() is None:
        if time.monotonic() > deadline:
            why = f"timed out after {timeout:g} s"
        elif cancelled():
            why = "cancelled"
        if why:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.05)
    reader.join(timeout=5)
    if why:
        raise StepError(why)
    if proc.returncode != 0:
        raise StepError(f"exit status {proc.returncode}")


def _pump(stream: Any, log: Callable[[str], None]) -> None:
    for raw in stream:
        log("    | " + raw.decode("utf-8", "replace").rstrip())


def capture(
    argv: tuple[str, ...] | list[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    user: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a short command quietly as ``user`` and keep what it printed; OSError and TimeoutExpired propagate.

    stdin is /dev/null: the listener's own stdin is supervisor's event protocol.
    """
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        preexec_fn=_die_with_parent, check=False, **credentials(user),
    )  # fmt: skip


def probe(argv: tuple[str, ...], *, cwd: str, env: dict[str, str], user: str, timeout: float = 60) -> bool:
    """True when ``argv`` exits 0 (quietly): is an optional tool there?"""
    try:
        return capture(argv, cwd=cwd, env=env, user=user, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
