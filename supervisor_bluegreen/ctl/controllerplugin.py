"""``supervisorctl bluegreen <command>``: parse, call ``bluegreen.*``, print, set the exit status.

Jobs run in the listener, so a command that starts one follows its log until it ends; Ctrl-C
or a dropped SSH session only stops the following, never the job.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import getpass
import json
import os
import shlex
import socket
import time
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, NoReturn

from supervisor.supervisorctl import ControllerPluginBase, LSBInitExitStatuses
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.model import ACTIVE, Status
from supervisor_bluegreen.shared.textsafe import escape_controls

PERSON_MAX = 200  # characters of a person's name kept in "who" (a commit's "Name <email>", a hosting user name)


class UsageError(BluegreenError):
    """A command line its command does not take: the message, then the command's usage."""


class Parser(argparse.ArgumentParser):
    """argparse for one bluegreen command: errors are raised (supervisorctl must go on), never sys.exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Command:
    """One ``bluegreen`` command: its usage, what it does (for help), and its arguments (argparse)."""

    usage: str
    summary: str
    arguments: Callable[[Parser], None]

    def parser(self, name: str) -> Parser:
        parser = Parser(
            prog=f"bluegreen {name}", usage=f"bluegreen {name} {self.usage}", add_help=False, allow_abbrev=False
        )
        self.arguments(parser)
        return parser


def app_only(parser: Parser) -> None:
    parser.add_argument("app", nargs="?", default="")


def app_and_color(parser: Parser) -> None:
    app_only(parser)
    parser.add_argument("color", nargs="?", default="")


def app_and_word(parser: Parser) -> None:
    """``[APP] [WORD]``: which of the two a lone word is, is decided against the configured apps."""
    parser.add_argument("words", nargs="*")


def flag(*names: str, dest: str | None = None) -> Callable[[Parser], None]:
    def add(parser: Parser) -> None:
        parser.add_argument(*names, action="store_true", **({"dest": dest} if dest else {}))

    return add


def both(*adders: Callable[[Parser], None]) -> Callable[[Parser], None]:
    def add(parser: Parser) -> None:
        for adder in adders:
            adder(parser)

    return add


def deploy_arguments(parser: Parser) -> None:
    app_and_word(parser)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--detach", action="store_true")
    when.add_argument("--wait", action="store_true")
    parser.add_argument("--allow-unsafe-migrations", dest="allow_unsafe", action="store_true")


def count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(text)
    return int(text)


def rollback_arguments(parser: Parser) -> None:
    app_only(parser)
    parser.add_argument("--to", default="")


def history_arguments(parser: Parser) -> None:
    app_only(parser)
    parser.add_argument("-n", dest="count", type=count, default=10)
    parser.add_argument("--all", action="store_true")


def words_option(parser: Parser, name: str, required: bool = False) -> None:
    """``--NAME TEXT...``: the words up to the next option are the text, quoted or not (supervisorctl joins its
    arguments with spaces before the plugin sees them: a shell's quotes are gone by then)."""
    parser.add_argument(f"--{name}", nargs="+", required=required, default=[])


def maintenance_arguments(parser: Parser) -> None:
    parser.add_argument("state", choices=("on", "off"))
    app_only(parser)
    words_option(parser, "message")


def lock_arguments(parser: Parser) -> None:
    app_only(parser)
    words_option(parser, "reason", required=True)


# every command, in the order help shows them; do_bluegreen dispatches to cmd_<name>
COMMANDS: dict[str, Command] = {
    "status": Command(
        "[APP] [--json]",
        "live and idle color per app, versions, states, last health, jobs",
        both(app_only, flag("--json")),
    ),
    "switch": Command(
        "[APP] [COLOR] [--wait]",
        "health-gated switch to the idle color (or COLOR); it must be RUNNING",
        both(app_and_color, flag("--wait")),
    ),
    "rollback": Command(
        "[APP] [--to COMMIT|-N]",
        "back to the previous color (still running, warm), health-gated;\n"
        "--to: a kept release (its commit, or -N: N releases before the live\n"
        "one) started again in the idle color, gated, switched, watched;\n"
        "never migrates, refused after a later release's contract migration",
        rollback_arguments,
    ),
    "restart": Command(
        "[APP]",
        "apply a changed environment with zero downtime: the live release\n"
        "started in the idle color, gated, switched, watched (a value that\n"
        "breaks the app rolls back by itself); workers follow",
        app_only,
    ),
    "contract": Command(
        "[APP]",
        "run the contract migrations a deploy held back, now (with contract =\n"
        "manual; after the watch window); the rollback target is cleared",
        app_only,
    ),
    "releases": Command(
        "[APP]",
        "the kept releases, newest first: id, commit, built at, job, which\ncolor runs it (rollback --to one of them)",
        app_only,
    ),
    "health": Command("[APP] [COLOR]", "probe COLOR (default: the live one) over its own socket now", app_and_color),
    "deploy": Command(
        "[APP] [REF] [--detach | --wait] [--allow-unsafe-migrations]",
        "git to live: build a release of its own beside the live site\n"
        "(checkout, deps, tests, gate, backup, migrate), then drain the idle\n"
        "color, point it at the release, start, health gate, switch, record,\n"
        "workers; REF defaults to the configured branch. A refused build\n"
        "leaves both colors as they were. During a watch window it builds at\n"
        "once and only its start waits.\n"
        "Returns at go-live while the watch window runs (a crash or failed\n"
        "probes of the new color roll back by themselves); --wait waits the\n"
        "window out and fails if it rolled back. The migration gate refuses\n"
        "migrations the serving code cannot survive; --allow-unsafe-migrations\n"
        "runs them anyway (recorded in history with who)",
        deploy_arguments,
    ),
    "cancel": Command(
        "[APP] [--force]",
        "stop a queued or running deploy before its switch; a running migrate\n"
        "is never cut in half (the deploy stops after it); --force kills even\n"
        "that (a hung migration; the schema may be left half changed)",
        both(app_only, flag("--force")),
    ),
    "log": Command(
        "[APP] [ID] [-f]",
        "the log of job ID (default: the newest) after a header line (who,\n"
        "ref, commit, queued/started/ended); -f follows it and its window",
        both(app_and_word, flag("-f", "--follow", dest="follow")),
    ),
    "history": Command(
        "[APP] [-n N] [--all]",
        "the last N jobs (default 10): ref, commit, color, who (the person and\n"
        "the account), queued/started/ended, outcome, steps; health probes\nonly with --all",
        history_arguments,
    ),
    "maintenance": Command(
        "on|off [APP] [--message TEXT]",
        "nginx answers the app's pages (health checks through nginx too)\n"
        "with 503, the message and Retry-After; static files stay served;\n"
        "no nginx reload; off serves the app again. TEXT: the words after\n"
        "--message (put APP before it)",
        maintenance_arguments,
    ),
    "lock": Command(
        "[APP] --reason TEXT",
        "refuse deploys, pushes, switches and rollbacks, saying the reason,\n"
        "who and since when, until unlock; the watch window's own rollback\n"
        "is never refused. TEXT: the words after --reason (APP before it)",
        lock_arguments,
    ),
    "unlock": Command("[APP]", "end a lock (whoever took it)", app_only),
    "backups": Command(
        "[APP]",
        "the app's database backups, newest first: name, size, time, commit,\n"
        "and whether the last verify restored it into a scratch database\n"
        "intact. Restore one from a root shell (never from here):\n"
        "bluegreen restore APP BACKUP --yes (fresh backup first; refused\n"
        "while a job runs)",
        app_only,
    ),
}
HELP_COLUMN = 36


def usage_text() -> str:
    """``help bluegreen``: every command of COMMANDS with what it does, the summary in a column of its own."""
    out = []
    for name, command in COMMANDS.items():
        synopsis = f"bluegreen {name} {command.usage}"
        summary = command.summary.split("\n")
        if len(synopsis) < HELP_COLUMN:
            out.append(f"{synopsis:<{HELP_COLUMN}}{summary.pop(0)}")
        else:
            out.append(synopsis)
        out.extend(" " * HELP_COLUMN + line for line in summary)
    out.append("APP may be omitted when one app is configured. Exit status 0 only when the command did what it says.")
    return "\n".join(out)


USAGE = usage_text()


class Unreachable(BluegreenError):
    """supervisord cannot be reached, or has no bluegreen API: one line with the fix, and an exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def unreachable(url: str, exc: OSError) -> tuple[str, int]:
    """What a failed connection to supervisord means, the fix, and supervisorctl's exit status for it."""
    where = f"cannot reach supervisord at {url}"
    if exc.errno == errno.ENOENT:
        return (
            f"{where}: no such socket: supervisord is not running (start it: systemctl start supervisor), "
            "or -c names another config than the one it runs with",
            LSBInitExitStatuses.NOT_RUNNING,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{where}: permission denied: run it as root (sudo supervisorctl ...); a git pusher deploys "
            "through the pre-receive hook and `bluegreen push` instead",
            LSBInitExitStatuses.INSUFFICIENT_PRIVILEGES,
        )
    if exc.errno == errno.ECONNREFUSED:
        return (
            f"{where}: connection refused: supervisord is not running (start it: systemctl start supervisor)",
            LSBInitExitStatuses.INSUFFICIENT_PRIVILEGES,  # what supervisorctl itself answers to a refused connection
        )
    reason = exc.strerror or str(exc) or "connection failed"
    return f"{where}: {reason}", LSBInitExitStatuses.GENERIC


def no_plugin(url: str) -> str:
    return (
        f"supervisord at {url} has no bluegreen API: its config does not load [rpcinterface:bluegreen]; "
        "include bluegreen.conf (`bluegreen example include`), then restart supervisord "
        "(systemctl restart supervisor): rpcinterfaces load only at start, `reread`/`update` do not load them"
    )


def who_text(person: str, account: str, via: str) -> str:
    """Who asked for a job, as history shows it: the person, then the Unix account, its host and the path taken.

    ``"Alice <alice@example.org> (abiapp@vm via git push)"``; the account alone (``"abi@vm via supervisorctl"``)
    when no person is known or the person is the account. The person is what the asking side says (a commit's
    committer, a hosting layer's user name, sudo's SUDO_USER); the account is the one the command ran as.
    """
    person = escape_controls(" ".join(person.split()))[:PERSON_MAX]
    where = f"{account}@{socket.gethostname()} via {via}"
    return f"{person} ({where})" if person and person != account else where


class BlueGreenControllerPlugin(ControllerPluginBase):
    name = "bluegreen"
    poll_interval = 0.2

    def __init__(self, controller: Any, **config: str):
        super().__init__(controller)
        self.who = who_text(os.environ.get("SUDO_USER", ""), getpass.getuser(), "supervisorctl")
        # supervisorctl asks every plugin for `help bluegreen`, its own first: without this, the
        # default plugin answers "*** No help on bluegreen" before our text
        self.help_elsewhere = False
        for plugin in getattr(getattr(controller, "options", None), "plugins", None) or []:
            if plugin is not self and not hasattr(plugin, "help_bluegreen"):
                plugin.help_bluegreen = self.help_bluegreen
                self.help_elsewhere = True
                break

    # -- helpers -----------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        return self.ctl.get_server_proxy("bluegreen")

    def fail(self, message: str, status: int = LSBInitExitStatuses.GENERIC) -> None:
        self.ctl.output(f"ERROR: {message}")
        self.ctl.exitstatus = status

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call the API; a Fault is printed with its message and sets supervisor's exit status.

        A supervisord that cannot be reached or has no bluegreen API raises Unreachable (one line, the fix).
        """
        try:
            return method(*args)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == Faults.UNKNOWN_METHOD:
                raise Unreachable(no_plugin(self.serverurl), LSBInitExitStatuses.UNIMPLEMENTED_FEATURE) from None
            self.ctl.output(f"ERROR: {exc.faultString}")
            self.ctl.set_exitstatus_from_xmlrpc_fault(exc.faultCode)
            return None
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode == 401:
                raise  # supervisorctl asks for a username and password itself
            raise Unreachable(
                f"supervisord at {self.serverurl} answered HTTP {exc.errcode} {exc.errmsg}", LSBInitExitStatuses.GENERIC
            ) from None
        except OSError as exc:
            raise Unreachable(*unreachable(self.serverurl, exc)) from None

    @property
    def serverurl(self) -> str:
        return str(getattr(getattr(self.ctl, "options", None), "serverurl", "") or "supervisord's serverurl")

    def follow(self, app: str, job: dict[str, Any], announce: bool = True, window: bool = False) -> None:
        """Print a job's log as it grows until it ends; exit status 0 only when it succeeded.

        With ``window``, a job that went live is followed through its watch window too, and a
        window that rolled back by itself fails the command.
        """
        job_id, offset = job["id"], 0
        if announce:
            self.ctl.output(f"{job['app']}: {job['kind']} queued as job {job_id}")
        try:
            while True:
                answer = self.call(self.api.job, job["app"], job_id, offset)
                if answer is None:
                    return
                if answer["log"]:
                    self.ctl.output(answer["log"].rstrip("\n"))
                offset = answer["offset"]
                status = answer["job"]["status"]
                watched = window and (answer["job"].get("watch") or {}).get("state") == "running"
                if status not in ACTIVE and not watched:
                    break
                if status in ACTIVE and answer["job"].get("live") and not window:
                    return self.went_live(job["app"], answer["job"])
                time.sleep(self.poll_interval)
        except KeyboardInterrupt:  # only the watching stops: the job runs in the listener
            self.fail(f"stopped following; job {job_id} goes on: bluegreen log {job['app']} {job_id} -f")
            return
        message = answer["job"].get("message") or f"job {job_id} {status}"
        outcome = answer["job"].get("watch") or {}
        if status != Status.SUCCEEDED:  # the verdict, what is live; the step's whole output stays in the log
            self.fail(f"{message}\nwhole log: supervisorctl bluegreen log {job['app']} {job_id}")
        elif window and outcome.get("state") == "rolled back":
            self.fail(f"{message.splitlines()[0]}\nrolled back automatically: {outcome.get('reason', '')}")
        elif window and outcome.get("state"):
            self.ctl.output(message.splitlines()[0])
            self.ctl.output(
                f"watch window {outcome['state']}" + (f": {outcome['reason']}" if outcome.get("reason") else "")
            )
        else:
            self.ctl.output(message)

    def went_live(self, app: str, job: dict[str, Any]) -> None:
        """Traffic moved: the command is done (exit 0); the job goes on handing the workers over."""
        self.ctl.output(job["live"])
        self.ctl.output(
            f"the workers are being handed over to the new code (job {job['id']} goes on: "
            f"supervisorctl bluegreen log {app} {job['id']} -f)"
        )

    # -- commands ----------------------------------------------------------------------------
    def do_bluegreen(self, arg: str) -> None:
        try:
            words = shlex.split(arg)
        except ValueError as exc:
            return self.fail(f"cannot parse arguments: {exc}", LSBInitExitStatuses.INVALID_ARGS)
        if not words or words[0] in ("help", "-h", "--help"):
            return self.help_bluegreen()
        name, rest = words[0], words[1:]
        command = COMMANDS.get(name)
        if command is None:
            self.fail(f"unknown bluegreen command {name!r}", LSBInitExitStatuses.INVALID_ARGS)
            return self.help_bluegreen()
        if {"-h", "--help"} & set(rest):
            return self.ctl.output(f"bluegreen {name} {command.usage}\n    " + command.summary.replace("\n", " "))
        try:
            options = command.parser(name).parse_intermixed_args(rest)
            getattr(self, f"cmd_{name}")(options)
        except UsageError as exc:
            self.fail(f"{exc}\nusage: bluegreen {name} {command.usage}", LSBInitExitStatuses.INVALID_ARGS)
        except Unreachable as exc:
            self.fail(str(exc), exc.status)
        return None

    def do_help(self, arg: str) -> None:
        """``help bluegreen`` is answered by the default plugin (see __init__); other topics are not ours."""
        if not arg.strip():
            super().do_help(arg)
        elif arg.strip() == "bluegreen" and not self.help_elsewhere:
            self.help_bluegreen()

    def cmd_status(self, options: argparse.Namespace) -> None:
        apps = self.call(self.api.status, options.app)
        if apps is None:
            return
        if options.json:
            self.ctl.output(json.dumps(apps, indent=2, sort_keys=True))
            return
        for app in apps:
            self.ctl.output(format_status(app))

    def start_and_follow(self, method: str, *args: Any, window: bool = False) -> None:
        """Queue a job with ``args`` and ``who``, then follow it to its end."""
        job = self.call(getattr(self.api, method), *args, self.who)
        if job:
            self.follow(job["app"], job, window=window)

    def cmd_switch(self, options: argparse.Namespace) -> None:
        self.start_and_follow("switch", options.app, options.color, window=options.wait)

    def cmd_rollback(self, options: argparse.Namespace) -> None:
        job = self.call(self.api.rollback, options.app, self.who, options.to)
        if job:
            self.follow(job["app"], job)

    def cmd_restart(self, options: argparse.Namespace) -> None:
        self.start_and_follow("restart", options.app)

    def cmd_contract(self, options: argparse.Namespace) -> None:
        self.start_and_follow("contract", options.app)

    def cmd_releases(self, options: argparse.Namespace) -> None:
        entries = self.call(self.api.releases, options.app)
        if entries is None:
            return
        if not entries:
            self.ctl.output("no releases kept yet (each deploy builds one)")
        for e in entries:
            self.ctl.output(format_release(e))

    def cmd_health(self, options: argparse.Namespace) -> None:
        self.start_and_follow("health", options.app, options.color)

    def app_and_word(self, words: list[str], is_word: Callable[[str], bool]) -> tuple[str, str]:
        """``[APP] [WORD]``: a lone word is the app when it names one, or does not look like a WORD (``is_word``).

        A lone word that is one or two letters off an app's name is a mistyped app, refused: deploying
        it as a ref would fail only after the job was queued.
        """
        if len(words) > 2:
            raise UsageError(f"unrecognized arguments: {' '.join(words[2:])}")
        if len(words) != 1:
            padded = [*words, "", ""]
            return padded[0], padded[1]
        word = words[0]
        names = [a["app"] for a in self.call(self.api.status, "") or []]
        if word in names or not is_word(word):
            return word, ""
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.75)
        if close:
            raise UsageError(f"unknown app {word!r} (did you mean {close[0]}?); a REF comes after the app's name")
        return "", word

    def cmd_deploy(self, options: argparse.Namespace) -> None:
        app, ref = self.app_and_word(options.words, lambda word: True)
        job = self.call(self.api.deploy, app, ref, self.who, options.allow_unsafe)
        if not job:
            return None
        if options.detach:
            app, job_id = job["app"], job["id"]
            self.ctl.output(f"{app}: deploy queued as job {job_id}; follow it: bluegreen log {app} {job_id} -f")
            return None
        return self.follow(job["app"], job, window=options.wait)

    def cmd_cancel(self, options: argparse.Namespace) -> None:
        job = self.call(self.api.cancel, options.app, options.force)
        if job:
            self.ctl.output(f"{job['app']}: cancelling deploy job {job['id']}")
            answer = self.wait_end(job["app"], job["id"])
            if answer and answer["job"]["status"] != Status.CANCELLED:
                self.fail(f"job {job['id']} ended {answer['job']['status']} before it could be cancelled")
            elif answer:
                self.ctl.output(answer["job"].get("message", "").split("\n")[-1] or "cancelled")

    def wait_end(self, app: str, job_id: int) -> dict[str, Any] | None:
        while True:
            answer = self.call(self.api.job, app, job_id, 0)
            if answer is None or answer["job"]["status"] not in ACTIVE:
                return answer
            time.sleep(self.poll_interval)

    def cmd_log(self, options: argparse.Namespace) -> None:
        app, word = self.app_and_word(options.words, str.isdigit)
        if word and not word.isdigit():
            raise UsageError(f"job id must be a number, got {word!r}")
        answer = self.call(self.api.log, app, int(word or 0), 0)
        if answer is None:
            return None
        job = answer["job"]
        self.ctl.output(format_header(job))
        if options.follow:
            return self.follow(job["app"], job, announce=False, window=True)
        while answer and answer["log"]:  # the whole log, one chunk (64 KB) an answer
            self.ctl.output(answer["log"].rstrip("\n"))
            answer = self.call(self.api.log, job["app"], job["id"], answer["offset"])
        self.ctl.output(job.get("message") or f"job {job['id']} {job['status']}")
        return None

    def cmd_history(self, options: argparse.Namespace) -> None:
        entries = self.call(self.api.history, options.app, options.count, options.all)
        if entries is None:
            return None
        for e in entries:
            self.ctl.output(format_history(e))
        return None

    def record(self, method: str, *args: Any) -> None:
        """Call a method that does its change at once (lock, unlock, maintenance) and print what it did."""
        job = self.call(getattr(self.api, method), *args, self.who)
        if job:
            self.ctl.output(job["message"])

    def cmd_maintenance(self, options: argparse.Namespace) -> None:
        self.record("maintenance", options.app, options.state == "on", " ".join(options.message))

    def cmd_lock(self, options: argparse.Namespace) -> None:
        self.record("lock", options.app, " ".join(options.reason))

    def cmd_unlock(self, options: argparse.Namespace) -> None:
        self.record("unlock", options.app)

    def cmd_backups(self, options: argparse.Namespace) -> None:
        entries = self.call(self.api.backups, options.app)
        if entries is None:
            return None
        if not entries:
            self.ctl.output("no backups")
        for e in entries:
            self.ctl.output(format_backup(e))
        return None

    def help_bluegreen(self) -> None:
        self.ctl.output(USAGE)


def ago(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "never"


def _stamp(timestamp: float, day_of: float) -> str:
    """The time of ``timestamp``, with its date only when it is not the day of ``day_of``."""
    when, day = datetime.fromtimestamp(timestamp), datetime.fromtimestamp(day_of)
    return when.strftime("%H:%M:%S" if when.date() == day.date() else "%Y-%m-%d %H:%M:%S")


def format_times(e: dict[str, Any]) -> str:
    """When a job was queued, started and ended (its ``created``, ``started``, ``finished``), with the wait and
    the run time: ``queued 2026-12-07 02:44:01, started 02:44:05 (after 4.0 s), ended 02:45:10 (ran 65.0 s)``."""
    queued, started, ended = (float(e.get(key) or 0) for key in ("created", "started", "finished"))
    parts = [f"queued {ago(queued)}"]
    if started:
        parts.append(f"started {_stamp(started, queued)} (after {max(0.0, started - queued):.1f} s)")
    else:
        parts.append("never started" if ended else "not started yet")
    if ended and started:
        parts.append(f"ended {_stamp(ended, queued)} (ran {max(0.0, ended - started):.1f} s)")
    elif ended:
        parts.append(f"ended {_stamp(ended, queued)}")
    elif started:
        parts.append("not ended yet")
    return ", ".join(parts)


def format_header(job: dict[str, Any]) -> str:
    """The first line of ``log``: the job, who asked for it, what it deploys, and when it was queued, started, ended."""
    args = job.get("args") if isinstance(job.get("args"), dict) else {}
    ref = job.get("ref") or args.get("ref") or ""
    what = "".join(
        f", {name} {value}" for name, value in (("ref", ref), ("commit", (job.get("commit") or "")[:12])) if value
    )
    kind, status, who = (job.get(key) or "?" for key in ("kind", "status", "who"))
    return f"job {job['id']} {kind} ({status}) by {who}{what}: {format_times(job)}"


def behind_branch(h: dict[str, Any], app: dict[str, Any]) -> str:
    """A status line when the live commit is not the head the branch had at the last deploy ('' when it is)."""
    live = (app.get("colors") or {}).get(app.get("live") or "", {})
    commit = str(h.get("commit") or "")
    if not live or not commit or str(live.get("version") or "") == commit[:7]:
        return ""
    return f"  NOT the branch head: {h.get('branch')} is at {commit[:7]}, live runs {live.get('version') or '?'}"


# The optional lines of a status, in order: each renders its field when the field is set ("" to leave it out).
_STATUS_EXTRAS: tuple[tuple[str, Callable[[Any, dict[str, Any]], str]], ...] = (
    ("last_health", lambda h, _: f"  last health: {h['color']} {'ok' if h['ok'] else 'FAIL'} {h['detail']}"
                                 f" at {ago(h['at'])}"),
    ("watch", lambda w, _: f"  watch: {w['color']} watched for {w['remaining']:.0f} s more; a crash or failed probes"
                           f" roll back to {w['previous']} by themselves"),
    ("contract", lambda c, app: "  contract migrations waiting for "
                                + (f"`bluegreen contract {app['app']}`: "
                                   if app.get("contract_mode") == "manual" and not app.get("watch")
                                   else "the window to pass: ")
                                + ", ".join(c.get("migrations") or [])),
    ("rollback_cleared", lambda r, app: "" if app.get("previous") else
        f"  rollback: none; contract migrations of deploy job {r.get('job')} ran (job {r.get('contract')}), and"
        " rolling back past them is not safe"),
    ("branch_head", behind_branch),
    ("releases", lambda rs, _: f"  releases: {len(rs)} kept, newest {rs[0]['commit'][:7]} built {ago(rs[0]['built'])}"
                               " (bluegreen releases)"),
    ("locked", lambda _, __: "  lock: held by the listener (a job or a watch window)"),
    ("lock", lambda k, _: f"  LOCKED by {k['who'] or '?'} since {ago(k['since'])}: {k['reason']} (deploys, pushes,"
                          " switches and rollbacks refused; bluegreen unlock)"),
    ("maintenance", lambda m, _: f"  MAINTENANCE since {ago(m['since'])} by {m['who'] or '?'}: nginx answers 503"
                                 f" with {m['message'] or m['page']!r}"),
    ("running", lambda r, _: f"  in progress: {r['kind']} job {r['id']} {r['status']} step {r['step'] or '-'}"
                             f" ({r['elapsed']:.1f} s)" + (f", waiting for the watch window of job {r['waiting']}"
                                                           if r.get("waiting") else "")),
    ("last_job", lambda j, _: f"  last job: {j['kind']} job {j['id']} {j['status']}: {j['message'].splitlines()[0]}"),
)  # fmt: skip


def format_status(app: dict[str, Any]) -> str:
    """The human form of one app's status: a line per color, then health and jobs."""
    lines = [
        f"{app['app']} ({app['switch_mode']} switch): live {app['live'] or 'none'} since {ago(app['switched_at'])}"
    ]
    for name, c in app["colors"].items():
        version = f" {c['version']}" if c.get("version") else ""
        version += f" release {c['release']}" if c.get("release") else ""
        lines.append(f"  {name:<8} {c['role']:<5} {c['program']:<24} {c['state']:<9}{version}")
    lines.extend(format_worker(w, app) for w in app.get("workers") or [])
    for key, render in _STATUS_EXTRAS:
        line = render(app[key], app) if app.get(key) else ""
        if line:
            lines.append(line)
    return "\n".join(lines)


def format_worker(w: dict[str, Any], app: dict[str, Any]) -> str:
    """A worker's status line: state, pid, how long up, and which color's release it runs (its directory)."""
    line = f"  {'worker':<8} {'':<5} {w['program']:<24} {w['state']:<9}"
    if not w.get("pid"):
        return line
    runs = [
        name
        for name, c in app["colors"].items()
        if c.get("release") and f"/{c['release']}/" in f"{w.get('directory') or ''}/"
    ]
    where = f"runs {' and '.join(runs)}'s release" if runs else f"in {w.get('directory') or '?'}"
    return line + f" pid {w['pid']}, up since {ago(w['since'])}, {where}"


def format_release(e: dict[str, Any]) -> str:
    """One line per kept release: its id, commit, when built, by which job, the colors that run it."""
    runs = f"  run by {', '.join(e['colors'])}" if e.get("colors") else ""
    live = "  LIVE" if e.get("live") else ""
    return f"{e['id']}  commit {e['commit'][:12]}  built {ago(e['built'])}  job {e['job']}{runs}{live}"


def format_backup(e: dict[str, Any]) -> str:
    """One line per backup: name, size, when taken, commit, last verify."""
    size, unit = float(e["size"]), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    v = e.get("verified") or {}
    if not v:
        verified = "not verified"
    elif v.get("ok"):
        verified = f"verified {ago(v['verified_at'])}: {v['tables']} tables, {v['rows']} rows ({v['seconds']:.1f} s)"
    else:
        first = (v.get("mismatches") or ["?"])[0]
        verified = f"VERIFY FAILED {ago(v.get('verified_at') or 0)}: {first}"
    shown = f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
    return f"{e['name']}  {shown}  taken {e['taken']}  commit {e['commit']}  {verified}"


def format_history(e: dict[str, Any]) -> str:
    """One line per job, then its step timings."""
    commit = (e.get("commit") or "")[:7] or "-"
    head = (
        f"#{e['id']:<4} {ago(e['created'])}  {e['kind']:<8} {e['status']:<11} ref={e.get('ref') or '-'} "
        f"commit={commit} color={e.get('color') or '-'} by {e.get('who') or '?'}"
    )
    steps = " ".join(f"{s['name']}={s['seconds']:.1f}s" for s in e.get("steps", []))
    lines = [head, f"      {format_times(e)}", f"      {e['message']}"]
    if steps:
        lines.append(f"      steps: {steps}")
    watched = e.get("watch") or {}
    if watched.get("state") and watched["state"] != "running":
        reason = f": {watched['reason']}" if watched.get("reason") else ""
        lines.append(f"      watch window: {watched['state']}{reason}")
    if e.get("release"):
        lines.append(f"      release: {e['release']}")
    if e.get("unsafe_allowed"):
        lines.append(f"      UNSAFE migrations allowed by {e['unsafe_allowed']} (--allow-unsafe-migrations)")
    if e.get("backup"):
        lines.append(f"      backup: {e['backup']}")
    check = e.get("backup_verify") or {}
    if check:
        verdict = "verified" if check.get("ok") else "VERIFY FAILED: " + "; ".join(check.get("mismatches") or [])
        lines.append(f"      backup {verdict} ({check.get('tables')} tables, {check.get('rows')} rows)")
    return "\n".join(lines)


def make_bluegreen_controllerplugin(controller: Any, **config: str) -> BlueGreenControllerPlugin:
    """Factory named in ``[ctlplugin:bluegreen] supervisor.ctl_factory``."""
    return BlueGreenControllerPlugin(controller, **config)
