"""Start, stop and inspect programs through supervisord's XML-RPC, from the listener process.

supervisord hands its children SUPERVISOR_SERVER_URL (and credentials) in the environment,
so the listener talks to the same authenticated server as supervisorctl does.
"""

from __future__ import annotations

import os
import xmlrpc.client
from typing import Any

from supervisor import childutils
from supervisor.xmlrpc import Faults

BAD_STATES = ("BACKOFF", "FATAL", "EXITED", "STOPPED", "STOPPING", "UNKNOWN")
# states a program only reaches by failing: a STOPPED event may be the late echo of our own stop
CRASH_STATES = ("BACKOFF", "FATAL", "EXITED")


class SupervisorError(Exception):
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
