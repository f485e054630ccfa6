"""The event listener run by supervisord: the orchestrator's process.

The main thread speaks supervisor's event listener protocol and answers every event at once
(stdout carries protocol only; everything else goes to stderr). REMOTE_COMMUNICATION events
sent by the RPC extension wake the per-app worker threads, which run queued jobs; PROCESS_STATE
events feed the ProcessWatch that aborts a health gate when the target stops running.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO

from . import switch
from .config import App, Config, load
from .jobs import execute
from .orchestrator import ProcessWatch, Run, reconcile_links
from .state import Store
from .supervisor_api import Supervisor

WAKE_TYPE = "bluegreen"


def parse_tokens(line: str) -> dict[str, str]:
    """``key:value key:value`` pairs of an event header or payload's first line."""
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def read_event(stdin: IO[str]) -> tuple[dict[str, str], str] | None:
    """One event (header, payload) from supervisord, or None at end of input."""
    line = stdin.readline()
    if not line:
        return None
    headers = parse_tokens(line)
    payload = stdin.read(int(headers.get("len", "0")))
    return headers, payload


def write_ready(stdout: IO[str]) -> None:
    stdout.write("READY\n")
    stdout.flush()


def write_ok(stdout: IO[str]) -> None:
    stdout.write("RESULT 2\nOK")
    stdout.flush()


def log(message: str) -> None:
    print(f"bluegreen listener: {message}", file=sys.stderr, flush=True)


class AppWorker(threading.Thread):
    """Runs one app's queued jobs one at a time, holding the app's lock while it does."""

    def __init__(self, app: App, watch: ProcessWatch):
        super().__init__(name=f"bluegreen-{app.name}", daemon=True)
        self.app, self.watch = app, watch
        self.wake = threading.Event()

    @property
    def store(self) -> Store:
        """The app's store, from the current config (a reload may move state_dir)."""
        return Store(self.app.state_dir, self.app.name).ensure()

    def run(self) -> None:
        while True:
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            try:
                self.run_queued()
            except Exception as exc:  # noqa: BLE001 (keep the worker alive; the job already says it failed)
                log(f"{self.app.name}: {type(exc).__name__}: {exc}")
                time.sleep(1.0)

    def run_queued(self) -> None:
        store = self.store
        for job in store.jobs(("queued",)):
            if job["kind"] == "health":
                self.run_beside(job)
                continue
            if not store.lock.acquire():
                log(f"{self.app.name}: lock held by another process; job {job['id']} waits")
                return
            try:
                claimed = store.claim(job["id"])
                if claimed:
                    execute(Run(self.app, store, claimed, Supervisor.from_env(), self.watch))
            finally:
                store.lock.release()

    def run_beside(self, job: dict) -> None:
        """Health checks only read: they run at once in their own thread, even while a deploy runs."""
        store = self.store
        claimed = store.claim(job["id"])
        if claimed:
            threading.Thread(
                target=execute, args=(Run(self.app, store, claimed, Supervisor.from_env(), self.watch),), daemon=True
            ).start()

    def dispatch_health(self) -> None:
        """Called from the protocol loop on a wake: start queued health checks without waiting for the worker."""
        for job in self.store.jobs(("queued",)):
            if job["kind"] == "health":
                self.run_beside(job)


def reconcile_on_start(app: App) -> None:
    """After a crash or restart: jobs that were running are over, and the links say who is live."""
    store = Store(app.state_dir, app.name).ensure()
    for job in store.jobs(("running",)):
        store.append_log(job["id"], "interrupted: the listener stopped while this job ran")
        store.update_job(
            job["id"],
            status="interrupted",
            finished=time.time(),
            message=f"{app.name}: {job['kind']} interrupted (listener restarted)",
        )
    live = reconcile_links(app, store, log)
    if app.switch_mode == "nginx" and live is not None:
        # a crash between re-pointing the enabled site and nginx's reload: make nginx serve what the link says
        try:
            switch.reload_nginx(app, log)
        except switch.SwitchError as exc:
            log(f"{app.name}: nginx not reloaded at start: {exc}")
    log(f"{app.name}: live color {live or 'none'}")


class Listener:
    """The protocol loop, plus one worker thread per app."""

    def __init__(self, config_path: str, stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout):
        self.config_path, self.stdin, self.stdout = config_path, stdin, stdout
        self.watch = ProcessWatch()
        self.workers: dict[str, AppWorker] = {}
        self.config: Config | None = None
        self.config_mtime: float | None = None

    def start_workers(self) -> None:
        """Load the config (again, when the file changed) and keep one worker per app running."""
        try:
            mtime = os.stat(self.config_path).st_mtime
        except OSError:
            mtime = -1.0
        if mtime == self.config_mtime:
            return
        self.config_mtime = mtime
        try:
            self.config = load(self.config_path)
        except Exception as exc:  # noqa: BLE001 (a broken config must not crash-loop the listener)
            log(f"config is broken, no jobs will run until it is fixed: {exc}")
            return
        for app in self.config.apps.values():
            worker = self.workers.get(app.name)
            if worker is not None:
                worker.app = app  # picked up at the next job
                continue
            try:
                reconcile_on_start(app)
            except OSError as exc:
                log(f"{app.name}: cannot reconcile: {exc}")
            worker = AppWorker(app, self.watch)
            worker.start()
            self.workers[app.name] = worker

    def handle(self, headers: dict[str, str], payload: str) -> None:
        """React to one event without blocking: record a state, or wake the workers."""
        event = headers.get("eventname", "")
        if event.startswith("PROCESS_STATE_"):
            first = parse_tokens(payload.split("\n", 1)[0])
            name = first.get("processname", "")
            group = first.get("groupname", name)
            state = event[len("PROCESS_STATE_") :]
            self.watch.update(name if group == name else f"{group}:{name}", state)
            self.watch.update(name, state)
        elif event == "REMOTE_COMMUNICATION" and payload.split("\n", 1)[0] == f"type:{WAKE_TYPE}":
            self.start_workers()
            for worker in self.workers.values():
                worker.dispatch_health()
                worker.wake.set()

    def run(self) -> None:
        self.start_workers()
        while True:
            write_ready(self.stdout)
            event = read_event(self.stdin)
            if event is None:
                return
            self.handle(*event)
            write_ok(self.stdout)


def main(config_path: str) -> int:
    """Entry point of ``bluegreen listener``: refuses to run outside supervisord."""
    if "SUPERVISOR_SERVER_URL" not in os.environ:
        print("bluegreen listener must run under supervisord as [eventlistener:bluegreen]", file=sys.stderr)
        return 2
    Listener(config_path).run()
    return 0
