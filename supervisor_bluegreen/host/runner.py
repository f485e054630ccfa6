"""The one process runner (``spawn``, ``run``, ``capture``, ``read_as_user``), and build steps' argv.

Every child of the listener and of the admin's commands starts in ``spawn``: as the app's user when it
runs the app's code, tied to the listener's life, in its folder entered as that user.

A step is an argv (never a shell string) expanded per color with ``%(python)s``, ``%(color)s``,
``%(checkout)s`` and ``%(static_root)s``. An empty argv is a step built into the deploy itself
(``backup``). Each runs in the idle color's checkout, with the color's environment, as the app's
user, with a timeout; its output goes line by line into the deploy log.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor_bluegreen.host import envfile
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.masking import mask_credentials
from supervisor_bluegreen.shared.stepdefs import PRESETS, STEP_KEYS, BuildStep, builtin_steps  # noqa: F401 (defined there: config.py needs them)
from supervisor_bluegreen.shared.store import LINE_MAX, MARKER, open_file
from supervisor_bluegreen.shared.textsafe import escape_controls

if TYPE_CHECKING:
    from supervisor_bluegreen.shared.config import Color


OUTPUT = "    | "  # how a command's output lines are set in the log
CAPTURE_HEAD = 4 << 20  # capture keeps this much of the start of each stream ...
CAPTURE_TAIL = 1 << 20  # ... and at least this much of its end (at most twice that in memory)
# an output line that says how a command failed: "RuntimeError: ...", "FAILED (failures=1)", "ERROR: ...", "fatal: ..."
VERDICT_RE = re.compile(r"^(FAILED|ERROR|fatal|[\w.]*(Error|Exception))\b")


class StepError(BluegreenError):
    """A build step failed; the message says how (exit status, timeout, cancel)."""


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
    """The step's environment: ours without supervisor's, plus the app's environment file, the color's, HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    if color.environment_file:
        try:
            env.update(envfile.read(color.environment_file))
        except envfile.EnvFileError as exc:
            raise StepError(str(exc)) from None
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


SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")  # util-linux: on every Debian
ENV = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"  # coreutils: ``env -C DIR`` enters DIR, then execs


def require_program(argv: tuple[str, ...] | list[str], cwd: str | None, env: dict[str, str] | None) -> None:
    """A program that is not there is an OSError here, as Popen would raise (before a wrapper execs it)."""
    program = argv[0]
    if "/" in program:
        found = os.path.exists(os.path.join(cwd or "", program))
    else:
        found = shutil.which(program, path=(env if env is not None else os.environ).get("PATH", os.defpath)) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def tied(argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` run through ``setpriv --pdeathsig KILL``: it dies with the listener (kill -9 included).

    No ``preexec_fn`` (CPython documents it as deadlock-prone in a threaded process, and the listener
    is one): setpriv sets the parent-death signal after Popen's own ``user``/``group`` switch and then
    execs ``argv``, which keeps it.
    """
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else list(argv)


def spawn(argv: tuple[str, ...] | list[str], *, user: str = "", cwd: str | None = None,
          env: dict[str, str] | None = None, tie: bool = True, **popen: Any) -> subprocess.Popen:  # fmt: skip
    """The one way the listener starts a child: as ``user`` (Popen's own user/group/extra_groups, no
    ``preexec_fn``), tied to the listener's life (``tied``), with no descriptor of ours but 0-2, in
    ``cwd`` entered as that user (``entered_as_user``). Build steps, git, probes, checkout reads and
    dumps all start here. ``tie=False`` only for a step that is never cut in half: it outlives a killed
    listener, which waits for it when it is back.
    """
    switch = credentials(user)
    if switch and cwd is not None:  # root looks into none of the user's folders: the child says what is missing
        argv, cwd = entered_as_user(argv, cwd), "/"
    require_program(argv, cwd, env)
    command = tied(argv) if tie else list(argv)
    return subprocess.Popen(command, cwd=cwd, env=env, close_fds=True, **popen, **switch)


def entered_as_user(argv: tuple[str, ...] | list[str], cwd: str) -> list[str]:
    """``argv`` started from ``/`` by ``env -C cwd``: the folder is entered after the switch to the user.

    Popen's ``cwd`` enters it before its ``user`` switch, as root: a checkout the app user turned into a
    link would lead root into a folder the user cannot enter, and hand the user a program running there.
    """
    return [ENV, "-C", cwd, "--", *argv]


@dataclass(frozen=True)
class Uncut:
    """How a step that is never cut in half runs (migrate: DDL is not transactional on MySQL/MariaDB).

    Cancel and the step timeout only say so in the log and wait; the listener's SIGTERM lets it end;
    a kill -9 of the listener does not reach it (it is not tied, and writes to ``output``, a file, not
    a pipe that would break), and the restarted listener waits for it (``started`` records the pid).
    Only ``forced`` (``bluegreen cancel --force``, for a hung migration) kills it.
    """

    output: str
    started: Callable[[int], None]
    forced: Callable[[], bool]


def run(
    argv: tuple[str, ...],
    *,
    cwd: str,
    env: dict[str, str],
    user: str,
    timeout: float,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
    uncut: Uncut | None = None,
) -> None:
    """Run one command, its output into ``log``; StepError on a non-zero exit, a timeout or a cancel.

    With ``uncut`` the command is never cut in half: see Uncut. A non-zero exit says the command's last
    output line that reads like a verdict (a traceback's last line, "FAILED (failures=1)"), else its last
    line: the whole output stays in the log.
    """
    last: list[str] = ["", ""]  # the last line that reads like a verdict, the last line

    def log_output(line: str) -> None:
        text = line[len(OUTPUT) :].strip() if line.startswith(OUTPUT) else ""
        if text:
            last[1] = text
            if VERDICT_RE.match(text):
                last[0] = text
        log(line)

    output = open_file(uncut.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if uncut else subprocess.PIPE
    try:
        proc = spawn(
            argv, user=user, cwd=cwd, env=env, tie=uncut is None, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise StepError(f"cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        if uncut:
            os.close(output)
    if uncut:
        uncut.started(proc.pid)
        reader = threading.Thread(target=_follow, args=(uncut.output, proc, log_output), daemon=True)
    else:
        reader = threading.Thread(target=_pump, args=(proc.stdout, log_output), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    why, said = "", set()
    while proc.poll() is None:
        late = time.monotonic() > deadline
        if uncut and uncut.forced():
            why = "killed by cancel --force"
        elif uncut and (late or cancelled()) and not said & {"late" if late else "cancel"}:
            said.add("late" if late else "cancel")
            log(
                f"{'step_timeout passed' if late else 'cancel asked'}: {argv[0]} {' '.join(argv[1:3])} is never cut "
                "in half, waiting for it to end (a hung one: bluegreen cancel --force)"
            )
        elif not uncut and late:
            why = f"timed out after {timeout:g} s"
        elif not uncut and cancelled():
            why = "cancelled"
        if why:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.05)
    reader.join(timeout=5)
    if uncut and not reader.is_alive():  # all of it is in the log now: the file need not hold it too
        os.close(open_file(uncut.output, os.O_WRONLY | os.O_TRUNC))
    if why:
        raise StepError(why)
    if proc.returncode != 0:
        said = last[0] or last[1]
        verdict = f" ({mask_credentials(said)[:200]})" if said else ""
        raise StepError(f"exit status {proc.returncode}{verdict}")


def _line(raw: bytes) -> str:
    """A line of output as the log shows it: set in, control characters spelled out (they never reach a terminal)."""
    return OUTPUT + escape_controls(raw.decode("utf-8", "replace").rstrip())


def _pump(stream: Any, log: Callable[[str], None]) -> None:
    for raw in iter(lambda: stream.readline(LINE_MAX), b""):  # bounded: a program may print without newlines
        log(_line(raw))


def _follow(path: str, proc: subprocess.Popen, log: Callable[[str], None]) -> None:
    """Log the lines a command writes to ``path`` as they come, until it ended and all is read."""
    with os.fdopen(open_file(path, os.O_RDONLY), "rb") as f:
        pending = b""
        while True:
            ended = proc.poll() is not None
            chunk = f.read(65536)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > LINE_MAX:  # no newline for that long: logged as a line of its own
                lines.append(pending)
                pending = b""
            for raw in lines:
                log(_line(raw))
            if ended and not chunk:
                break
            if not chunk:
                time.sleep(0.1)
        if pending:
            log(_line(pending))


class Bounded:
    """What a stream printed, in bounded memory: its first ``head`` bytes and its last ``tail`` (or more) bytes.

    A child may print without end (700 MB from a migration probe took the listener to 2 GB): what falls
    between is counted, not kept, and ``text`` says how many bytes were left out where they were.
    """

    def __init__(self, head: int = CAPTURE_HEAD, tail: int = CAPTURE_TAIL):
        self.head_max, self.tail_max = head, tail
        self.head, self.tail = bytearray(), bytearray()
        self.left_out = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > 2 * self.tail_max:  # trimmed now and then, not on every chunk
            excess = len(self.tail) - self.tail_max
            del self.tail[:excess]
            self.left_out += excess

    def text(self) -> str:
        """What was kept, as text mode reads it (UTF-8, universal newlines), the note between head and tail."""
        if not self.left_out:
            parts = [self.head + self.tail]
        else:
            parts = [self.head, f"\n{MARKER}{self.left_out} bytes of output left out here]\n".encode(), self.tail]
        text = "".join(part.decode("utf-8", "replace") for part in parts)
        return text.replace("\r\n", "\n").replace("\r", "\n")


def _collect(proc: subprocess.Popen, timeout: float) -> tuple[Bounded, Bounded]:
    """Read a child's stdout and stderr into Bounded buffers until both end; TimeoutExpired after ``timeout``."""
    streams = {proc.stdout: Bounded(), proc.stderr: Bounded()}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    streams[key.fileobj].add(chunk)
                else:
                    selector.unregister(key.fileobj)
    proc.wait(max(0.0, deadline - time.monotonic()))
    return streams[proc.stdout], streams[proc.stderr]


def capture(
    argv: tuple[str, ...] | list[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    user: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a short command quietly as ``user`` and keep what it printed; OSError and TimeoutExpired propagate.

    stdin is /dev/null: the listener's own stdin is supervisor's event protocol. Of each stream only its
    head and tail are kept (Bounded: a line in the middle says how many bytes were left out), decoded as
    UTF-8 with replacement. On a timeout the command's whole process group is killed (it runs in its own
    session), then TimeoutExpired.
    """
    with spawn(argv, user=user, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
               stderr=subprocess.PIPE, start_new_session=True) as proc:  # fmt: skip
        try:
            out, err = _collect(proc, timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.text(), err.text())


def status_and_output(argv: tuple[str, ...] | list[str], *, timeout: float = 60, **how: Any) -> tuple[int, str]:
    """Run a short command quietly (``capture``, ``how`` its cwd, env and user): its exit status and what it
    printed (stdout, then stderr, stripped).

    It never raises for the command: 127 when it cannot start (the reason as its output), 124 when it did not
    end within ``timeout`` (its process group is killed).
    """
    try:
        done = capture(argv, timeout=timeout, **how)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not finish within {timeout:g} s"
    except OSError as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def probe(argv: tuple[str, ...], *, cwd: str, env: dict[str, str], user: str, timeout: float = 60) -> bool:
    """True when ``argv`` exits 0 (quietly): is an optional tool there?"""
    try:
        return capture(argv, cwd=cwd, env=env, user=user, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ReadError(BluegreenError, OSError):
    """A file of the checkout could not be read as the app's user (not a regular file, too big, too slow)."""

    def __str__(self) -> str:  # the message alone, not "[Errno 22] ...": it is shown to users as is
        return self.strerror or super().__str__()


# Runs as the app's user, with POSIX tools only (the listener's own interpreter may sit where the user
# cannot execute it): exit 3 when absent, 5 when not a regular file (FIFO, device), else at most $2 bytes.
# Swapping the file for a FIFO after the test only makes head wait until the timeout kills it.
_READER = '[ -e "$1" ] || exit 3; [ -f "$1" ] || exit 5; exec head -c "$2" -- "$1"'


def read_as_user(path: str, user: str, limit: int = 1 << 20, timeout: float = 10.0) -> bytes | None:
    """The bytes of ``path`` (a file of the checkout) read by a child running as ``user``; None when absent.

    Root never opens what the app user controls: a symlink to /etc/shadow is read with the user's rights
    (and refused), a FIFO or device (``-> /dev/zero``, ``-> /dev/stdin``) is refused without reading, a
    file larger than ``limit`` bytes is refused, and the child is killed after ``timeout`` seconds.
    ReadError (an OSError) says which; the child's stdin is /dev/null, never the listener's event pipe.
    """
    argv = ["/bin/sh", "-c", _READER, "read_as_user", path, str(int(limit) + 1)]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    try:
        with spawn(argv, user=user, cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE) as proc:  # fmt: skip
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # head itself: sh execs it
                proc.communicate()
                raise
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        raise ReadError(errno.ETIMEDOUT, f"reading {path} took more than {timeout:g} s") from None
    except OSError as exc:
        raise ReadError(exc.errno or errno.EIO, f"cannot read {path}: {exc.strerror or exc}") from None
    who = f" as {user}" if user else ""
    if done.returncode == 3:
        return None
    if done.returncode == 5:
        raise ReadError(errno.EINVAL, f"refusing {path}: not a regular file")
    if done.returncode == 0 and len(done.stdout) > limit:
        raise ReadError(errno.EFBIG, f"refusing {path}: larger than {limit} bytes")
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip()[-200:] or f"exit status {done.returncode}"
        raise ReadError(errno.EIO, f"cannot read {path}{who}: {reason}")
    return done.stdout
