"""An in-memory world for the sequences: supervisord's ``supervisor.*`` namespace, the commands, the probes.

In the style of supervisor's own tests (supervisor/tests/base.py: DummySupervisorRPCNamespace): the real
``Supervisor`` client of host/supervisor.py talks to ``FakeSupervisord``, a dict of program states that
answers with supervisor's own Faults, so the client's handling of ALREADY_STARTED, NOT_RUNNING and
SHUTDOWN_STATE runs as it does against supervisord. ``FakeRunner`` answers what ``runner.capture`` and
``runner.run`` would have run (git, the build commands, Django's migration probe); ``FakeProbes`` answers
the HTTP health checks as a color that RUNNING answers, and the public URL as the color the live link
points at (as nginx does). ``runner.spawn`` is replaced by a refusal: no real program starts here.

Links and state are real (tmp_path): links.py's os calls and the Store are not programs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import shop_config
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.host import backup, health, links, notify, runner
from supervisor_bluegreen.host.migrations import gate
from supervisor_bluegreen.host.supervisor import ProcessWatch, Supervisor
from supervisor_bluegreen.listener import jobs
from supervisor_bluegreen.listener.run import Run
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.model import Job
from supervisor_bluegreen.shared.store import Store

COMMIT = "c0ffee1" + "0" * 33  # what the configured branch resolves to
OTHER = "decade5" + "0" * 33  # another commit of the repository


class FakeSupervisord:
    """supervisord's ``supervisor`` XML-RPC namespace over a dict of program states.

    ``crash_on_start[program]``: the state a start ends in (BACKOFF, FATAL, EXITED: reported to ``watch``
    as supervisord's PROCESS_STATE event reaches the listener; STARTING: it never gets further).
    ``later[program]``: states the next reads answer before the recorded one (STOPPING, STARTING).
    ``refuse[(method, program)]``: the Fault code that call answers. ``statename``: supervisord's own
    state (RUNNING, SHUTDOWN, RESTARTING); ``gone``: it no longer answers at all. ``dirs[program]``: the
    directory supervisord starts a program in (a worker's ``directory = live_root``): the test process
    enters it, and is the program's pid (unless ``pids`` names another). ``on_start[program]``: called
    at its start (what another thread does meanwhile). ``exits[program] = (reads, state)``: after a start
    that took, the program crashes into ``state`` (EXITED, BACKOFF) once its info was read ``reads`` times
    (a worker that dies a few seconds after supervisor called it RUNNING).
    """

    def __init__(self, watch: ProcessWatch | None = None, **states: str) -> None:
        self.states = dict(states)
        self.watch = watch
        self.calls: list[tuple[str, str]] = []
        self.crash_on_start: dict[str, str] = {}
        self.refuse: dict[tuple[str, str], int] = {}
        self.statename = "RUNNING"
        self.gone = False
        self.stderr: dict[str, str] = {}
        self.dirs: dict[str, str] = {}
        self.later: dict[str, list[str]] = {}
        self.pids: dict[str, int] = {}
        self.on_start: dict[str, Callable[[], None]] = {}
        self.exits: dict[str, tuple[int, str]] = {}
        self._reads_left: dict[str, int] = {}

    def _check(self, method: str, program: str) -> None:
        if self.statename in ("SHUTDOWN", "RESTARTING"):
            raise xmlrpc.client.Fault(Faults.SHUTDOWN_STATE, "SHUTDOWN_STATE")
        code = self.refuse.get((method, program))
        if code is not None:
            raise xmlrpc.client.Fault(code, f"refused: {program}")
        if program not in self.states:
            raise xmlrpc.client.Fault(Faults.BAD_NAME, f"BAD_NAME: {program}")

    def getState(self) -> dict[str, Any]:
        if self.gone:
            raise ConnectionRefusedError(111, "Connection refused")
        return {"statename": self.statename}

    def getProcessInfo(self, program: str) -> dict[str, Any]:
        self._check("getProcessInfo", program)
        if program in self._reads_left:
            self._reads_left[program] -= 1
            if self._reads_left[program] < 0:
                del self._reads_left[program]
                self.states[program] = self.exits[program][1]
                if self.watch is not None:
                    self.watch.update(program, self.states[program])
        state = self.later[program].pop(0) if self.later.get(program) else self.states[program]
        pid = self.pids.get(program, os.getpid()) if state == "RUNNING" else 0
        return {"name": program, "statename": state, "pid": pid}

    def startProcess(self, program: str, wait: bool = True) -> bool:
        self.calls.append(("start", program))
        self._check("startProcess", program)
        if self.states[program] in ("RUNNING", "STARTING"):
            raise xmlrpc.client.Fault(Faults.ALREADY_STARTED, f"ALREADY_STARTED: {program}")
        if program in self.on_start:
            self.on_start[program]()
        crash = self.crash_on_start.get(program)
        if crash:
            self.states[program] = crash
            if self.watch is not None:
                self.watch.update(program, crash)
            return True
        if program in self.dirs:
            os.chdir(self.dirs[program])
        if program in self.exits:
            self._reads_left[program] = self.exits[program][0]
        self.states[program] = "RUNNING"
        return True

    def stopProcess(self, program: str, wait: bool = True) -> bool:
        self.calls.append(("stop", program))
        self._check("stopProcess", program)
        if self.states[program] not in ("RUNNING", "STARTING", "BACKOFF", "STOPPING"):
            raise xmlrpc.client.Fault(Faults.NOT_RUNNING, f"NOT_RUNNING: {program}")
        self.states[program] = "STOPPED"
        return True

    def tailProcessStderrLog(self, program: str, offset: int, length: int) -> list[Any]:
        self._check("tailProcessStderrLog", program)
        return [self.stderr.get(program, ""), 0, False]

    def started(self) -> list[str]:
        return [program for verb, program in self.calls if verb == "start"]

    def stopped(self) -> list[str]:
        return [program for verb, program in self.calls if verb == "stop"]


@dataclass
class FakeRunner:
    """What git, the build commands and Django's migration probe would have done.

    ``refs``: the repository's refs and their commits; ``heads``: each checkout's HEAD; ``fail``: a build
    command (by its first word after ``manage.py``, or ``pip``) that exits 1 with that message; ``stuck``:
    checkouts (by a part of their path) whose ``checkout`` does not take; ``tools``: optional tools present
    (management commands: ``compress``); ``database``, ``reads_collected``: the settings the probe reads;
    ``files``: files of the checkouts (``requirements.txt``) by path or by name (in every
    checkout), or the ReadError reading it raises;
    ``report``: what the probe prints (``report_after`` once a migrate ran); ``git_error``: what every git
    command raises; ``on_run[word]``: called when that build command starts (what happens meanwhile).
    """

    refs: dict[str, str] = field(default_factory=lambda: {"main": COMMIT, "v2": OTHER})
    heads: dict[str, str] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)
    stuck: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)
    database: dict[str, Any] = field(default_factory=lambda: {"ENGINE": "django.db.backends.sqlite3", "NAME": "db"})
    reads_collected: bool = False  # the app's tests read collected static files (a manifest storage)
    files: dict[str, bytes | Exception] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=lambda: gate_report())
    report_after: dict[str, Any] | None = None
    git_error: Exception | None = None
    on_run: dict[str, Callable[[], None]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)  # build commands (as ``fail``) that run until they are cancelled
    pings: list[int] = field(default_factory=list)  # exit statuses of the next worker pings (then: 0, it answers)
    commands: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (argv, cwd) of every command

    def capture(
        self, argv: Any, *, cwd: str | None = None, env: Any = None, user: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = tuple(argv)
        self.commands.append((argv, cwd or ""))
        if argv[0] == "git":
            if self.git_error is not None:
                raise self.git_error
            code, out = self.git(argv[1:], cwd or "")
            return subprocess.CompletedProcess(list(argv), code, out, "" if code == 0 else "fatal: no")
        if "cancel_consumer" in argv:  # worker_quiesce: the old worker stops consuming
            return subprocess.CompletedProcess(list(argv), 0, "", "")
        if "ping" in argv:  # worker_ping: celery inspect ping of one node
            return subprocess.CompletedProcess(list(argv), self.pings.pop(0) if self.pings else 0, "", "")
        if argv[1:3] == ("manage.py", "shell"):  # the probe of the app: its migration plan and settings facts
            report = self.report_after if self.report_after is not None and self.ran("migrate") else self.report
            facts = {"database": self.database, "commands": sorted({"migrate", "test", *self.tools}),
                     "reads_collected": self.reads_collected}  # fmt: skip
            return subprocess.CompletedProcess(list(argv), 0, json.dumps({"app": facts, **report}) + "\n", "")
        raise AssertionError(f"unexpected command {argv}")

    def git(self, args: tuple[str, ...], cwd: str) -> tuple[int, str]:
        if args[0].startswith("--git-dir=") and args[1] == "rev-parse":
            ref = args[-1].removesuffix("^{commit}")
            return (0, self.refs[ref]) if ref in self.refs else (1, "")
        if args[0] == "-C":  # golive.checkout_commit
            head = self.heads.get(os.path.realpath(args[1]), "")
            return (0, head) if head else (128, "")
        verb = args[0]
        if verb == "clone":  # a release's clone: its folder appears
            os.makedirs(args[-1], exist_ok=True)
            return 0, ""
        if verb == "checkout":
            if not any(part in cwd for part in self.stuck):
                self.heads[os.path.realpath(cwd)] = args[-1]
            return 0, ""
        if verb == "rev-parse":
            return 0, self.heads.get(os.path.realpath(cwd), "0" * 40)
        return 0, ""  # fetch, clean

    def run(self, argv: tuple[str, ...], *, cwd: str, env: Any, user: str, timeout: float, log: Any,
            cancelled: Any = None, uncut: runner.Uncut | None = None) -> None:  # fmt: skip
        self.commands.append((tuple(argv), cwd))
        if uncut is not None:
            uncut.started(os.getpid())
        word = "pip" if "pip" in argv else (argv[2] if argv[1:2] == ("manage.py",) else argv[0])
        log(f"{runner.OUTPUT}ran {' '.join(argv)}")
        if word in self.on_run:
            self.on_run[word]()
        if word in self.fail:
            log(f"{runner.OUTPUT}{self.fail[word]}")
            raise runner.StepError(f"exit status 1: {self.fail[word]}")
        if word in self.hang:  # runs until something cancels it, killed then as runner.run kills it
            deadline = time.monotonic() + 10
            while not (cancelled and cancelled()):
                assert time.monotonic() < deadline, f"{word} was never stopped"
                time.sleep(0.01)
            raise runner.StepError("cancelled")

    def read_as_user(self, path: str, user: str, limit: int = 1 << 20, timeout: float = 10.0) -> bytes | None:
        # a name (or a path inside the checkout: requirements/base.txt) is that file in every checkout
        found = self.files.get(path, next((v for k, v in self.files.items() if path.endswith(f"/{k}")), None))
        if isinstance(found, Exception):
            raise found
        return found

    def ran(self, word: str) -> list[tuple[str, ...]]:
        """The commands run whose argv holds ``word``."""
        return [argv for argv, _ in self.commands if word in argv]


def gate_report(**fields: Any) -> dict[str, Any]:
    """The migration probe's JSON: no unapplied migration unless ``fields`` say otherwise."""
    return {"format": gate.FORMAT, "ok": True, "operations": [], "migrations": [], **fields}


def unsafe_report() -> dict[str, Any]:
    """One migration that removes a field the serving code still reads."""
    op = {"app_label": "shop", "migration": "0002_drop", "index": 0, "operation": "RemoveField",
          "description": "Remove field note from order", "verdict": "unsafe", "reason": "the old code reads it",
          "kind": "remove_field"}  # fmt: skip
    return gate_report(operations=[op], migrations=[{"app_label": "shop", "name": "0002_drop", "operations": 1}])


def contract_report() -> dict[str, Any]:
    """One expand migration to run before the switch and one contract migration held back."""
    return gate_report(
        migrations=[{"app_label": "shop", "name": "0002_add", "operations": 1},
                    {"app_label": "shop", "name": "0003_drop", "marker": "contract", "operations": 1}],
        deferred=[{"app_label": "shop", "name": "0003_drop", "contract": True}],
        pre_switch={"all": False, "targets": [{"app_label": "shop", "name": "0002_add"}]},
    )  # fmt: skip


class FakeProbes:
    """health.probe: a color answers 200 while its program RUNNING (unless ``sick``); the public URL is the
    color the live link points at, with the color header, as nginx serves it."""

    def __init__(self, app: App, rpc: FakeSupervisord) -> None:
        self.app, self.rpc = app, rpc
        self.sick: set[str] = set()
        self.public_down = False
        self.targets: list[str] = []
        self.hook: Callable[[], None] = lambda: None  # called at every probe (what happens meanwhile)

    def __call__(self, target: str, check: Any, path: str | None = None, host: str | None = None) -> health.Probe:
        self.targets.append(target)
        self.hook()
        if target == self.app.public_url:
            live = links.live_color(self.app)
            if live is None or self.public_down:
                return health.Probe(False, 502, "status 502, expected 200", 1.0, {})
            return self.answer(live)
        color = next(c.name for c in self.app.colors if c.socket == target)
        return self.answer(color)

    def answer(self, color: str) -> health.Probe:
        if self.rpc.states.get(self.app.color(color).program) != "RUNNING":
            return health.Probe(False, None, f"connection refused at {self.app.color(color).socket}", 1.0, {})
        if color in self.sick:
            return health.Probe(False, 500, "status 500, expected 200", 1.0, {})
        return health.Probe(True, 200, "status 200", 1.0, {self.app.color_header.lower(): color})


def no_program(argv: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"a unit test started a program: {argv}")


DEFAULTS = {
    "build": "deps collectstatic compress test migrate",
    "health_passes": "2",
    "health_interval": "0.01",
    "health_deadline": "0.1",
    "drain_timeout": "0",
    "watch": "60",
    "webhooks": "http://hooks.invalid/bluegreen",
}


class World:
    """One app (colors blue/green, programs shop_blue/shop_green) and everything it talks to, faked."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
        monkeypatch.chdir(tmp_path)  # a worker's start enters its directory: the test's own is restored after
        for color in ("blue", "green"):
            (tmp_path / color / "src").mkdir(parents=True)
        settings = {"repo": f"{tmp_path}/repo.git", "root": f"{tmp_path}/%(color)s",
                    "checkout": f"{tmp_path}/%(color)s/src", **DEFAULTS, **extra}  # fmt: skip
        self.app = config.parse(shop_config(tmp_path, **{k: v for k, v in settings.items() if v is not None})).app()
        self.tmp = tmp_path
        self.store = Store(self.app.state_dir, self.app.name, sync=False).ensure()  # fsync: slow, and no crash here
        self.watch = ProcessWatch()
        self.rpc = FakeSupervisord(self.watch, shop_blue="STOPPED", shop_green="STOPPED")
        self.sup = Supervisor(SimpleNamespace(supervisor=self.rpc))
        self.runner = FakeRunner()
        self.probes = FakeProbes(self.app, self.rpc)
        self.announced: list[dict[str, Any]] = []
        monkeypatch.setattr(runner, "spawn", no_program)
        monkeypatch.setattr(runner, "capture", self.runner.capture)
        monkeypatch.setattr(runner, "run", self.runner.run)
        monkeypatch.setattr(runner, "read_as_user", self.runner.read_as_user)
        monkeypatch.setattr(health, "probe", self.probes)
        monkeypatch.setattr(notify, "send", lambda urls, body, log, timeout=5.0: self.announced.append(body))
        monkeypatch.setattr(Supervisor, "from_env", classmethod(lambda cls, env=None: self.sup))
        monkeypatch.delenv("BLUEGREEN_FAILPOINTS", raising=False)
        self.last_run: Run | None = None

    def color(self, name: str) -> Any:
        return self.app.color(name)

    def live(self, color: str, previous: str | None = None, **state: Any) -> None:
        """``color`` live (links and state), both colors' checkouts at COMMIT, as after a deploy and its window."""
        links.point(self.app, self.color(color))
        for c in self.app.colors:
            self.runner.heads[os.path.realpath(c.checkout)] = COMMIT
        self.rpc.states[self.color(color).program] = "RUNNING"
        if previous:
            self.rpc.states[self.color(previous).program] = "RUNNING"
        self.store.update(live=color, previous=previous, **state)

    def new_run(self, kind: str, args: dict[str, Any] | None = None) -> Run:
        """A queued and claimed job of ``kind``, ready to run (a step may be called on it alone)."""
        job = self.store.claim(self.store.enqueue(kind, args or {}, "test")["id"])
        assert job is not None
        self.last_run = Run(self.app, self.store, Job.of(job), self.sup, self.watch)
        return self.last_run

    def job(self, kind: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue, claim and run a job of ``kind`` as the listener does (jobs.execute); the job as recorded."""
        run = self.new_run(kind, args)
        jobs.execute(run)
        return self.store.read_job(run.job.id) or {}

    def log(self, job: dict[str, Any]) -> str:
        return self.store.read_log(job["id"])[0]

    def links(self) -> str | None:
        """What the live socket link points at (None: no link)."""
        return links.read_link(self.app.live_socket)

    def events(self) -> list[tuple[str, str]]:
        """The webhooks told: (event, text)."""
        return [(body["event"], body["text"]) for body in self.announced]


def with_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: str, previous: str, **extra: str) -> World:
    """``live`` live, ``previous`` RUNNING, and a worker program (Celery) RUNNING from the live_root link."""
    extra.setdefault("worker_settle", "0.3")
    world = World(tmp_path, monkeypatch, workers="shop_worker", live_root=f"{tmp_path}/live", **extra)
    world.live(live, previous=previous)
    world.rpc.states["shop_worker"] = "RUNNING"
    world.rpc.dirs["shop_worker"] = f"{world.app.live_root}/src"  # supervisord's directory= for the worker
    return world


def with_own_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: str, **extra: str) -> World:
    """``live`` live and the other color RUNNING; each color has its own worker (``shop_worker_%(color)s``),
    supervisord starts it in that color's checkout, and only the live color's runs."""
    extra.setdefault("worker_settle", "0")
    extra.setdefault("worker_timeout", "1")
    world = World(tmp_path, monkeypatch, workers="shop_worker_%(color)s", **extra)
    world.live(live, previous=world.app.other(live).name)
    for c in world.app.colors:
        world.rpc.states[f"shop_worker_{c.name}"] = "RUNNING" if c.name == live else "STOPPED"
        world.rpc.dirs[f"shop_worker_{c.name}"] = c.checkout
    return world


def release_checkout(world: World, job: dict[str, Any]) -> str:
    """Where the deploy ``job`` checked its release out."""
    return os.path.join(world.app.deploy.releases, job["release"], "src")  # type: ignore[union-attr]


def step_names(job: dict[str, Any]) -> list[str]:
    return [s["name"] for s in job.get("steps") or []]


def failed_step(job: dict[str, Any]) -> str:
    return next((s["name"] for s in job.get("steps") or [] if not s["ok"]), "")


class FakeDump:
    """backup.py's database reads and dump tools, in memory: the dump is a file in backup_dir."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ok: bool = True, fails: str = "") -> None:
        self.ok, self.fails, self.databases = ok, fails, []
        monkeypatch.setattr(backup, "django_database", no_second_interpreter)
        monkeypatch.setattr(backup, "run_dump", self.run_dump)
        monkeypatch.setattr(backup, "verify", self.verify)

    def run_dump(self, plan: backup.DumpPlan, **kwargs: object) -> str:
        if self.fails:
            raise backup.BackupError(self.fails)
        Path(plan.path).write_bytes(b"dump")
        return plan.path

    def verify(self, database: dict, path: str, **kwargs: object) -> backup.VerifyResult:
        self.databases.append(database)
        mismatches = [] if self.ok else ["shop_order: 3 rows, the dump has 4"]
        return backup.VerifyResult(path, "sqlite", "scratch", self.ok, 1, 4, 0.1, mismatches, {}, 0.0)


def no_second_interpreter(*args: object, **kwargs: object) -> None:
    raise AssertionError("the backup asked Django for its settings again: the deploy's probe read them")
