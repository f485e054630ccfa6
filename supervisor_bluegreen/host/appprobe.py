"""The deploy's one probe of the app: a single interpreter in the release answers everything asked of Django.

The migration gate's probe (host/migrations/probe.py) prints, beside the migration plan, the facts the rest of
the build needs: the database a backup dumps, the management commands the app has (an optional step such as
compress runs only when its command exists), and whether the tests read collected static files (then they wait
for collectstatic). Before, each of those started Django once more (``manage.py help compress``, a settings
shell for the backup): one to two seconds per deploy for answers one start gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor_bluegreen.host.migrations import gate
from supervisor_bluegreen.shared.errors import BluegreenError


class ProbeError(BluegreenError):
    """The probe did not say what was asked (Django could not start, or it printed nothing)."""


@dataclass(frozen=True)
class AppFacts:
    """What the app's settings say, as its own interpreter read them."""

    database: dict[str, Any]
    commands: frozenset[str]
    reads_collected: bool = False  # its static storage is a manifest one, or compress runs offline


@dataclass(frozen=True)
class Probed:
    """The probe's output, read two ways: the gate's report (the plan may fail while the facts were read)."""

    stdout: str
    returncode: int = 0
    stderr: str = ""

    def report(self) -> gate.GateReport:
        """The migration plan and its verdicts; GateError when there is none."""
        return gate.parse_report(self.stdout, returncode=self.returncode, stderr=self.stderr)

    def facts(self) -> AppFacts:
        """The app's settings facts; ProbeError when Django did not even start."""
        data = gate.find_report(self.stdout) or {}
        app = data.get("app")
        if not isinstance(app, dict):
            said = data.get("error") or (self.stderr or self.stdout).strip()[-800:] or f"exit status {self.returncode}"
            raise ProbeError(f"the app's settings could not be read: {said}")
        database = app.get("database")
        return AppFacts(
            database=database if isinstance(database, dict) else {},
            commands=frozenset(str(c) for c in app.get("commands") or ()),
            reads_collected=bool(app.get("reads_collected")),
        )
