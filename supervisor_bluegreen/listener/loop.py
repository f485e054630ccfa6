"""The event listener run by supervisord: the orchestrator's process.

The main thread speaks supervisor's event listener protocol with ``supervisor.childutils`` and answers
every event at once (stdout carries protocol only; everything else goes to stderr). REMOTE_COMMUNICATION events
sent by the RPC extension wake the per-app worker threads, which run queued jobs; PROCESS_STATE
events feed the ProcessWatch that aborts a health gate when the target stops running.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import IO

import psutil
from supervisor import childutils

from supervisor_bluegreen.host import links
from supervisor_bluegreen.host.supervisor import ProcessWatch, Supervisor
from supervisor_bluegreen.listener.golive import reconcile_links, workers_astray
from supervisor_bluegreen.listener.guard import WindowGuard
from supervisor_bluegreen.listener.jobs import execute
from supervisor_bluegreen.listener.run import Run
from supervisor_bluegreen.shared.config import App, Config, load
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.model import Job, Kind, Status, Window
from supervisor_bluegreen.shared.refs import WAKE_TYPE
from supervisor_bluegreen.shared.store import Store, check_private_dir, open_file


class Stopping(BluegreenError):
    """Raised in the protocol loop by SIGTERM: the listener shuts down in order."""


def log(message: str) -> None:
    print(f"bluegreen listener: {message}", file=sys.stderr, flush=True)


class AppWorker(threading.Thread):
    """Runs one app's queued jobs one at a time, holding the app's lock; its WindowGuard watches beside it."""

    def __init__(self, app: App, watch: ProcessWatch, stopping: threading.Event | None = None):
        super().__init__(name=f"bluegreen-{app.name}", daemon=True)
        self.app, self.watch = app, watch
        self.stopping = stopping or threading.Event()
        self.wake = threading.Event()
        self.recovered = False
        self.guard = WindowGuard(self, log)

    @property
    def store(self) -> Store:
        """The app's store, from the current config (a reload may move state_dir); refused where others write."""
        check_private_dir(self.app.state_dir, "state_dir")
        return Store(self.app.state_dir, self.app.name).ensure()

    def new_run(self, store: Store, job: dict) -> Run:
        return Run(self.app, store, Job.of(job), Supervisor.from_env(), self.watch, self.stopping)

    def run(self) -> None:
        while True:
            try:
                self.run_queued()
            except Exception as exc:  # noqa: BLE001 (keep the worker alive; the job already says it failed)
                log(f"{self.app.name}: {type(exc).__name__}: {exc}")
                time.sleep(1.0)
            if self.stopping.is_set():
                return
            self.wake.wait(timeout=1.0)
            self.wake.clear()

    def run_queued(self) -> None:
        """Under the app's lock: repair after a restart, then windows and queued jobs, oldest first."""
        store = self.store
        if not store.lock.acquire():
            log(f"{self.app.name}: lock held by another process; jobs wait")
            return
        try:
            if not self.recovered:
                self.recover(store)
                self.recovered = True
                self.guard.start()  # after the repair: it may have opened a window
            while not self.stopping.is_set():
                self.contract_due(store)
                job = self.next_job(store)
                if job is None:
                    return
                claimed = store.claim(job["id"])
                if claimed:
                    execute(self.new_run(store, claimed))
        finally:
            store.lock.release()

    def next_job(self, store: Store) -> dict | None:
        """The oldest queued job that needs the lock (health checks run beside, at once).

        A deploy runs at once, in a watch window too: it builds beside the live site and only its start
        waits for the window (deploy.wait_for_window). A switch or rollback ends the window (a person took over).
        """
        for job in store.jobs((Status.QUEUED,)):
            if job["kind"] == Kind.HEALTH:
                self.run_beside(job)
            else:
                return job
        return None

    def recover(self, store: Store) -> None:
        """After a crash or restart: end what was running, finish an interrupted go-live, restart workers.

        Jobs that were running are over ("interrupted"); the links say who is live. A job killed
        after moving traffic, or while its workers were down, left a record of it in the state:
        then a ``recover`` job (in history, with its log) records the go-live and restarts the workers; it also
        starts the live color's own workers when supervisord has just started (they never start by themselves).
        """
        state = store.read()
        repair = None
        own = any(c.workers for c in self.app.colors)  # supervisord started: the live color's start now
        astray = own and workers_astray(self.app, Supervisor.from_env())
        if state.get("switching") or state.get("workers_restarting") or astray:  # first: never a moment without a job
            repair = store.enqueue(Kind.RECOVER, {}, "bluegreen listener (restart)")
        for job in store.jobs((Status.RUNNING,)):
            outlived = self.wait_uncut(store, job)
            store.append_log(job["id"], "interrupted: the listener stopped while this job ran")
            store.update_job(
                job["id"],
                status=Status.INTERRUPTED,
                finished=time.time(),
                step="",
                uncut=None,
                message=f"{self.app.name}: {job['kind']} interrupted (listener restarted)"
                + (f"; its {outlived} ran to its end, so the database may have changed" if outlived else ""),
            )
        if repair is not None:
            job = store.claim(repair["id"])
            if job:
                execute(self.new_run(store, job))
            live = store.read().get("live")
        else:
            try:
                live = reconcile_links(self.app, store, log)
            except links.LiveLinkError as exc:
                log(f"{self.app.name}: {exc}")
                return
        if self.app.switch_mode == "nginx" and live is not None:
            # a crash between re-pointing the enabled site and nginx's reload: make nginx serve what the link says
            try:
                links.reload_nginx(self.app, log)
            except links.SwitchError as exc:
                log(f"{self.app.name}: nginx not reloaded at start: {exc}")
        log(f"{self.app.name}: live color {live or 'none'}")

    def contract_due(self, store: Store) -> None:
        """Once the window of a deploy with held-back migrations passed, run them (contract.py); with ``contract
        = manual`` they wait for a person's (or a fleet's) ``bluegreen contract``."""
        state = store.read()
        pending = state.get("contract")
        if not pending or self.stopping.is_set() or Window.from_state(state.get("watch")) is not None:
            return
        if pending.get("color") != state.get("live"):  # rolled back or switched away: the old code serves again
            store.update(contract=None)
            store.append_log(int(pending.get("job") or 0), "contract migrations dropped: the release is not live")
            log(f"{self.app.name}: contract migrations of job {pending.get('job')} dropped: the release is not live")
            return
        if self.app.deploy is not None and self.app.deploy.contract == "manual":
            return
        job = store.claim(store.enqueue(Kind.CONTRACT, {}, "bluegreen (after the watch window)")["id"])
        if job:
            execute(self.new_run(store, job))

    def wait_uncut(self, store: Store, job: dict) -> str:
        """A migrate the killed listener left running is never cut in half: wait for it, keep its output.

        Returns the step's name when one was waited for ('' when none ran).
        """
        record = job.get("uncut")
        try:
            proc = psutil.Process(int(record["pid"]))  # type: ignore[index]
            if abs(proc.create_time() - float(record["since"])) > 5:  # type: ignore[index]
                return ""  # the pid was reused: not ours
        except (psutil.Error, KeyError, TypeError, ValueError):
            return ""
        step = str(record.get("step", "step"))  # type: ignore[union-attr]
        store.append_log(job["id"], f"the listener restarted while {step} (pid {proc.pid}) ran: waiting for it to end")
        log(f"{self.app.name}: job {job['id']}: waiting for {step} (pid {proc.pid}), never cut in half")
        while not self.stopping.is_set():
            try:
                proc.wait(timeout=1.0)
                break
            except psutil.TimeoutExpired:
                continue
            except psutil.Error:
                break
        try:
            with os.fdopen(open_file(store.output_path(job["id"]), os.O_RDONLY), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 20)))  # its last MB: where it says how it ended
                text = f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            store.append_log(job["id"], f"    | {line}")
        store.append_log(job["id"], f"{step} (pid {proc.pid}) ended")
        return step

    def run_beside(self, job: dict) -> None:
        """Health checks only read: they run at once in their own thread, even while a deploy runs."""
        store = self.store
        claimed = store.claim(job["id"])
        if claimed:
            threading.Thread(target=execute, args=(self.new_run(store, claimed),), daemon=True).start()

    def dispatch_health(self) -> None:
        """Called from the protocol loop on a wake: start queued health checks without waiting for the worker."""
        for job in self.store.jobs((Status.QUEUED,)):
            if job["kind"] == Kind.HEALTH:
                self.run_beside(job)


class Listener:
    """The protocol loop, plus one worker thread per app."""

    def __init__(self, config_path: str, stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout):
        self.config_path, self.stdin, self.stdout = config_path, stdin, stdout
        self.watch = ProcessWatch()
        self.stopping = threading.Event()
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
            worker = AppWorker(app, self.watch, self.stopping)  # it reconciles first, off the protocol loop
            worker.start()
            self.workers[app.name] = worker

    def handle(self, headers: dict[str, str], payload: str) -> None:
        """React to one event without blocking: record a state, or wake the workers."""
        event = headers.get("eventname", "")
        if event.startswith("PROCESS_STATE_"):
            first = childutils.get_headers(payload.split("\n", 1)[0])  # names hold no ' ' or ':' (supervisor)
            name = first.get("processname", "")
            group = first.get("groupname", name)
            state = event[len("PROCESS_STATE_") :]
            self.watch.update(name if group == name else f"{group}:{name}", state)
            self.watch.update(name, state)
        elif event == "REMOTE_COMMUNICATION" and payload.split("\n", 1)[0] == f"type:{WAKE_TYPE}":
            self.start_workers()
            self.watch.notify()  # the guards look whether a person asked to switch or roll back
            for worker in self.workers.values():
                worker.dispatch_health()
                worker.wake.set()

    def run(self) -> None:
        """Answer events until supervisord stops us (SIGTERM) or goes away (end of input), then shut down."""
        previous = signal.signal(signal.SIGTERM, self.on_sigterm)
        try:
            self.start_workers()
            while True:
                # not listener.wait(): it cannot tell the end of input (supervisord went away) from a bad header
                childutils.listener.ready(self.stdout)
                line = self.stdin.readline()
                if not line:
                    break
                headers = childutils.get_headers(line)
                self.answer(headers, self.stdin.read(int(headers["len"])))
                childutils.listener.ok(self.stdout)
        except Stopping:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.shutdown()

    def answer(self, headers: dict[str, str], payload: str) -> None:
        """handle(), and whatever goes wrong there is logged: the event is answered all the same."""
        try:
            self.handle(headers, payload)
        except Stopping:
            raise
        except Exception as exc:  # noqa: BLE001 (supervisord stalls a listener that stops answering)
            log(f"{headers.get('eventname', 'event')}: {type(exc).__name__}: {exc}")

    def on_sigterm(self, signum: int, frame: object) -> None:
        """supervisord stops the listener (stop, restart, update, reload): leave the protocol loop."""
        raise Stopping

    def shutdown(self) -> None:
        """No new step starts; a running step finishes (supervisord's stopwaitsecs bounds it); windows suspend."""
        self.stopping.set()
        busy = [w for w in self.workers.values() if w.is_alive()]
        if busy:
            log("stopping: the running step of a job may finish, no new step starts")
        for worker in busy:
            worker.wake.set()
        for worker in busy:
            worker.join()
            if worker.guard.is_alive():
                worker.guard.join()


def main(config_path: str) -> int:
    """Entry point of ``bluegreen listener``: refuses to run outside supervisord."""
    if "SUPERVISOR_SERVER_URL" not in os.environ:
        print("bluegreen listener must run under supervisord as [eventlistener:bluegreen]", file=sys.stderr)
        return 2
    Listener(config_path).run()
    return 0
