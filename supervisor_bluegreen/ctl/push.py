"""``bluegreen push [-c SUPERVISORD_CONF] APP COMMIT [--by PERSON] [--wait]``: the pusher's narrow path to a deploy.

The pre-receive hook runs as the pushing user, who must not get supervisord's control socket (0700
on Debian: whoever opens it can ``stop all``). Root lets that user run exactly this command for
exactly one app through sudo, e.g. in ``/etc/sudoers.d/bluegreen-abiapp``::

    git ALL=(root) NOPASSWD: /usr/local/bin/bluegreen push abiapp *

What it can do, whatever the words after ``abiapp``: ask supervisord for ``bluegreen.deploy`` of
that app at one commit id (40 or 64 lowercase hex digits: no branch name, no option, nothing a shell
or git reads as more), then follow that job, print its log and exit 0 only when the commit is live.
Its exit status follows the deploy's outcome, never a failure to read the log: when a chunk of the
log cannot be read (a fault, an answer that does not parse), it says so and follows the job's status
alone; when even that cannot be read for PATIENCE seconds it says it cannot tell and names the job.
``--by PERSON`` names the person behind the push for history (the hook passes the pushed commit's
committer, ``Name <email>``, or the user name a hosting layer set): recorded as said, beside the Unix account
sudo vouches for (SUDO_USER), e.g. ``Alice <alice@example.org> (abiapp@vm via git push)``; it asks for nothing.
Any other word count or order is refused before anything is read. A ``-c`` config must be an absolute
path to a file only root can change (sudo keeps the words the rule fixes; a ``-c`` the pusher
appends is refused as an extra word). It calls no other method: no stop, no switch, no other app.
"""

from __future__ import annotations

import getpass
import os
import re
import stat
import sys
import time
import xmlrpc.client
from typing import Any, NamedTuple

from supervisor.options import ClientOptions
from supervisor.supervisorctl import Controller, LSBInitExitStatuses
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.ctl.controllerplugin import BlueGreenControllerPlugin, who_text
from supervisor_bluegreen.shared.config import NAME_RE, find_supervisord_conf
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.store import unsafe_entry

USAGE = "usage: bluegreen push [-c SUPERVISORD_CONF] APP COMMIT [--by PERSON] [--wait]"
COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
NO_LOG = 2**31 - 1  # a log offset past any log (XML-RPC ints are 32-bit): the job without its log
PATIENCE = 120.0  # how long the job's status may stay unreadable before the push says it cannot tell


class Refused(BluegreenError):
    """The words asked for something this path does not do."""


class Push(NamedTuple):
    conf: str  # the supervisord config ('' for the usual places)
    app: str
    commit: str
    wait: bool
    by: str = ""  # the person, as the hook said (history only)


def parse(argv: list[str]) -> Push:
    """The request in exactly ``[-c CONF] APP COMMIT [--by PERSON] [--wait]``."""
    words = list(argv)
    conf = ""
    if words[:1] == ["-c"]:
        if len(words) < 2:
            raise Refused(USAGE)
        conf, words = words[1], words[2:]
    wait = words[-1:] == ["--wait"]
    if wait:
        words = words[:-1]
    by = ""
    if len(words) == 4 and words[2] == "--by":  # the person is one word, whatever it holds (it asks for nothing)
        by, words = words[3], words[:2]
    if len(words) != 2:
        raise Refused(f"{USAGE} (got {len(argv)} words)")
    app, commit = words
    if not NAME_RE.match(app):  # the config's own rule: a name no app can have is refused here
        raise Refused(f"refusing app name {app!r}")
    if not COMMIT_RE.match(commit):
        raise Refused(f"refusing {commit!r}: a full commit id (40 or 64 lowercase hex digits) only")
    return Push(conf, app, commit, wait, by)


def conf_problem(path: str) -> str | None:
    """Why root must not read supervisorctl settings from ``path`` (it names the server and its password)."""
    if not os.path.isabs(path):
        return "not an absolute path"
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    found = unsafe_entry(path, file_ok=True)  # the store's rule: root's (or ours) up to /, a sticky folder above it
    if found is None:
        return None
    if found.st is None:
        return found.why
    if found.why == "owner":
        return f"{found.path} is owned by uid {found.st.st_uid}, not root"
    if found.why == "writable":
        return f"{found.path} is writable by others"
    return f"{found.path} is {found.why}"


class CannotTell(BluegreenError):
    """The deploy's outcome could not be read: the push fails, and the message names the job to look at."""


class StatusOnly:
    """``bluegreen.*`` for following a job: ``job`` falls back to the job's status alone once its log cannot be read.

    Before, one ESC in a log chunk made the answer unparseable, the push exited 1 and was rejected
    while the deploy went on and went live: the live color ran a commit the branch never got.
    """

    def __init__(self, plugin: PushPlugin):
        self.plugin = plugin
        self.proxy = plugin.ctl.get_server_proxy("bluegreen")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)

    def job(self, app: str, job_id: int, offset: int) -> dict[str, Any]:
        if not self.plugin.log_unreadable:
            try:
                return self.proxy.job(app, job_id, offset)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode in (Faults.UNKNOWN_METHOD, Faults.BAD_NAME):
                    raise  # no such API or job: nothing to follow, said as such
                self.unreadable(app, job_id, exc.faultString)
            except Exception as exc:  # noqa: BLE001 (an answer that does not parse, a dropped connection: say which)
                self.unreadable(app, job_id, f"{type(exc).__name__}: {exc}")
        return {**self.status(app, job_id), "log": "", "offset": offset}

    def unreadable(self, app: str, job_id: int, why: str) -> None:
        self.plugin.log_unreadable = True
        self.plugin.ctl.output(
            f"cannot read the log of job {job_id} ({why}); following its status only "
            f"(whole log: supervisorctl bluegreen log {app} {job_id})"
        )

    def status(self, app: str, job_id: int) -> dict[str, Any]:
        """The job without its log; tried again for PATIENCE seconds, then CannotTell."""
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                return self.proxy.job(app, job_id, NO_LOG)
            except Exception as exc:  # noqa: BLE001 (whatever it is, the outcome is still unknown)
                if time.monotonic() >= deadline:
                    look = f"supervisorctl bluegreen status {app}; supervisorctl bluegreen log {app} {job_id}"
                    raise CannotTell(
                        f"cannot tell how deploy job {job_id} of {app} ended ({type(exc).__name__}: {exc}); "
                        f"it may still go live: {look}"
                    ) from None
                time.sleep(1.0)


class PushPlugin(BlueGreenControllerPlugin):
    """The controller plugin whose following of a job survives a log it cannot read (StatusOnly)."""

    log_unreadable = False

    @property
    def api(self) -> Any:
        return StatusOnly(self)


def main(argv: list[str]) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # git relays lines as they come
    try:
        conf, app, commit, wait, by = parse(argv)
        conf = find_supervisord_conf(conf)
        problem = conf_problem(conf)
        if problem:
            raise Refused(f"refusing supervisord config {conf}: {problem}")
    except Refused as exc:
        print(f"ERROR: bluegreen push: {exc}", flush=True)
        return LSBInitExitStatuses.INVALID_ARGS
    os.chdir("/")
    options = ClientOptions()
    options.realize(["-c", conf, "bluegreen"], doc="")  # a command word: never interactive (no password prompt)
    options.plugin_factories = []  # only our plugin: nothing else of that config is imported or run
    ctl = Controller(options)
    plugin = PushPlugin(ctl)
    pusher = os.environ.get("SUDO_USER") or getpass.getuser()  # sudo sets SUDO_USER: the pusher, not root
    plugin.who = who_text(by, pusher, "git push")
    try:
        plugin.do_bluegreen(f"deploy {app} {commit}" + (" --wait" if wait else ""))
    except Exception as exc:  # noqa: BLE001 (one line for the pusher, never a traceback)
        print(f"ERROR: bluegreen push: {exc}", flush=True)
        return LSBInitExitStatuses.GENERIC
    return int(ctl.exitstatus)
