"""``bluegreen.*`` inside supervisord: validate, queue a job, wake the listener, read state.

Thin on purpose: supervisord is single-threaded, so nothing here waits on a process, a socket
or a subprocess; the listener does the work. The factory is called once per HTTP server and
again after every ``reload``, so nothing shared lives on the instance: it is on disk (shared/store.py)
or at module level (the config cache and the set of errors already logged).

It imports supervisor, the standard library and the stdlib-only modules config, stepdefs, refs,
backuplist, jobargs and state: never the listener's side (requests, jinja2, psutil, subprocess), so a broken
install there cannot keep supervisord, and the live app, from starting. No call here waits: the queue lock is only
tried (a busy queue answers "try again"), nothing is fsynced, and every file read is bounded.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from supervisor.events import RemoteCommunicationEvent, notify
from supervisor.options import split_namespec
from supervisor.states import getProcessStateDescription
from supervisor.xmlrpc import Faults, RPCError

from supervisor_bluegreen import __version__
from supervisor_bluegreen.shared import maintenance, releaselist
from supervisor_bluegreen.shared.backuplist import backup_dir_of, list_backups
from supervisor_bluegreen.shared.config import App, Config, ConfigError, load
from supervisor_bluegreen.shared.jobargs import (
    BadArguments,
    DeployArgs,
    HealthArgs,
    JobArgs,
    NoArgs,
    RollbackArgs,
    SwitchArgs,
    T,
    build,
    stored,
)
from supervisor_bluegreen.shared.model import ACTIVE, FINISHED, Kind, Status, lock_refusal, when
from supervisor_bluegreen.shared.refs import WAKE_TYPE, ref_problem
from supervisor_bluegreen.shared.store import Busy, Store, history_entry, private_dir_problem
from supervisor_bluegreen.shared.textsafe import clean

API_VERSION = "1.0"
EXCLUSIVE = (Kind.SWITCH, Kind.ROLLBACK, Kind.RESTART, Kind.CONTRACT)
_cache: dict[str, tuple[float, Config | ConfigError]] = {}
_logged: set[str] = set()
LOCK_WAIT = 0.05  # the longest supervisord's loop waits for the job queue's lock before answering "busy"
F = TypeVar("F", bound=Callable[..., Any])


def app_store(app: App) -> Store:
    """The app's state as supervisord uses it: no fsync, the queue lock only tried (never waited for)."""
    return Store(app.state_dir, app.name, sync=False, lock_wait=LOCK_WAIT)


def answers(method: F) -> F:
    """An API method whose file troubles come back as a Fault that says what, never as a traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Busy as exc:
            raise RPCError(Faults.STILL_RUNNING, f"{exc}; nothing changed") from None
        except (OSError, ValueError) as exc:  # UnsafePath included: a symlink, FIFO or oversized state file
            raise RPCError(Faults.FAILED, f"bluegreen: {exc}") from None

    return wrapper  # type: ignore[return-value]


def xmlrpc_safe(value: Any) -> Any:
    """``value`` with every None made "" (XML-RPC has no nil without an extension) and every string's control
    characters spelled out (XML 1.0 cannot carry them: one would break supervisorctl's parser)."""
    return clean(value, nil="")


def read_config(path: str) -> Config | ConfigError:
    """The config at ``path``, re-read only when the file changed (module-level: survives reloads)."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = -1.0
    cached = _cache.get(path)
    if cached is None or cached[0] != mtime:
        try:
            cached = (mtime, load(path))
        except ConfigError as exc:
            cached = (mtime, exc)
        except Exception as exc:  # noqa: BLE001 (whatever the file holds, supervisord must start)
            cached = (mtime, ConfigError(path, [f"cannot parse: {type(exc).__name__}: {exc}"]))
        _cache[path] = cached
    return cached[1]


class BlueGreenNamespaceRPCInterface:
    """The ``bluegreen`` XML-RPC namespace."""

    def __init__(self, supervisord: Any, config: str, listener: str = "bluegreen"):
        self.supervisord = supervisord
        self.config_path = config
        self.listener = listener
        self._report(read_config(config))

    def _report(self, result: Config | ConfigError) -> None:
        """Log a broken config once, plainly; supervisord and the live app keep running."""
        if isinstance(result, ConfigError) and str(result) not in _logged:
            _logged.add(str(result))
            self.supervisord.options.logger.error(f"bluegreen: config is broken, bluegreen commands are off: {result}")

    def _config(self) -> Config:
        result = read_config(self.config_path)
        self._report(result)
        if isinstance(result, ConfigError):
            raise RPCError(Faults.CANT_REREAD, f"bluegreen config is broken: {result}")
        return result

    def _app(self, name: str) -> App:
        try:
            return self._config().app(name)
        except KeyError as exc:
            raise RPCError(Faults.BAD_NAME, exc.args[0]) from None

    def _color(self, app: App, name: str) -> str:
        if name and name not in app.color_names:
            raise RPCError(
                Faults.BAD_NAME, f"unknown color {name!r} for app {app.name} (colors: {', '.join(app.color_names)})"
            )
        return name

    def _private(self, app: App) -> None:
        """Refuse to write where the app user could replace files (stat calls only: never blocks)."""
        problem = private_dir_problem(app.state_dir)
        if problem:
            raise RPCError(
                Faults.FAILED, f"{app.name}: state_dir {app.state_dir} is not safe: {problem}; nothing changed"
            )

    def _process_state(self, program: str) -> str:
        """supervisor's state name for ``program``, read in-process (no I/O)."""
        group_name, name = split_namespec(program)
        group = self.supervisord.process_groups.get(group_name)
        process = group.processes.get(name) if group else None
        if process is None:
            return "UNKNOWN"
        return getProcessStateDescription(process.get_state())

    def _workers(self, app: App) -> list[dict[str, Any]]:
        """Each worker program (the colors' own, then those that follow live_root): its state, pid, since when it
        runs, and the directory it runs in (in-process;
        the directory is the kernel's /proc link, the release it runs, read without following anything)."""
        found = []
        own = [(program, c.name) for c in app.colors for program in c.workers]
        for program, color in [*own, *((p, "") for p in (app.deploy.workers if app.deploy else ()))]:
            group_name, name = split_namespec(program)
            group = self.supervisord.process_groups.get(group_name)
            process = group.processes.get(name) if group else None
            pid = int(process.pid or 0) if process else 0
            try:
                directory = os.readlink(f"/proc/{pid}/cwd") if pid else ""
            except OSError:
                directory = ""
            found.append(
                {
                    "program": program,
                    "state": self._process_state(program),
                    "pid": pid,
                    "since": float(process.laststart or 0) if pid else 0.0,
                    "directory": directory,
                    "color": color,  # a color's own worker ('' for one that follows live_root)
                }
            )
        return found

    def _args(self, app: App, kind: type[T], **raw: Any) -> T:
        """A job's typed arguments (jobargs.py): a name or type the listener would not take is refused here."""
        try:
            return build(kind, raw)
        except BadArguments as exc:
            raise RPCError(Faults.BAD_ARGUMENTS, f"{app.name}: {exc}; nothing changed") from None

    def _unlocked(self, app: App, kind: Kind) -> None:
        """Refuse a deploy (a push's too), a switch or a person's rollback while the app is locked: the reason, who
        and since when. The watch window's own rollback never comes here (the listener queues it itself)."""
        why = lock_refusal(app.name, app_store(app).read(), kind, {})
        if why:
            raise RPCError(Faults.FAILED, f"{why}; nothing changed")

    def _text(self, app: App, name: str, value: Any, required: bool = False) -> str:
        """A person's words (a reason, a message): a string, bounded; BAD_ARGUMENTS otherwise."""
        if not isinstance(value, str) or (required and not value.strip()):
            got = "nothing" if isinstance(value, str) else type(value).__name__
            raise RPCError(Faults.BAD_ARGUMENTS, f"{app.name}: {name} must be some text, got {got}; nothing changed")
        return value.strip()[: maintenance.MESSAGE_MAX]

    def _queue(self, app: App, kind: Kind, args: JobArgs, who: str) -> dict[str, Any]:
        """Record the job and wake the listener.

        A switch or rollback is refused while another job of the app is active (it would act on a
        state about to change), unless that job already moved traffic and only hands the workers over
        (``live``): then it queues and runs right after. Deploys queue, and queued deploys coalesce to
        the newest; health checks run at once, beside anything.
        """
        if self._process_state(self.listener) != "RUNNING":
            raise RPCError(Faults.NOT_RUNNING, f"the bluegreen event listener ({self.listener}) is not running")
        self._private(app)
        store = app_store(app)
        if kind in EXCLUSIVE:
            active = [j for j in store.jobs(ACTIVE) if j["kind"] != Kind.HEALTH and not j.get("live")]
            if active:
                j = active[0]
                raise RPCError(
                    Faults.STILL_RUNNING, f"{app.name}: {j['kind']} (job {j['id']}) is {j['status']}; nothing changed"
                )
        job = store.enqueue(kind, stored(args), who, coalesce=kind == Kind.DEPLOY)
        notify(RemoteCommunicationEvent(WAKE_TYPE, json.dumps({"app": app.name, "job": job["id"]})))
        return xmlrpc_safe(job)

    # -- the API -----------------------------------------------------------------------------
    @answers
    def getAPIVersion(self) -> str:
        """Version of the bluegreen API (and of the package, after a slash)."""
        return f"{API_VERSION}/{__version__}"

    @answers
    def status(self, app: str = "") -> list[dict[str, Any]]:
        """Per app: live and idle color, their supervisor state and version, last health, last and running job."""
        config = self._config()
        apps = [self._app(app)] if app else list(config.apps.values())
        return xmlrpc_safe([self._status(a) for a in apps])

    def _status(self, app: App) -> dict[str, Any]:
        store = app_store(app)
        state = store.read()
        live = state.get("live")
        colors = {
            c.name: {
                "program": c.program,
                "state": self._process_state(c.program),
                "role": "live" if c.name == live else "idle",
                "version": state.get("colors", {}).get(c.name, {}).get("version", ""),
                "commit": state.get("colors", {}).get(c.name, {}).get("commit", ""),
                "release": state.get("colors", {}).get(c.name, {}).get("release", ""),
            }
            for c in app.colors
        }
        running = store.jobs(ACTIVE)
        current = None
        if running:
            j = running[0]
            started = j.get("started") or j.get("created")
            current = {
                "id": j["id"],
                "kind": j["kind"],
                "status": j["status"],
                "step": j.get("step", ""),
                "elapsed": round(time.time() - started, 1) if started else 0.0,
                "waiting": int(j.get("waiting_for") or 0),  # a queued deploy: the job whose watch window it waits for
            }
        window = state.get("watch") or {}
        remaining = round(float(window.get("until", 0)) - time.time(), 1) if isinstance(window, dict) else 0.0
        return {
            "app": app.name,
            "live": live or "",
            "watch": {**window, "remaining": remaining} if remaining > 0 else {},
            "contract": state.get("contract") or {},
            "contract_mode": app.deploy.contract if app.deploy else "auto",  # manual: `bluegreen contract` runs it
            "rollback_cleared": state.get("rollback_cleared") or {},
            "previous": state.get("previous") or "",
            "switch_mode": app.switch_mode,
            "switched_at": state.get("switched_at") or 0,
            "locked": store.lock.held_elsewhere(),  # by a live listener running a job; never stale
            "lock": state.get("lock") or {},  # a person's: deploys, switches, rollbacks and pushes refused
            "maintenance": self._maintenance(app, state),
            "colors": colors,
            "workers": self._workers(app),
            "releases": releaselist.listing(state),
            "branch_head": state.get("branch_head") or {},  # the branch's commit when a deploy last resolved it
            "last_health": state.get("last_health") or {},
            "last_job": state.get("last_job") or {},
            "running": current or {},
        }

    @staticmethod
    def _maintenance(app: App, state: dict[str, Any]) -> dict[str, Any]:
        """The maintenance page as nginx sees it (the file is the truth; who, since and the message are the state's)."""
        if not maintenance.page_exists(app):
            return {}
        return {"page": app.maintenance_page, **(state.get("maintenance") or {"who": "", "since": 0, "message": ""})}

    @answers
    def switch(self, app: str = "", color: str = "", who: str = "") -> dict[str, Any]:
        """Queue a health-gated switch to ``color`` (default: the idle color); returns the job."""
        a = self._app(app)
        args = self._args(a, SwitchArgs, wanted=color)
        self._unlocked(a, Kind.SWITCH)
        target = self._color(a, args.wanted)
        live = app_store(a).read().get("live")
        name = target or (a.other(live).name if live else "")
        if name:
            state = self._process_state(a.color(name).program)
            if state != "RUNNING":
                raise RPCError(Faults.NOT_RUNNING, f"{a.name}: {name} is {state}, not RUNNING; nothing changed")
        return self._queue(a, Kind.SWITCH, args, who)

    @answers
    def rollback(self, app: str = "", who: str = "", to: str = "") -> dict[str, Any]:
        """Queue a rollback: to the previous color (warm, health-gated, no rebuild), or with ``to`` (a commit, or
        -N: N releases before the live one) a kept release started again in the idle color; returns the job."""
        a = self._app(app)
        problem = releaselist.to_problem(to) if to else ""
        if problem:
            raise RPCError(Faults.BAD_ARGUMENTS, f"{a.name}: {problem}; nothing changed")
        self._unlocked(a, Kind.ROLLBACK)
        state = app_store(a).read()
        if not to and not state.get("previous") and len(releaselist.recorded(state)) < 2:
            cleared = state.get("rollback_cleared") or {}
            why = (
                f"contract migrations of deploy job {cleared.get('job')} ran, and rolling back past them is not safe"
                if cleared
                else "no previous color recorded"
            )
            raise RPCError(Faults.FAILED, f"{a.name}: nothing to roll back to ({why}); nothing changed")
        return self._queue(a, Kind.ROLLBACK, self._args(a, RollbackArgs, to=to), who)

    @answers
    def restart(self, app: str = "", who: str = "") -> dict[str, Any]:
        """Queue a restart: the live release started again in the idle color with the current environment,
        health-gated, switched and watched (a value that breaks the app rolls back by itself); returns the job."""
        a = self._app(app)
        if a.deploy is None:
            raise RPCError(Faults.FAILED, f"{a.name}: no repo configured, so no release to restart; nothing changed")
        self._unlocked(a, Kind.RESTART)
        return self._queue(a, Kind.RESTART, NoArgs(), who)

    @answers
    def releases(self, app: str = "") -> list[dict[str, Any]]:
        """The app's kept releases, newest first: id, commit, built at, job, the colors that run it, live or not."""
        a = self._app(app)
        return xmlrpc_safe(releaselist.listing(app_store(a).read()))

    @answers
    def health(self, app: str = "", color: str = "", who: str = "") -> dict[str, Any]:
        """Queue a health check of ``color`` (default: the live one) over its own socket; returns the job."""
        a = self._app(app)
        args = self._args(a, HealthArgs, color=color)
        self._color(a, args.color)
        return self._queue(a, Kind.HEALTH, args, who)

    @answers
    def deploy(self, app: str = "", ref: str = "", who: str = "", allow_unsafe: bool = False) -> dict[str, Any]:
        """Queue a deploy of ``ref`` (default: the configured branch); queued deploys coalesce to the newest.

        ``allow_unsafe`` lets migrations the gate refuses run anyway (recorded in history with ``who``).
        """
        a = self._app(app)
        if a.deploy is None:
            raise RPCError(Faults.FAILED, f"{a.name}: no repo configured, nothing to deploy from; nothing changed")
        args = self._args(a, DeployArgs, ref=ref, allow_unsafe=allow_unsafe)
        problem = ref_problem(args.ref) if args.ref else None
        if problem:
            raise RPCError(Faults.BAD_ARGUMENTS, f"{a.name}: {problem}; nothing changed")
        self._unlocked(a, Kind.DEPLOY)
        return self._queue(a, Kind.DEPLOY, args, who)

    @answers
    def contract(self, app: str = "", who: str = "") -> dict[str, Any]:
        """Queue the contract migrations a deploy held back, in the live color (``contract = manual``: a fleet on one
        database runs them once every host serves the new release); returns the job. Refused when none wait,
        or while the watch window runs (the old code may still come back)."""
        a = self._app(app)
        state = app_store(a).read()
        pending = state.get("contract") or {}
        if not pending:
            raise RPCError(Faults.FAILED, f"{a.name}: no contract migrations wait; nothing changed")
        window = state.get("watch") or {}
        if isinstance(window, dict) and float(window.get("until", 0)) > time.time():
            raise RPCError(
                Faults.FAILED,
                f"{a.name}: the watch window of job {window.get('job')} runs until {when(window.get('until'))}: "
                "contract migrations wait for it; nothing changed",
            )
        return self._queue(a, Kind.CONTRACT, self._args(a, NoArgs), who)

    @answers
    def lock(self, app: str = "", reason: str = "", who: str = "") -> dict[str, Any]:
        """Lock the app: deploys, pushes, switches and a person's rollbacks are refused with ``reason``, who and
        since when, until ``unlock``. The watch window's automatic rollback is never refused. Returns the record."""
        a = self._app(app)
        why = self._text(a, "reason", reason, required=True)
        self._private(a)
        store = app_store(a)
        with store.queue_lock():
            held = store.read().get("lock") or {}
            if held:
                raise RPCError(
                    Faults.FAILED,
                    f"{a.name}: already locked by {held.get('who') or '?'} since {when(held.get('since'))}: "
                    f"{held.get('reason')}; nothing changed",
                )
            lock = {"who": who, "since": time.time(), "reason": why}
            job = store.record(Kind.LOCK, {"reason": why}, who, f"{a.name}: locked: {why}", lock=lock)
        return xmlrpc_safe(job)

    @answers
    def unlock(self, app: str = "", who: str = "") -> dict[str, Any]:
        """Unlock the app (whoever locked it); returns the record."""
        a = self._app(app)
        self._private(a)
        store = app_store(a)
        with store.queue_lock():
            held = store.read().get("lock") or {}
            if not held:
                raise RPCError(Faults.FAILED, f"{a.name}: not locked; nothing changed")
            message = f"{a.name}: unlocked (locked by {held.get('who') or '?'} since {when(held.get('since'))})"
            job = store.record(Kind.UNLOCK, {"reason": str(held.get("reason") or "")}, who, message, lock=None)
        return xmlrpc_safe(job)

    @answers
    def maintenance(self, app: str = "", on: bool = True, message: str = "", who: str = "") -> dict[str, Any]:
        """Put the app's pages in maintenance (nginx answers 503 with ``message`` and Retry-After) or take them
        out (``on`` False). The page is a file nginx checks on every request: no reload. Returns the record."""
        a = self._app(app)
        if not isinstance(on, bool):
            raise RPCError(Faults.BAD_ARGUMENTS, f"{a.name}: on must be bool, got {type(on).__name__}; nothing changed")
        text = self._text(a, "message", message) or maintenance.DEFAULT_MESSAGE
        self._private(a)
        store = app_store(a)
        was = maintenance.page_exists(a)
        with store.queue_lock():
            if on:
                maintenance.write_page(a, text)
                record = {"who": who, "since": time.time(), "message": text}
                try:
                    job = store.record(Kind.MAINTENANCE, {"on": True, "message": text}, who,
                                       f"{a.name}: maintenance on: {text}", maintenance=record)  # fmt: skip
                except BaseException:
                    if not was:
                        maintenance.remove_page(a)
                    raise
            else:
                if not was:
                    raise RPCError(Faults.FAILED, f"{a.name}: not in maintenance; nothing changed")
                maintenance.remove_page(a)
                job = store.record(Kind.MAINTENANCE, {"on": False, "message": ""}, who,
                                   f"{a.name}: maintenance off", maintenance=None)  # fmt: skip
        return xmlrpc_safe(job)

    @answers
    def cancel(self, app: str = "", force: bool = False) -> dict[str, Any]:
        """Stop the app's queued or running deploy before its switch; the live color is untouched.

        A running migrate is never cut in half: the deploy stops after it. ``force`` kills even a
        migrate (for a hung one; on MySQL/MariaDB that can leave a schema half changed).
        """
        a = self._app(app)
        self._private(a)
        store = app_store(a)
        with store.queue_lock():
            deploys = [j for j in store.jobs(ACTIVE) if j["kind"] == Kind.DEPLOY]
            if not deploys:
                raise RPCError(Faults.NOT_RUNNING, f"{a.name}: no deploy is queued or running; nothing changed")
            for j in deploys:
                if j["status"] == Status.QUEUED:
                    store.update_job(
                        j["id"], status=Status.CANCELLED, finished=time.time(), message=f"{a.name}: deploy cancelled"
                    )
                else:
                    store.request_cancel(j["id"], bool(force))
        running = [j for j in deploys if j["status"] == Status.RUNNING]
        return xmlrpc_safe((running or deploys)[-1])  # the caller waits for the one that matters

    @answers
    def log(self, app: str = "", job_id: int = 0, offset: int = 0) -> dict[str, Any]:
        """Job ``job_id`` (0: the newest) with its log from byte ``offset``; poll it to follow."""
        a = self._app(app)
        store = app_store(a)
        ids = store.job_ids()
        if not job_id and not ids:
            raise RPCError(Faults.BAD_NAME, f"{a.name}: no job yet")
        return self.job(a.name, int(job_id) or ids[-1], offset)

    @answers
    def history(self, app: str = "", count: int = 10, include_health: bool = False) -> list[dict[str, Any]]:
        """The newest ``count`` finished jobs: id, kind, ref, commit, color, who, outcome, step timings, backup.

        Health probes are left out unless ``include_health`` (they would push deploys out of the list).
        """
        a = self._app(app)
        but = () if include_health else (Kind.HEALTH,)
        finished = app_store(a).jobs(FINISHED, newest=max(1, int(count)), but_kinds=but)  # only what it shows
        return xmlrpc_safe([history_entry(j) for j in finished][::-1])

    @answers
    def backups(self, app: str = "") -> list[dict[str, Any]]:
        """The app's database backups, newest first: name, size, time taken, commit, last verify (a listing only)."""
        a = self._app(app)
        return xmlrpc_safe(list_backups(backup_dir_of(a), a.name))

    @answers
    def job(self, app: str, job_id: int, offset: int = 0) -> dict[str, Any]:
        """A job, and its log from byte ``offset``: poll it to follow progress."""
        a = self._app(app)
        store = app_store(a)
        job = store.read_job(int(job_id))
        if job is None:
            raise RPCError(Faults.BAD_NAME, f"{a.name}: no job {job_id}")
        listener = self._process_state(self.listener)
        watched = (job.get("watch") or {}).get("state") == "running"
        if (job["status"] in ACTIVE or watched) and listener not in ("RUNNING", "STARTING", "BACKOFF"):
            raise RPCError(
                Faults.NOT_RUNNING,
                f"{a.name}: job {job_id} is {job['status']} but the bluegreen event listener is {listener}",
            )
        text, new_offset = store.read_log(int(job_id), int(offset))
        return xmlrpc_safe({"job": job, "log": text, "offset": new_offset})


def make_bluegreen_rpcinterface(supervisord: Any, **config: str) -> BlueGreenNamespaceRPCInterface:
    """Factory named in ``[rpcinterface:bluegreen] supervisor.rpcinterface_factory``."""
    return BlueGreenNamespaceRPCInterface(supervisord, **config)
