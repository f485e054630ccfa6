"""The migration gate: the probe judged on throw-away Django projects (SQLite; one e2e on MariaDB), and the host side.

Each scenario is an app of one shared project: its 0001 is applied, the rest is the release under judgement.
One probe run (a subprocess of the venv's python, as a deploy runs it) answers for every scenario.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from supervisor_bluegreen.host.migrations import gate as gate

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
HEAD = "from django.db import migrations, models\nimport django.db.models.deletion\n\n"


def migration(deps: list[tuple[str, str]], operations: str, extra: str = "", attrs: str = "") -> str:
    """Source of a migration file: dependencies, operations (Python source of a list's items), helpers."""
    return (
        HEAD
        + textwrap.dedent(extra)
        + "\n\nclass Migration(migrations.Migration):\n"
        + (f"    {attrs}\n" if attrs else "")
        + f"    dependencies = {deps!r}\n"
        + "    operations = [\n"
        + textwrap.indent(textwrap.dedent(operations).strip(), "        ")
        + "\n    ]\n"
    )


ITEM = """
migrations.CreateModel(
    name="Item",
    fields=[
        ("id", models.AutoField(primary_key=True, serialize=False)),
        ("name", models.CharField(max_length=50)),
        ("note", models.CharField(max_length=100, null=True)),
        ("qty", models.IntegerField(default=0)),
        ("price", models.DecimalField(max_digits=7, decimal_places=2, default=0)),
        ("big", models.BigIntegerField(default=0)),
    ],
),
migrations.CreateModel(
    name="Tag",
    fields=[("id", models.AutoField(primary_key=True, serialize=False)), ("label", models.CharField(max_length=20))],
),
"""


def initial(extra_ops: str = "") -> str:
    return migration([], ITEM + extra_ops)


def write_project(root: Path, apps: dict[str, dict[str, str]], database: str = "") -> Path:
    """A minimal Django project at root: settings, manage.py, and per app its migration files."""
    root.mkdir(parents=True, exist_ok=True)
    db = database or f"{{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(root / 'db.sqlite3')!r}}}"
    (root / "proj").mkdir(exist_ok=True)
    (root / "proj" / "__init__.py").write_text("")
    (root / "proj" / "settings.py").write_text(
        "SECRET_KEY = 'x'\nUSE_TZ = True\nDEFAULT_AUTO_FIELD = 'django.db.models.AutoField'\n"
        f"INSTALLED_APPS = {sorted(apps)!r}\nDATABASES = {{'default': {db}}}\n"
        "print('settings print goes to stderr, not into the report')\n"
    )
    (root / "manage.py").write_text(
        "import os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n"
    )
    for app, files in apps.items():
        (root / app / "migrations").mkdir(parents=True, exist_ok=True)
        (root / app / "__init__.py").write_text("")
        (root / app / "migrations" / "__init__.py").write_text("")
        for name, source in files.items():
            (root / app / "migrations" / f"{name}.py").write_text(source)
    return root


def run(
    root: Path, argv: tuple[str, ...] | list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=root, capture_output=True, text=True, timeout=120, env=env)


def migrate_to(root: Path, targets: list[tuple[str, str]], env: dict[str, str] | None = None) -> None:
    """Apply each app up to a migration, in one process."""
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings'); django.setup()\n"
        "from django.core.management import call_command\n"
        f"for app, name in {targets!r}: call_command('migrate', app, name, verbosity=0)\n"
    )
    done = run(root, [PYTHON, "-c", script], env=env)
    assert done.returncode == 0, done.stderr


def probe(root: Path, env: dict[str, str] | None = None, **kwargs: object) -> gate.GateReport:
    done = run(root, gate.probe_argv(PYTHON, **kwargs), env=env)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return gate.parse_report(done.stdout, returncode=done.returncode, stderr=done.stderr)


# ------------------------------------------------------------------------------------------------------
# the scenarios: app -> its release (0002, 0003 ...) on top of ITEM (0001, applied)


def deps(app: str, n: int) -> list[tuple[str, str]]:
    return [(app, "0001_initial" if n == 2 else f"{n - 1:04d}_step")]


SCENARIOS: dict[str, list[tuple[str, str, str]]] = {}  # app -> [(operations, extra, attrs)] per migration

SCENARIOS["remove_field"] = [('migrations.RemoveField(model_name="item", name="note"),', "", "")]
SCENARIOS["delete_model"] = [('migrations.DeleteModel(name="Tag"),', "", "")]
SCENARIOS["rename_field"] = [('migrations.RenameField(model_name="item", old_name="note", new_name="remark"),', "", "")]
SCENARIOS["rename_model"] = [('migrations.RenameModel(old_name="Tag", new_name="Label"),', "", "")]
SCENARIOS["alter_table"] = [('migrations.AlterModelTable(name="tag", table="tags"),', "", "")]
SCENARIOS["db_column"] = [
    ('migrations.AlterField(model_name="item", name="note", field=models.CharField(max_length=100, null=True, '
     'db_column="remark")),', "", "")
]  # fmt: skip
SCENARIOS["not_null_add"] = [
    ('migrations.AddField(model_name="item", name="sku", field=models.CharField(max_length=10, default="x"), '
     "preserve_default=False),", "", "")
]  # fmt: skip
SCENARIOS["narrow"] = [
    ("""
     migrations.AlterField(model_name="item", name="note", field=models.CharField(max_length=40, null=True)),
     migrations.AlterField(model_name="item", name="name", field=models.IntegerField(default=0)),
     migrations.AlterField(model_name="item", name="price", field=models.DecimalField(max_digits=7, decimal_places=3)),
     migrations.AlterField(model_name="item", name="big", field=models.IntegerField(default=0)),
     """, "", "")
]  # fmt: skip
SCENARIOS["make_not_null"] = [
    ('migrations.AlterField(model_name="item", name="note", field=models.CharField(max_length=100, default="")),',
     "", "")
]  # fmt: skip
SCENARIOS["unique"] = [
    ("""
     migrations.AlterField(model_name="item", name="name", field=models.CharField(max_length=50, unique=True)),
     migrations.AlterUniqueTogether(name="item", unique_together={("name", "note")}),
     migrations.AddConstraint(model_name="tag", constraint=models.UniqueConstraint(fields=["label"], name="uq_label")),
     migrations.AddField(model_name="tag", name="code", field=models.CharField(max_length=5, unique=True,
                         db_default="-")),
     migrations.AddField(model_name="tag", name="slug", field=models.CharField(max_length=5, unique=True, null=True)),
     """, "", "")
]  # fmt: skip
SCENARIOS["check"] = [
    ("""
     migrations.AddConstraint(model_name="item", constraint=models.CheckConstraint(condition=models.Q(qty__gte=0),
                              name="qty_positive")),
     migrations.AlterField(model_name="item", name="qty", field=models.PositiveIntegerField(default=0)),
     """, "", "")
]  # fmt: skip
SCENARIOS["code"] = [
    ("""
     migrations.RunPython(fill),
     migrations.RunSQL("UPDATE APPX_item SET qty = 1"),
     migrations.RunPython(fill, migrations.RunPython.noop, hints={"bluegreen": "safe"}),
     migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),
     migrations.RunSQL("CREATE INDEX idx_qty ON code_item (qty)", "DROP INDEX idx_qty"),
     migrations.RunSQL("DELETE FROM code_item", hints={"bluegreen": "safe"}),
     """, "def fill(apps, schema_editor):\n    pass\n", "")
]  # fmt: skip
SCENARIOS["upstream"] = [
    ("migrations.RunPython(upstream.update_proxy_model_permissions, migrations.RunPython.noop),",
     "import importlib\n"
     'upstream = importlib.import_module("django.contrib.auth.migrations.0011_update_proxy_permissions")',
     "")
]  # fmt: skip
SCENARIOS["order"] = [
    ("""
     migrations.AddField(model_name="tag", name="item", field=models.ForeignKey(null=True,
                         on_delete=django.db.models.deletion.CASCADE, to="order.item")),
     migrations.AlterOrderWithRespectTo(name="tag", order_with_respect_to="item"),
     """, "", "")
]  # fmt: skip
THIRD = """
from django.db.migrations.operations.base import Operation


class Trigger(Operation):
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        schema_editor.execute("CREATE TRIGGER t AFTER INSERT ON third_item BEGIN SELECT 1; END")

    def describe(self):
        return "Create trigger t"


class Sneaky(Operation):
    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("CREATE TABLE sneaky (id integer)")


class IndexOnly(Operation):
    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        schema_editor.execute("CREATE INDEX third_qty ON third_item (qty)")


class Quiet(Operation):
    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        pass
"""
SCENARIOS["third"] = [("Trigger(),\nSneaky(),\nQuiet(),\nIndexOnly(),", THIRD, "")]
# 0002 is applied: the serving code already has unique_together (name, note)
SCENARIOS["swap"] = [
    ('migrations.AlterUniqueTogether(name="item", unique_together={("name", "note")}),', "", ""),
    ("""
     migrations.AlterUniqueTogether(name="item", unique_together=set()),
     migrations.AddConstraint(model_name="item", constraint=models.UniqueConstraint(fields=["name", "note"],
                              name="uq_name_note")),
     migrations.AddConstraint(model_name="item", constraint=models.UniqueConstraint(fields=["name", "note", "qty"],
                              condition=models.Q(qty__gt=0), name="uq_cond")),
     migrations.AddConstraint(model_name="item", constraint=models.UniqueConstraint(Lower("name"), name="uq_lower")),
     migrations.AlterField(model_name="item", name="name", field=models.CharField(max_length=50, unique=True)),
     """, "from django.db.models.functions import Lower\n", ""),
]  # fmt: skip
SCENARIOS["pk"] = [
    ("""
     migrations.AlterModelTableComment(name="tag", table_comment="labels"),
     migrations.RemoveField(model_name="tag", name="id"),
     migrations.AlterField(model_name="tag", name="label", field=models.CharField(max_length=20, primary_key=True,
                           serialize=False)),
     """, "", "")
]  # fmt: skip
# the recipe the refusal gives for a rename: expand (add + copy, marked) now, contract (marked) in a later release
SCENARIOS["expand"] = [
    ("""
     migrations.AddField(model_name="item", name="remark", field=models.CharField(max_length=100, null=True)),
     migrations.RunPython(copy, migrations.RunPython.noop, hints={"bluegreen": "safe"}),
     """, "def copy(apps, schema_editor):\n    pass\n", ""),
    ('migrations.RemoveField(model_name="item", name="note"),', "", 'bluegreen = "contract"'),
]  # fmt: skip
APPLIED = {"swap": "0002_step"}
SCENARIOS["additive"] = [
    ("""
     migrations.AddField(model_name="item", name="a", field=models.CharField(max_length=10, null=True)),
     migrations.AddField(model_name="item", name="b", field=models.IntegerField(db_default=0)),
     migrations.AddField(model_name="item", name="tags", field=models.ManyToManyField(to="additive.tag")),
     migrations.AddField(model_name="item", name="tag", field=models.ForeignKey(null=True,
                         on_delete=django.db.models.deletion.SET_NULL, to="additive.tag")),
     migrations.CreateModel(name="New", fields=[("id", models.AutoField(primary_key=True, serialize=False)),
                            ("code", models.CharField(max_length=5, unique=True))]),
     migrations.AddField(model_name="new", name="must", field=models.IntegerField(default=1),
                         preserve_default=False),
     migrations.AddIndex(model_name="item", index=models.Index(fields=["qty"], name="item_qty_idx")),
     """, "", "")
]  # fmt: skip
SCENARIOS["widen"] = [
    ("""
     migrations.AlterField(model_name="item", name="note", field=models.CharField(max_length=200, null=True)),
     migrations.AlterField(model_name="item", name="qty", field=models.BigIntegerField(default=0)),
     migrations.AlterField(model_name="item", name="name", field=models.TextField()),
     migrations.AlterField(model_name="item", name="price", field=models.DecimalField(max_digits=9, decimal_places=2,
                           null=True)),
     """, "", "")
]  # fmt: skip
SCENARIOS["state_only"] = [
    ("""
     migrations.AlterField(model_name="item", name="qty", field=models.IntegerField(default=5, help_text="how many",
                           verbose_name="quantity", choices=[(0, "none"), (1, "one")])),
     migrations.AlterField(model_name="tag", name="label", field=models.CharField(max_length=20, blank=True,
                           validators=[])),
     migrations.AlterModelOptions(name="item", options={"ordering": ["name"]}),
     migrations.AlterModelManagers(name="item", managers=[]),
     migrations.AlterField(model_name="tag", name="label", field=models.CharField(max_length=20, db_column="label")),
     migrations.RenameField(model_name="tag", old_name="label", new_name="title"),
     """, "", "")
]  # fmt: skip
SCENARIOS["fk"] = [
    ('migrations.AddField(model_name="item", name="tag", field=models.ForeignKey(null=True, '
     'on_delete=django.db.models.deletion.CASCADE, to="fk.tag")),', "", ""),
    ('migrations.AlterField(model_name="item", name="tag", field=models.ForeignKey(null=True, '
     'on_delete=django.db.models.deletion.SET_NULL, to="fk.tag")),', "", ""),
]  # fmt: skip
SCENARIOS["drops"] = [
    ("""
     migrations.AddIndex(model_name="item", index=models.Index(fields=["qty"], name="d_qty_idx")),
     migrations.AddConstraint(model_name="tag", constraint=models.UniqueConstraint(fields=["label"], name="d_uq")),
     migrations.AlterUniqueTogether(name="item", unique_together={("name", "qty")}),
     migrations.AlterIndexTogether(name="item", index_together={("name", "qty")}),
     """, "", ""),
    ("""
     migrations.RenameIndex(model_name="item", new_name="d_qty_idx2", old_name="d_qty_idx"),
     migrations.RemoveIndex(model_name="item", name="d_qty_idx2"),
     migrations.RemoveConstraint(model_name="tag", name="d_uq"),
     migrations.AlterUniqueTogether(name="item", unique_together=set()),
     migrations.AlterIndexTogether(name="item", index_together=set()),
     """, "", ""),
]  # fmt: skip
SCENARIOS["separate"] = [
    ("""
     migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField(model_name="item", name="note")]),
     migrations.SeparateDatabaseAndState(database_operations=[migrations.RemoveField(model_name="tag", name="label")]),
     migrations.SeparateDatabaseAndState(
         database_operations=[migrations.AddField(model_name="tag", name="x", field=models.IntegerField(null=True))],
         state_operations=[migrations.AddField(model_name="tag", name="x", field=models.IntegerField(null=True))],
     ),
     """, "", "")
]  # fmt: skip
SCENARIOS["reviewed"] = [('migrations.RemoveField(model_name="item", name="note"),', "", 'bluegreen = "safe"')]
SCENARIOS["newcol"] = [
    ("""
     migrations.AddField(model_name="item", name="fresh", field=models.IntegerField(null=True)),
     migrations.RenameField(model_name="item", old_name="fresh", new_name="fresher"),
     migrations.AddField(model_name="item", name="later", field=models.IntegerField(null=True)),
     """, "", ""),
    ('migrations.AlterField(model_name="item", name="later", field=models.IntegerField(default=0)),', "", ""),
]  # fmt: skip
# contract in the middle: 0002 safe, 0003 contract, 0004 depends on it; app "after" depends on contract.0002 only,
# app "late" on contract.0003
SCENARIOS["contract"] = [
    ('migrations.AddField(model_name="item", name="remark", field=models.CharField(max_length=100, null=True)),',
     "", ""),
    ('migrations.RemoveField(model_name="item", name="note"),', "", 'bluegreen = "contract"'),
    ('migrations.AddField(model_name="tag", name="color", field=models.CharField(max_length=9, null=True)),', "", ""),
]  # fmt: skip
CROSS = {
    "after": [("contract", "0002_step")],
    "late": [("contract", "0003_step")],
}
SCENARIOS["after"] = [
    ('migrations.AddField(model_name="tag", name="z", field=models.IntegerField(null=True)),', "", "")
]
SCENARIOS["late"] = [('migrations.AddField(model_name="tag", name="z", field=models.IntegerField(null=True)),', "", "")]


def scenario_files(app: str) -> dict[str, str]:
    files = {"0001_initial": initial()}
    for n, (ops, extra, attrs) in enumerate(SCENARIOS[app], start=2):
        dependencies = deps(app, n) + (CROSS.get(app, []) if n == 2 else [])
        ops = ops.replace("APPX_", f"{app}_")
        files[f"{n:04d}_step"] = migration(dependencies, ops, extra, attrs)
    return files


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_project(tmp_path_factory.mktemp("proj"), {app: scenario_files(app) for app in SCENARIOS})
    migrate_to(root, [(app, APPLIED.get(app, "0001_initial")) for app in SCENARIOS])
    return root


@pytest.fixture(scope="module")
def report(project: Path) -> gate.GateReport:
    return probe(project)


def ops(report: gate.GateReport, app: str, migration: str = "0002_step") -> list[gate.Operation]:
    found = [op for op in report.operations if op.app_label == app and op.migration == migration]
    assert found, f"no operations of {app}.{migration} in the report"
    return found


def only(report: gate.GateReport, app: str, migration: str = "0002_step") -> gate.Operation:
    found = ops(report, app, migration)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------------------------------------------
# against the live database


@pytest.mark.integration
def test_applied_migrations_are_not_listed(report: gate.GateReport) -> None:
    assert not [op for op in report.operations if op.migration == "0001_initial"]
    assert report.vendor == "sqlite"


@pytest.mark.parametrize(
    ("app", "kind", "words"),
    [
        ("remove_field", "remove_field", "drops column remove_field_item.note"),
        ("delete_model", "delete_model", "drops table delete_model_tag"),
        ("rename_field", "rename_field", "renames column rename_field_item.note to remark"),
        ("rename_model", "rename_model", "renames table rename_model_tag to rename_model_label"),
        ("alter_table", "rename_model", "renames table alter_table_tag to tags"),
        ("db_column", "rename_field", "renames column db_column_item.note to remark"),
        ("make_not_null", "make_not_null", "makes make_not_null_item.note NOT NULL"),
    ],
)
@pytest.mark.integration
def test_unsafe_single_operations(report: gate.GateReport, app: str, kind: str, words: str) -> None:
    op = only(report, app)
    assert (op.verdict, op.kind) == ("unsafe", kind), op
    assert words in op.reason


@pytest.mark.integration
def test_not_null_column_with_python_default_is_unsafe(report: gate.GateReport) -> None:
    op = only(report, "not_null_add")
    assert (op.verdict, op.kind) == ("unsafe", "not_null_column")
    assert "without a database default" in op.reason and "its Python default=" in op.reason


@pytest.mark.integration
def test_narrowing_and_retyping_are_unsafe(report: gate.GateReport) -> None:
    note, name, price, big = ops(report, "narrow")
    assert all(op.verdict == "unsafe" and op.kind == "retype" for op in (note, name, price, big)), ops(report, "narrow")
    assert "narrows varchar(100) to varchar(40)" in note.reason
    assert "decimal" in price.reason and "narrows" in big.reason


@pytest.mark.integration
def test_widening_and_making_nullable_are_safe(report: gate.GateReport) -> None:
    note, qty, name, price = ops(report, "widen")
    assert [op.verdict for op in (note, qty, name, price)] == ["safe"] * 4, ops(report, "widen")
    assert "widens varchar(100) to varchar(200)" in note.reason
    assert "widens integer" in qty.reason
    assert "makes it nullable" in price.reason


@pytest.mark.integration
def test_unique_constraints(report: gate.GateReport) -> None:
    field, together, constraint, with_default, nullable = ops(report, "unique")
    for op in (field, together, constraint, with_default):
        assert (op.verdict, op.kind) == ("unsafe", "unique"), op
    assert "same value" in with_default.reason
    assert nullable.verdict == "safe" and "NULL" in nullable.reason


@pytest.mark.integration
def test_check_constraints(report: gate.GateReport) -> None:
    constraint, positive = ops(report, "check")
    assert (constraint.verdict, constraint.kind) == ("unsafe", "check")
    # PositiveIntegerField: a CHECK (x >= 0) on PostgreSQL, "integer unsigned" on SQLite and MySQL
    assert positive.verdict == "unsafe" and positive.kind in ("check", "retype"), positive


@pytest.mark.integration
def test_code_operations_and_their_markers(report: gate.GateReport) -> None:
    python, sql, marked_python, noop, index_sql, marked_sql = ops(report, "code")
    assert (python.verdict, python.kind) == (
        "unsafe",
        "run_python",
    ) and "code.migrations.0002_step.fill" in python.reason
    assert (sql.verdict, sql.kind) == ("unsafe", "run_sql") and "UPDATE code_item" in sql.reason
    assert (marked_python.verdict, marked_python.marked) == ("safe", "operation")
    assert noop.verdict == "safe" and "noop" in noop.reason
    assert index_sql.verdict == "safe"
    assert (marked_sql.verdict, marked_sql.marked) == ("safe", "operation")


@pytest.mark.integration
def test_djangos_own_data_migrations_pass(report: gate.GateReport) -> None:
    op = only(report, "upstream")
    assert op.verdict == "safe" and "Django's own data migration" in op.reason


@pytest.mark.integration
def test_order_with_respect_to_adds_a_not_null_column(report: gate.GateReport) -> None:
    add_fk, order = ops(report, "order")
    assert add_fk.verdict == "safe"
    assert (order.verdict, order.kind) == ("unsafe", "not_null_column") and "_order" in order.reason


@pytest.mark.integration
def test_third_party_operations_judged_by_the_sql_they_emit_and_never_run(report: gate.GateReport,
                                                                          project: Path) -> None:  # fmt: skip
    trigger, sneaky, quiet, index_only = ops(report, "third")
    assert (trigger.verdict, trigger.kind) == (
        "unsafe",
        "unknown",
    ) and "third.migrations.0002_step.Trigger" in trigger.reason
    assert "CREATE TRIGGER" in trigger.reason
    assert (sneaky.verdict, sneaky.kind) == ("unsafe", "unknown")
    assert quiet.verdict == "safe" and "emits no SQL" in quiet.reason
    assert index_only.verdict == "safe" and "only runs CREATE INDEX third_qty" in index_only.reason
    # the probe only reads: the table the sneaky operation tried to create through a raw cursor does not exist
    import sqlite3

    with sqlite3.connect(project / "db.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "sneaky" not in tables and "third_item" in tables


@pytest.mark.integration
def test_additive_operations_are_safe(report: gate.GateReport) -> None:
    found = ops(report, "additive")
    assert [op.verdict for op in found] == ["safe"] * 7, [(op.description, op.reason) for op in found]
    _nullable, db_default, m2m, _fk, _create, on_new_table, _index = found
    assert "database default" in db_default.reason
    assert "join table" in m2m.reason
    assert "created by this release" in on_new_table.reason


@pytest.mark.integration
def test_state_only_changes_are_safe(report: gate.GateReport) -> None:
    found = ops(report, "state_only")
    assert [op.verdict for op in found] == ["safe"] * 6, [(op.description, op.reason) for op in found]
    assert "no database change" in found[0].reason
    assert "keeps its name" in found[5].reason


@pytest.mark.integration
def test_on_delete_change_is_state_only(report: gate.GateReport) -> None:
    assert only(report, "fk").verdict == "safe"
    op = only(report, "fk", "0003_step")
    assert op.verdict == "safe" and "no database change" in op.reason


@pytest.mark.integration
def test_index_and_constraint_removals_are_safe_additions_of_unique_are_not(report: gate.GateReport) -> None:
    index, unique, together, index_together = ops(report, "drops")
    assert index.verdict == "safe" and index_together.verdict == "safe"
    assert unique.verdict == "unsafe" and together.verdict == "unsafe"
    assert [op.verdict for op in ops(report, "drops", "0003_step")] == ["safe"] * 5


@pytest.mark.integration
def test_separate_database_and_state_counts_database_operations_only(report: gate.GateReport) -> None:
    state_only, db_remove, db_add = ops(report, "separate")
    assert state_only.verdict == "safe" and "state only" in state_only.reason
    assert (db_remove.verdict, db_remove.kind) == ("unsafe", "remove_field")
    assert [c.verdict for c in db_remove.children] == ["unsafe"]
    assert db_add.verdict == "safe"


@pytest.mark.integration
def test_unique_constraints_the_serving_code_already_respects(report: gate.GateReport) -> None:
    drop, same, conditional, expression, field = ops(report, "swap", "0003_step")
    assert drop.verdict == same.verdict == conditional.verdict == "safe", (same.reason, conditional.reason)
    assert "already respects (unique_together name, note)" in same.reason
    assert (expression.verdict, expression.kind) == ("unsafe", "unique")
    assert (field.verdict, field.kind) == ("unsafe", "unique")  # name alone was never unique


@pytest.mark.integration
def test_primary_key_change(report: gate.GateReport) -> None:
    comment, drop_id, new_pk = ops(report, "pk")
    assert comment.verdict == "safe"
    assert (drop_id.verdict, drop_id.kind) == ("unsafe", "remove_field")
    assert (new_pk.verdict, new_pk.kind) == ("unsafe", "primary_key")


@pytest.mark.integration
def test_expand_contract_recipe_passes(report: gate.GateReport) -> None:
    add, copy = ops(report, "expand")
    assert add.verdict == "safe" and (copy.verdict, copy.marked) == ("safe", "operation")
    drop = only(report, "expand", "0003_step")
    assert drop.verdict == "contract" and drop.contract and "would be unsafe" in drop.reason
    assert "expand.0003_step" in report.contract
    assert {t.app_label: t.name for t in report.pre_switch_targets}["expand"] == "0002_step"
    assert not [op for op in report.unsafe if op.app_label == "expand"]


@pytest.mark.integration
def test_reviewed_migration_passes_and_says_so(report: gate.GateReport) -> None:
    op = only(report, "reviewed")
    assert (op.verdict, op.marked) == ("safe", "migration")
    assert "would otherwise be unsafe" in op.reason
    assert op in report.marked


@pytest.mark.integration
def test_columns_added_by_the_same_release(report: gate.GateReport) -> None:
    add, rename, later = ops(report, "newcol")
    assert add.verdict == rename.verdict == later.verdict == "safe"
    not_null = only(report, "newcol", "0003_step")  # the serving code's INSERTs omit it: NOT NULL breaks them
    assert (not_null.verdict, not_null.kind) == ("unsafe", "not_null_column")


@pytest.mark.integration
def test_contract_migration_in_the_middle(report: gate.GateReport) -> None:
    assert only(report, "contract", "0003_step").verdict == "contract"
    assert "contract.0003_step" in report.contract
    deferred = {d.key: d for d in report.deferred if d.app_label in ("contract", "late", "after")}
    assert set(deferred) == {"contract.0003_step", "contract.0004_step", "late.0002_step"}
    assert deferred["contract.0004_step"].because == "contract.0003_step"
    assert {d.key for d in report.blocked} == {"contract.0004_step", "late.0002_step"}
    targets = {t.app_label: t.name for t in report.pre_switch_targets}
    assert targets["contract"] == "0002_step" and targets["after"] == "0002_step" and "late" not in targets
    assert not report.all_pre_switch and report.expressible


@pytest.mark.integration
def test_refusal_names_everything_and_gives_the_recipe(report: gate.GateReport) -> None:
    message = gate.refusal(report)
    assert message is not None
    assert "rename_field.0002_step, operation 1 (RenameField: Rename field note on item to remark)" in message
    assert "renames column rename_field_item.note to remark" in message
    assert "bluegreen = 'contract'" in message and "db_column=" in message
    assert "SeparateDatabaseAndState" in message  # the remove recipe
    assert "separate.0002_step, operation 2.1 (RemoveField" in message  # the database operation inside
    assert "contract.0004_step depends on contract migration contract.0003_step" in message
    assert gate.ALLOW_FLAG in message
    assert gate.refusal(report, allow_unsafe=True) is None


@pytest.mark.integration
def test_pre_switch_migrate_then_contract_after(tmp_path: Path) -> None:
    """Run what the gate says before the switch: the contract migration is left, then applied after."""
    apps = {"shop": {
        "0001_initial": initial(),
        "0002_add": migration([("shop", "0001_initial")], 'migrations.AddField(model_name="item", name="remark", '
                              'field=models.CharField(max_length=100, null=True)),'),
        "0003_drop": migration([("shop", "0002_add")], 'migrations.RemoveField(model_name="item", name="note"),',
                               attrs='bluegreen = "contract"'),
    }}  # fmt: skip
    root = write_project(tmp_path / "p", apps)
    migrate_to(root, [("shop", "0001_initial")])
    first = probe(root)
    assert first.passes and first.contract == ["shop.0003_drop"]
    argvs = gate.pre_switch_argvs(first, PYTHON)
    assert argvs == [(PYTHON, "manage.py", "migrate", "shop", "0002_add", "--noinput")]
    for argv in argvs:
        assert run(root, argv).returncode == 0
    second = probe(root)
    assert [m.key for m in second.migrations] == ["shop.0003_drop"] and second.passes
    assert run(root, gate.contract_argv(PYTHON)).returncode == 0
    assert probe(root).empty


@pytest.mark.integration
def test_file_mode_reads_settings_from_manage_py(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = run(project, gate.probe_file_argv(PYTHON), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("\n") == 1  # stdout carries the report only
    report = gate.parse_report(done.stdout)
    assert only(report, "rename_field").kind == "rename_field"


@pytest.mark.integration
def test_history_mode_judges_each_migration_on_its_own(project: Path) -> None:
    report = probe(project, history=True)
    first = [op for op in report.operations if op.key == "remove_field.0001_initial"]
    assert first and all(op.verdict == "safe" for op in first)
    assert only(report, "remove_field").verdict == "unsafe"
    # in history mode a later migration on a table of an earlier one is not "created by this release"
    assert only(report, "newcol", "0003_step").verdict == "unsafe"


# ------------------------------------------------------------------------------------------------------
# host side, pure


def _raw_op(**overrides: object) -> dict:
    op = {"app_label": "shop", "migration": "0002_x", "index": 0, "operation": "RemoveField",
          "description": "Remove field note from item", "verdict": "unsafe", "reason": "drops column shop_item.note",
          "kind": "remove_field", "contract": False, "marked": None, "path": [], "children": []}  # fmt: skip
    op.update(overrides)
    return op


def _raw(**overrides: object) -> dict:
    raw = {"format": gate.FORMAT, "ok": True, "django": "5.2", "vendor": "mysql", "database": "default",
           "conflicts": {}, "migrations": [{"app_label": "shop", "name": "0002_x", "marker": None, "operations": 1}],
           "operations": [_raw_op()], "pre_switch": {"all": True, "targets": [{"app_label": "shop", "name": "0002_x"}],
           "expressible": True}, "deferred": [], "warnings": []}  # fmt: skip
    raw.update(overrides)
    return raw


def test_parse_finds_the_report_after_noise() -> None:
    out = "Loading settings...\n{not json\n" + json.dumps(_raw()) + "\n"
    report = gate.parse_report(out)
    assert [op.where() for op in report.unsafe] == [
        "shop.0002_x, operation 1 (RemoveField: Remove field note from item)"
    ]
    assert not report.passes and report.vendor == "mysql"
    assert gate.pre_switch_argvs(report, "/v/bin/python") == [("/v/bin/python", "manage.py", "migrate", "--noinput")]


def test_parse_errors() -> None:
    with pytest.raises(gate.GateError, match="printed no report"):
        gate.parse_report("Traceback: boom", returncode=1, stderr="ImportError: no module named foo")
    failed = {"format": gate.FORMAT, "ok": False, "error": "OperationalError: no such database"}
    with pytest.raises(gate.GateError, match="no such database"):
        gate.parse_report(json.dumps(failed), returncode=2)
    with pytest.raises(gate.GateError, match="status 1"):
        gate.parse_report(json.dumps(_raw()), returncode=1)


def test_marked_and_contract_operations_pass() -> None:
    raw = _raw(operations=[_raw_op(verdict="safe", marked="migration"), _raw_op(index=1, verdict="contract",
               contract=True)], deferred=[{"app_label": "shop", "name": "0002_x", "contract": True}],
               pre_switch={"all": False, "targets": [], "expressible": True})  # fmt: skip
    report = gate.parse_report(json.dumps(raw))
    assert report.passes and gate.refusal(report) is None
    assert report.contract == ["shop.0002_x"] and report.contract_pending and len(report.marked) == 1
    assert gate.pre_switch_argvs(report) == []
    assert any("marked safe by migration marker" in line for line in gate.summary(report))


@pytest.mark.parametrize("kind", sorted(gate.RECIPES))
def test_every_kind_has_a_recipe_in_the_refusal(kind: str) -> None:
    report = gate.parse_report(json.dumps(_raw(operations=[_raw_op(kind=kind)])))
    message = gate.refusal_message(report)
    assert gate.recipe(kind) in message and gate.ALLOW_FLAG in message
    assert "shop.0002_x, operation 1 (RemoveField" in message


def test_probe_argv_is_an_argv_with_an_embedded_probe() -> None:
    argv = gate.probe_argv()
    assert argv[:6] == ("%(python)s", "manage.py", "shell", "--verbosity", "0", "--command")
    assert all(isinstance(word, str) for word in argv) and len(argv) == 7
    assert "%(" not in argv[6]  # steps.expand must leave the bootstrap alone
    compile(argv[6], "<bootstrap>", "exec")
    assert "--history" in gate.bootstrap("--history")


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("varchar(50)", "varchar(100)", True),
        ("varchar(100)", "varchar(50)", False),
        ("char(32)", "varchar(32)", True),
        ("varchar(200)", "longtext", True),
        ("longtext", "text", False),
        ("text", "varchar", True),  # PostgreSQL's unlimited varchar
        ("longtext", "varchar(200)", False),
        ("integer", "bigint", True),
        ("integer AUTO_INCREMENT", "bigint AUTO_INCREMENT", True),
        ("bigint", "integer", False),
        ("smallint UNSIGNED", "integer UNSIGNED", True),
        ("integer", "integer UNSIGNED", False),
        ("integer UNSIGNED", "bigint", True),
        ("integer UNSIGNED", "integer", False),
        ("numeric(7, 2)", "numeric(9, 2)", True),
        ("numeric(7, 2)", "numeric(7, 3)", False),
        ("real", "double precision", True),
        ("double precision", "real", False),
        ("char(32)", "uuid", False),
        ("date", "timestamp with time zone", False),
        ("varchar(100)", "integer", False),
    ],
)
def test_widening_rules(old: str, new: str, widens: bool) -> None:
    from supervisor_bluegreen.host.migrations.probe import widening

    assert widening(old, new)[0] is widens, widening(old, new)


def test_probe_imports_only_the_standard_library_and_django() -> None:
    import ast

    tree = ast.parse(gate.probe_source())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "argparse", "contextlib", "json", "os", "re", "sys", "traceback", "django"}, roots


# ------------------------------------------------------------------------------------------------------
# e2e: MariaDB


@pytest.mark.e2e
def test_plan_is_computed_against_the_live_mariadb(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from example import services

    name = f"bg_gate_{uuid.uuid4().hex[:8]}"
    database = (
        f"{{'ENGINE': 'django.db.backends.mysql', 'NAME': {name!r}, 'HOST': '127.0.0.1', 'PORT': '3306', "
        "'USER': 'root', 'PASSWORD': ''}"
    )
    apps = {"shop": {
        "0001_initial": initial(),
        "0002_rename": migration([("shop", "0001_initial")], """
            migrations.RenameField(model_name="item", old_name="note", new_name="remark"),
            migrations.AlterField(model_name="tag", name="label", field=models.CharField(max_length=20,
                                  db_column="label")),
            migrations.RenameField(model_name="tag", old_name="label", new_name="title"),
            migrations.AddField(model_name="item", name="sku", field=models.CharField(max_length=9, null=True)),
            """),
    }}  # fmt: skip
    root = write_project(tmp_path / "p", apps, database=database)
    settings = root / "proj" / "settings.py"
    settings.write_text(
        "import pymysql\npymysql.install_as_MySQLdb()\npymysql.version_info = (2, 2, 1, 'final', 0)\n"
        + settings.read_text()
    )
    services.create_database(name)
    try:
        migrate_to(root, [("shop", "0001_initial")])
        with services.mariadb(name) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM django_migrations")
            before = cur.fetchone()[0]
            cur.execute("SHOW CREATE TABLE shop_item")
            schema = cur.fetchone()[1]
        report = probe(root)
        assert report.vendor == "mysql"
        assert [m.key for m in report.migrations] == ["shop.0002_rename"]  # 0001 is applied: not listed
        rename, alter_kept, rename_kept, add = ops(report, "shop", "0002_rename")
        assert (rename.verdict, rename.kind) == ("unsafe", "rename_field")
        assert rename_kept.verdict == "safe" and alter_kept.verdict == "safe"
        assert add.verdict == "safe"
        message = gate.refusal(report)
        assert message and "shop.0002_rename, operation 1 (RenameField" in message
        with services.mariadb(name) as conn, conn.cursor() as cur:  # the probe only read
            cur.execute("SELECT COUNT(*) FROM django_migrations")
            assert cur.fetchone()[0] == before
            cur.execute("SHOW CREATE TABLE shop_item")
            assert cur.fetchone()[1] == schema
    finally:
        services.drop_database(name)
