"""Start, stop and inspect programs through supervisord's XML-RPC, from the listener process.

supervisord hands its children SUPERVISOR_SERVER_URL (and credentials) in the environment,
so the listener talks to the same authenticated server as supervisorctl does. ProcessWatch keeps
the crash events supervisord sends the listener, for the health gate, the workers and the guard.
"""

from __future__ import annotations

import os
import threading
import time
import xmlrpc.client
from typing import Any

from supervisor import childutils
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.shared.errors import BluegreenError

BAD_STATES = ("BACKOFF", "FATAL", "EXITED", "STOPPED", "STOPPING", "UNKNOWN")
# states a program only reaches by failing: a STOPPED event may be the late echo of our own stop
CRASH_STATES = ("BACKOFF", "FATAL", "EXITED")


class SupervisorError(BluegreenError):
    """supervisord refused or could not do what was asked."""


class ShuttingDown(SupervisorError):
    """supervisord is stopping or reloading: it starts and stops nothing more (a job is interrupted, not failed)."""


def refused(exc: xmlrpc.client.Fault, message: str) -> SupervisorError:
    """The error for a Fault: ShuttingDown when supervisord is on its way out."""
    cls = ShuttingDown if exc.faultCode == Faults.SHUTDOWN_STATE else SupervisorError
    return cls(f"{message}: {exc.faultString}")


class Supervisor:
    """A thin client of the ``supervisor.*`` namespace; one per thread (ServerProxy is not thread-safe)."""

    def __init__(self, proxy: Any):
        self.rpc = proxy.supervisor

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Supervisor:
        return cls(childutils.getRPCInterface(dict(env if env is not None else os.environ)))

    def info(self, program: str) -> dict[str, Any]:
        try:
            return self.rpc.getProcessInfo(program)
        except xmlrpc.client.Fault as exc:
            raise refused(exc, program) from None

    def state(self, program: str) -> str:
        """supervisor's state name of ``program`` (RUNNING, STARTING, BACKOFF, ...)."""
        return self.info(program)["statename"]

    def start(self, program: str) -> None:
        """Ask supervisord to start ``program`` without waiting for ``startsecs``."""
        try:
            self.rpc.startProcess(program, False)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_STARTED:
                raise refused(exc, f"cannot start {program}") from None

    def stop(self, program: str) -> None:
        """Stop ``program`` and wait until supervisord has seen it exit (stopwaitsecs applies)."""
        try:
            self.rpc.stopProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.NOT_RUNNING:
                raise refused(exc, f"cannot stop {program}") from None

    def stopping(self) -> bool:
        """True while supervisord shuts down or reloads, or no longer answers: it stops the programs itself then."""
        try:
            state = self.rpc.getState()
        except (OSError, xmlrpc.client.Error):
            return True
        return state.get("statename") in ("SHUTDOWN", "RESTARTING")

    def stderr_tail(self, program: str, length: int = 16000) -> str:
        """The last bytes of the program's stderr log ('' when it keeps none)."""
        try:
            text, _offset, _overflow = self.rpc.tailProcessStderrLog(program, 0, length)
        except xmlrpc.client.Fault:
            return ""
        return text


class ProcessWatch:
    """The last crash PROCESS_STATE events reported of each program, and when.

    Crashes are kept, not the latest state: supervisord may restart a crashed program at once,
    so EXITED is followed by STARTING and RUNNING before a health gate looks again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crashed: dict[str, tuple[str, float]] = {}
        self._subscribers: list[threading.Event] = []

    def subscribe(self, event: threading.Event) -> None:
        """Have ``event`` set on every crash: a watch window wakes at once instead of at its next probe."""
        self._subscribers.append(event)

    def notify(self) -> None:
        """Wake every subscriber now (a go-live opened a window: watch it from this instant)."""
        for event in self._subscribers:
            event.set()

    def update(self, program: str, state: str) -> None:
        if state in CRASH_STATES:
            with self._lock:
                self._crashed[program] = (state, time.monotonic())
            for event in self._subscribers:
                event.set()

    def crashed_since(self, program: str, t0: float) -> str | None:
        """The last crash state (BACKOFF, FATAL, EXITED) ``program`` entered after ``t0``, if any."""
        with self._lock:
            state, when = self._crashed.get(program, ("", 0.0))
        return state if state and when >= t0 else None
