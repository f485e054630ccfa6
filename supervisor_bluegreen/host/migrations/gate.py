"""The migration gate, host side: run the probe in the idle color, read its verdicts, refuse with a recipe.

The probe (:mod:`supervisor_bluegreen.host.migrations.probe`) runs inside the app's interpreter as the app's user
and prints one JSON report: every operation of every unapplied migration with a verdict (``safe``, ``unsafe``,
``contract``), the per-app ``migrate APP NAME`` targets that may run before the switch, and the migrations that
must wait for it (contract migrations and those depending on one). Everything here is pure: it builds argv lists,
parses text, and writes messages; running the argv (as the app user, in the idle checkout, with a timeout) is the
caller's job, as for any build step::

    argv = steps.expand(migration_gate.probe_argv(), color)          # or probe_argv(color.python)
    done = steps.capture(argv, cwd=color.checkout, env=..., user=..., timeout=...)
    report = migration_gate.parse_report(done.stdout, returncode=done.returncode, stderr=done.stderr)
    refusal = migration_gate.refusal(report, allow_unsafe=allow_unsafe_migrations)
    if refusal: abort the deploy with it (nothing migrated yet)
    for argv in migration_gate.pre_switch_argvs(report, python): run it     # instead of a plain migrate
    ... switch, watch window ...
    if report.contract_pending: run migration_gate.contract_argv(python)     # then clear the rollback target
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor_bluegreen.shared.errors import BluegreenError

FORMAT = "bluegreen-migration-plan/1"
PROBE_FILE = Path(__file__).with_name("probe.py")
ALLOW_FLAG = "--allow-unsafe-migrations"


class GateError(BluegreenError):
    """The probe could not tell what the migrations do (it failed, or printed no report)."""


@dataclass(frozen=True)
class Operation:
    """One operation of one unapplied migration, as judged by the probe."""

    app_label: str
    migration: str
    index: int  # position in the migration's operations
    operation: str  # class name, e.g. RenameField
    description: str  # operation.describe()
    verdict: str  # safe | unsafe | contract
    reason: str
    kind: str = ""  # category of an unsafe change: rename_field, remove_field, not_null_column, ... ("" when safe)
    contract: bool = False  # its migration is marked contract
    marked: str | None = None  # "migration" / "operation" when a bluegreen = "safe" marker let it pass
    path: tuple[int, ...] = ()  # position inside SeparateDatabaseAndState.database_operations
    operation_path: str = ""  # module.Class
    children: tuple[Operation, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.app_label}.{self.migration}"

    @property
    def unsafe(self) -> bool:
        return self.verdict == "unsafe"

    def where(self) -> str:
        """'app.migration, operation 2 (RenameField: Rename field a on b to c)'."""
        sub = "".join(f".{i + 1}" for i in self.path)
        return f"{self.key}, operation {self.index + 1}{sub} ({self.operation}: {self.description})"


@dataclass(frozen=True)
class Target:
    """``manage.py migrate APP NAME``: one app up to one migration."""

    app_label: str
    name: str

    def argv(self, python: str = "%(python)s") -> tuple[str, ...]:
        return (python, "manage.py", "migrate", self.app_label, self.name, "--noinput")


@dataclass(frozen=True)
class Deferred:
    """An unapplied migration that waits for the switch: a contract one, or one that depends on a contract one."""

    app_label: str
    name: str
    contract: bool
    because: str | None = None  # app.name of the contract migration it depends on

    @property
    def key(self) -> str:
        return f"{self.app_label}.{self.name}"


@dataclass(frozen=True)
class Migration:
    app_label: str
    name: str
    marker: str | None  # contract | safe | None
    operations: int

    @property
    def key(self) -> str:
        return f"{self.app_label}.{self.name}"


@dataclass(frozen=True)
class GateReport:
    """The probe's report: what ``migrate`` would do to the live database, and what the serving code survives."""

    operations: tuple[Operation, ...]
    migrations: tuple[Migration, ...] = ()
    pre_switch_targets: tuple[Target, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    all_pre_switch: bool = True  # nothing deferred: a plain `migrate` is the pre-switch step
    expressible: bool = True  # every app's allowed migrations are reached by one migrate target
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    django: str = ""
    vendor: str = ""
    database: str = "default"

    @property
    def unsafe(self) -> list[Operation]:
        """Operations that would break the serving code, outside contract migrations and markers."""
        return [op for op in self.operations if op.verdict == "unsafe"]

    @property
    def contract(self) -> list[str]:
        """app.name of the contract migrations (they run after the switch and the watch window)."""
        return [d.key for d in self.deferred if d.contract]

    @property
    def blocked(self) -> list[Deferred]:
        """Migrations the new code needs that depend on a contract migration: they cannot run before the switch."""
        return [d for d in self.deferred if not d.contract]

    @property
    def marked(self) -> list[Operation]:
        """Operations let through by a bluegreen = "safe" marker (to be logged)."""
        return [op for op in self.operations if op.marked]

    @property
    def contract_pending(self) -> bool:
        return any(d.contract for d in self.deferred)

    @property
    def empty(self) -> bool:
        return not self.migrations

    @property
    def passes(self) -> bool:
        return not self.unsafe and not self.blocked and not self.conflicts


# ------------------------------------------------------------------------------------------------------
# running the probe


def probe_source() -> str:
    return PROBE_FILE.read_text(encoding="utf-8")


def bootstrap(*probe_args: str) -> str:
    """Python source for ``manage.py shell -c``: unpack the probe, run ``main(probe_args)``, exit with its status."""
    packed = base64.b64encode(zlib.compress(probe_source().encode("utf-8"), 9)).decode("ascii")
    return (
        "import base64, zlib\n"
        "g = {'__name__': 'bluegreen_migration_plan'}\n"
        f"exec(compile(zlib.decompress(base64.b64decode('{packed}')).decode('utf-8'), "
        "'bluegreen/django_migration_plan.py', 'exec'), g)\n"
        f"raise SystemExit(g['main']({list(probe_args)!r}))\n"
    )


def probe_argv(python: str = "%(python)s", *, database: str = "default", history: bool = False) -> tuple[str, ...]:
    """The argv that runs the probe in a color's checkout (cwd), with that color's interpreter.

    ``python`` defaults to the build-step placeholder, so ``steps.expand(probe_argv(), color)`` fills it in.
    manage.py sets the settings up exactly as for ``migrate``. ``history`` judges every migration of the
    project as if each were deployed on its own (for audits, not for deploys).
    """
    args = ["--database", database]
    if history:
        args.append("--history")
    return (python, "manage.py", "shell", "--verbosity", "0", "--command", bootstrap(*args))


def probe_file_argv(python: str, *, settings: str | None = None, history: bool = False) -> tuple[str, ...]:
    """The other way in: run the probe file itself (it sets Django up from --settings or ./manage.py)."""
    argv = [python, str(PROBE_FILE)]
    if settings:
        argv += ["--settings", settings]
    if history:
        argv.append("--history")
    return tuple(argv)


# ------------------------------------------------------------------------------------------------------
# parsing


def _operation(raw: dict[str, Any]) -> Operation:
    return Operation(
        app_label=str(raw["app_label"]),
        migration=str(raw["migration"]),
        index=int(raw["index"]),
        operation=str(raw["operation"]),
        description=str(raw.get("description", "")),
        verdict=str(raw["verdict"]),
        reason=str(raw.get("reason", "")),
        kind=str(raw.get("kind") or ""),
        contract=bool(raw.get("contract")),
        marked=raw.get("marked") or None,
        path=tuple(int(i) for i in raw.get("path") or ()),
        operation_path=str(raw.get("operation_path", "")),
        children=tuple(_operation(child) for child in raw.get("children") or ()),
    )


def find_report(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON line: the last line of stdout that is a report (a project may print before it)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return data
    try:  # an indented report spans lines
        data = json.loads(stdout[stdout.index("{") :])
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def parse_report(stdout: str, *, returncode: int = 0, stderr: str = "") -> GateReport:
    """A GateReport from the probe's output; GateError when the probe failed or printed none."""
    data = find_report(stdout)
    if data is None:
        tail = (stderr or stdout).strip()[-800:]
        raise GateError(f"the migration probe printed no report (exit status {returncode}): {tail}")
    if not data.get("ok"):
        raise GateError(f"the migration probe failed: {data.get('error', 'unknown error')}")
    if returncode != 0:
        raise GateError(f"the migration probe exited with status {returncode}: {(stderr or '').strip()[-800:]}")
    switch = data.get("pre_switch") or {}
    return GateReport(
        operations=tuple(_operation(op) for op in data.get("operations") or ()),
        migrations=tuple(
            Migration(str(m["app_label"]), str(m["name"]), m.get("marker"), int(m.get("operations", 0)))
            for m in data.get("migrations") or ()
        ),
        pre_switch_targets=tuple(Target(str(t["app_label"]), str(t["name"])) for t in switch.get("targets") or ()),
        deferred=tuple(
            Deferred(str(d["app_label"]), str(d["name"]), bool(d.get("contract")), d.get("because"))
            for d in data.get("deferred") or ()
        ),
        all_pre_switch=bool(switch.get("all", True)),
        expressible=bool(switch.get("expressible", True)),
        conflicts={str(k): list(v) for k, v in (data.get("conflicts") or {}).items()},
        warnings=tuple(str(w) for w in data.get("warnings") or ()),
        django=str(data.get("django", "")),
        vendor=str(data.get("vendor", "")),
        database=str(data.get("database", "default")),
    )


# ------------------------------------------------------------------------------------------------------
# what to run


def pre_switch_argvs(report: GateReport, python: str = "%(python)s") -> list[tuple[str, ...]]:
    """The migrate commands to run before the switch: a plain migrate when nothing waits, else per-app targets.

    Targets are in plan order and none is an ancestor of another, so each one only applies migrations.
    """
    if not report.migrations:
        return []
    if report.all_pre_switch:
        return [(python, "manage.py", "migrate", "--noinput")]
    return [target.argv(python) for target in report.pre_switch_targets]


def contract_argv(python: str = "%(python)s") -> tuple[str, ...]:
    """After the switch and the watch window: the rest (contract migrations and what depends on them)."""
    return (python, "manage.py", "migrate", "--noinput")


# ------------------------------------------------------------------------------------------------------
# messages

_BOTH = (
    "Or keep the database name: a renamed field with db_column='<old column>' (a renamed model with "
    "Meta.db_table='<old table>') emits no SQL and passes the gate."
)
RECIPES: dict[str, str] = {
    "rename_field": (
        "rename in two releases (expand/contract): release 1 adds the new field (null=True, or with db_default) and "
        "its code writes both fields and still reads the old one; release 2 copies old to new with a RunPython "
        "marked hints={'bluegreen': 'safe'} (it runs before the switch, while release 1 keeps both in step), its "
        "code uses only the new field, and the old field's RemoveField is in a later migration marked "
        "bluegreen = 'contract' (it runs after the switch and the watch window). " + _BOTH
    ),
    "rename_model": (
        "rename in two releases: release 1 creates the new model (CreateModel) and its code writes both and still "
        "reads the old one; release 2 copies the rows with a RunPython marked hints={'bluegreen': 'safe'}, its code "
        "uses only the new model, and the old model's DeleteModel is in a later migration marked "
        "bluegreen = 'contract'. " + _BOTH
    ),
    "remove_field": (
        "remove in two releases: release 1 drops every use of the field from the code (make it null=True or give "
        "it a db_default first if it is NOT NULL) and removes it from the state only: "
        "migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField(...)]); release 2 drops "
        "the column in a migration marked bluegreen = 'contract' (RunSQL 'ALTER TABLE ... DROP COLUMN ...'). "
        "Simpler: release 1 only stops using the field, release 2 has the RemoveField, marked contract."
    ),
    "delete_model": (
        "delete in two releases: release 1 drops every use of the model from the code but keeps the model; "
        "release 2 has the DeleteModel in a migration marked bluegreen = 'contract' (it runs after the switch "
        "and the watch window, when no code reads the table any more)."
    ),
    "not_null_column": (
        "give it a database default: db_default=... (Django >= 5.0) makes the serving code's INSERTs get a value, "
        "and that alone passes. Otherwise two releases: release 1 adds it null=True and its code always writes "
        "it; release 2 backfills the NULLs with a RunPython marked hints={'bluegreen': 'safe'} and makes it NOT "
        "NULL with an AlterField in a later migration marked bluegreen = 'contract'. A Python default= does not "
        "help: Django uses it to fill the existing rows, then drops the database default."
    ),
    "make_not_null": (
        "make it NOT NULL in two releases: release 1 ships code that always writes the field; release 2 backfills "
        "the NULLs with a RunPython marked hints={'bluegreen': 'safe'} and has the AlterField to null=False in a "
        "later migration marked bluegreen = 'contract'."
    ),
    "retype": (
        "change the type in two releases: release 1 adds a column of the new type (null=True) and its code writes "
        "both; release 2 converts the existing rows with a RunPython marked hints={'bluegreen': 'safe'}, its code "
        "uses only the new column, and the old column is removed in a later migration marked "
        "bluegreen = 'contract'. Widening (varchar(50) -> varchar(100), int -> bigint, char -> text) passes as it is."
    ),
    "unique": (
        "add the constraint in two releases: release 1 ships code that never writes duplicates (validation, "
        "get_or_create); release 2 removes the existing duplicates with a RunPython marked "
        "hints={'bluegreen': 'safe'} and adds the unique constraint in a later migration marked "
        "bluegreen = 'contract'."
    ),
    "check": (
        "add the constraint in two releases: release 1 ships code that only writes rows that satisfy it; release 2 "
        "fixes the existing rows with a RunPython marked hints={'bluegreen': 'safe'} and adds the constraint in a "
        "later migration marked bluegreen = 'contract'."
    ),
    "retarget_fk": (
        "point to the new model in two releases: release 1 adds a new nullable foreign key and its code writes "
        "both; release 2 fills it with a RunPython marked hints={'bluegreen': 'safe'}, its code uses only the new "
        "key, and the old key is removed in a later migration marked bluegreen = 'contract'."
    ),
    "db_default_removed": (
        "release 1 ships code that always writes the field; release 2 drops the database default in a "
        "migration marked bluegreen = 'contract'."
    ),
    "primary_key": (
        "a primary key change rewrites the table and every reference to it: there is no zero-downtime recipe "
        "for it here; do it in a maintenance window (" + ALLOW_FLAG + ")."
    ),
    "run_python": (
        "if the code only adds or backfills data the serving code tolerates, say so: "
        "migrations.RunPython(func, reverse, hints={'bluegreen': 'safe'}) (or mark the reviewed migration "
        "bluegreen = 'safe'); if it needs the old code gone, mark the migration bluegreen = 'contract'."
    ),
    "run_sql": (
        "if the SQL only adds (tables, nullable columns, indexes, data the serving code tolerates), say so: "
        "migrations.RunSQL(sql, reverse_sql, hints={'bluegreen': 'safe'}) (or mark the reviewed migration "
        "bluegreen = 'safe'); if it needs the old code gone, mark the migration bluegreen = 'contract'."
    ),
    "unknown": (
        "a third-party operation the gate cannot judge: review what it does to the tables the serving code uses, "
        "then mark the migration bluegreen = 'safe' (it passes, logged) or bluegreen = 'contract' (it runs after "
        "the switch and the watch window)."
    ),
}
MARKERS_HELP = (
    "Markers: on the Migration class, bluegreen = 'contract' (runs after the switch and the watch window) or "
    "bluegreen = 'safe' (reviewed by a human: passes, logged); on a RunPython/RunSQL, hints={'bluegreen': 'safe'}."
)


def recipe(kind: str) -> str:
    return RECIPES.get(kind, RECIPES["unknown"])


def refusal(report: GateReport, *, allow_unsafe: bool = False) -> str | None:
    """The message that refuses the deploy, or None when the gate passes (or ``allow_unsafe`` overrides it)."""
    if report.passes or allow_unsafe:
        return None
    return refusal_message(report)


def _leaves(ops: Iterable[Operation]) -> list[Operation]:
    """Unsafe operations, SeparateDatabaseAndState replaced by its unsafe database operations."""
    out: list[Operation] = []
    for op in ops:
        bad_children = [child for child in op.children if child.unsafe]
        out.extend(_leaves(bad_children) if bad_children else [op])
    return out


def refusal_message(report: GateReport) -> str:
    """Why the deploy is refused: each unsafe operation (app, migration, operation, why) and how to do it."""
    lines: list[str] = []
    unsafe = _leaves(report.unsafe)
    if unsafe:
        lines.append(
            f"migration gate: refused before anything migrated: {len(unsafe)} operation(s) would break the code "
            "that is serving now (it keeps serving until the switch)"
        )
        kinds: list[str] = []
        for op in unsafe:
            lines.append(f"  - {op.where()}: {op.reason}")
            if op.kind not in kinds:
                kinds.append(op.kind)
        lines.append("how to do it without downtime:")
        for kind in kinds:
            lines.append(f"  * {kind or 'unknown'}: {recipe(kind)}")
    if report.blocked:
        lines.append(
            "migration gate: refused: these migrations depend on a contract migration, so they could only run "
            "after the switch, but the new code needs them before it serves:"
        )
        for d in report.blocked:
            lines.append(f"  - {d.key} depends on contract migration {d.because}")
        lines.append(
            "  * ship the contract migration in a release of its own, after the one that needs these (or make "
            "them not depend on it)"
        )
    if report.conflicts:
        lines.append(
            "migration gate: refused: conflicting migrations (several leaf nodes) in "
            + "; ".join(f"{app}: {', '.join(names)}" for app, names in sorted(report.conflicts.items()))
            + "; run makemigrations --merge"
        )
    lines.append(MARKERS_HELP)
    lines.append(
        f"To deploy anyway (a maintenance window, or you know the serving code survives it): deploy {ALLOW_FLAG} "
        "(recorded in history with who used it)."
    )
    return "\n".join(lines)


def summary(report: GateReport) -> list[str]:
    """Lines for the deploy log: every operation's verdict, the markers used, the pre-switch plan."""
    if report.empty:
        return ["migration gate: no unapplied migrations"]
    lines = [
        f"migration gate: {len(report.migrations)} unapplied migration(s) on {report.vendor} (Django {report.django})"
    ]
    for op in report.operations:
        mark = f" [marked safe by {op.marked} marker]" if op.marked else ""
        lines.append(f"  {op.verdict:8} {op.where()}: {op.reason}{mark}")
    if not report.all_pre_switch:
        targets = ", ".join(f"{t.app_label} {t.name}" for t in report.pre_switch_targets) or "none"
        lines.append(f"  before the switch: migrate {targets}")
        lines.append(f"  after the watch window: {', '.join(d.key for d in report.deferred)}")
        if not report.expressible:
            lines.append("  note: an app's allowed migrations need several migrate targets (branches in its graph)")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return lines
