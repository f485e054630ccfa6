"""shared/model.py and shared/errors.py: the words and the error root every process shares."""

from __future__ import annotations

import ast
import json
import sqlite3
import xmlrpc.client
from pathlib import Path

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.jobargs import KINDS
from supervisor_bluegreen.shared.model import ACTIVE, FINISHED, RECORDS, Job, Kind, Status
from supervisor_bluegreen.shared.store import UnsafePath
from supervisor_bluegreen.supervisord.rpcinterface import xmlrpc_safe

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor_bluegreen"


def test_kinds_and_statuses_are_their_plain_strings_everywhere_they_go() -> None:
    assert Status.FAILED == "failed" and {Kind.DEPLOY: 1}["deploy"] == 1 and {"deploy": 1}[Kind.DEPLOY] == 1
    assert f"{Kind.DEPLOY} {Status.CANCELLED:>10}" == "deploy  cancelled" and str(Status.QUEUED) == "queued"
    assert json.loads(json.dumps({"kind": Kind.ROLLBACK})) == {"kind": "rollback"}
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (?)", (Status.RUNNING,))
    assert db.execute("SELECT x FROM t WHERE x = ?", ("running",)).fetchone() == ("running",)
    answer = xmlrpc_safe({"kind": Kind.SWITCH, "statuses": list(ACTIVE)})
    assert type(answer["kind"]) is str  # XML-RPC cannot marshal an Enum
    assert xmlrpc.client.loads(xmlrpc.client.dumps((answer,)))[0][0] == {
        "kind": "switch",
        "statuses": ["queued", "running"],
    }


def test_every_status_is_active_or_finished_and_every_kind_takes_arguments() -> None:
    """Every kind is run with typed arguments, or is a record only (never queued: Store.record finishes it)."""
    assert set(ACTIVE) | set(FINISHED) == set(Status) and not set(ACTIVE) & set(FINISHED)
    assert set(KINDS) | set(RECORDS) == set(Kind) and not set(KINDS) & set(RECORDS)


def test_every_exception_of_ours_is_a_bluegreen_error() -> None:
    """One root: the code that ends a job or answers a command catches ours as ours (the migration probe,
    which runs inside the app's interpreter and imports none of this package, is the one exception)."""
    roots = {"BluegreenError", "Exception", "BaseException", "OSError", "ValueError"}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "probe.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.bases:
                found[node.name] = ({ast.unparse(b).split(".")[-1] for b in node.bases}, path.name)
    errors = {name for name, (bases, _) in found.items() if name.endswith(("Error", "Failed")) or bases & roots}

    def rooted(name: str) -> bool:
        bases = found[name][0] if name in found else set()
        return "BluegreenError" in bases or any(rooted(b) for b in bases if b in found and b != name)

    assert len(errors) > 20
    unsafe = UnsafePath(40, "refusing x: it is a symbolic link")  # an OSError too: callers that expect one still work
    assert isinstance(unsafe, BluegreenError) and isinstance(unsafe, OSError) and unsafe.errno == 40
    assert sorted(n for n in errors - {"BluegreenError"} if not rooted(n)) == []


def test_a_job_is_read_from_its_record_as_what_the_listener_runs() -> None:
    job = Job.of({"id": 7, "kind": "deploy", "args": {"ref": "main"}, "who": "alice", "status": "running"})
    assert (job.id, job.kind, job.args, job.who) == (7, Kind.DEPLOY, {"ref": "main"}, "alice")
    assert isinstance(job.kind, Kind)
    odd = Job.of({"id": "8", "kind": "reboot", "args": ["x"]})  # refused later, with why, by jobargs.parse
    assert (odd.id, odd.kind, odd.args, odd.who) == (8, "reboot", {}, "")
