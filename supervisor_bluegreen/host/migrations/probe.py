"""The migration gate's probe: runs INSIDE the app's interpreter and prints, as JSON, what ``migrate`` would do.

It imports only the standard library and Django, because it runs in the idle color's virtualenv, as the app's
user, in the idle checkout. Two ways to run it:

- ``python manage.py shell -v 0 -c BOOTSTRAP`` where BOOTSTRAP exec()s this file's source and calls
  ``main(argv)`` (what :func:`supervisor_bluegreen.host.migrations.gate.probe_argv` builds): manage.py configures
  settings exactly as it does for ``migrate``;
- ``python /path/to/probe.py [--settings MODULE]`` in the checkout: it reads
  ``DJANGO_SETTINGS_MODULE`` from the environment, ``--settings``, or the ``setdefault`` line of ./manage.py.

It loads Django's MigrationExecutor against the live database, computes the plan that reaches every leaf node,
and judges every operation of every unapplied migration with the project state just before it: can the code that
is serving now (the old code) keep working once this operation has run? The database is only read: every query
goes through a guard that refuses anything but reads, RunPython code is never called, and the SQL of a schema
operation is only *collected* (``schema_editor(collect_sql=True)``), never executed.

Markers: ``bluegreen = "contract"`` on a Migration class (or ``app.name`` in ``settings.BLUEGREEN_CONTRACT_MIGRATIONS``)
runs after the switch and the watch window; ``bluegreen = "safe"`` (or ``settings.BLUEGREEN_SAFE_MIGRATIONS``) is a
human review: the gate lets it pass and says so; ``hints={"bluegreen": "safe"}`` on a RunPython/RunSQL marks
that one operation safe.

stdout carries one JSON object (``"format": "bluegreen-migration-plan/1"``); anything the project prints while it
loads goes to stderr. Exit status 0 with ``"ok": true``, 2 with ``"ok": false`` and ``"error"``.
"""

# The probe runs under the app's own Python and Django, whatever their versions: it keeps to old, plain
# %-formatting and avoids newer syntax on purpose.
# ruff: noqa: UP031

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import traceback

FORMAT = "bluegreen-migration-plan/1"
MARKER = "bluegreen"
SQL_SHOWN = 3  # statements of an unsafe operation quoted in the report
SQL_CHARS = 300

# Operation classes we judge by their semantics, found by walking the operation's MRO (a third-party subclass
# that does not override database_forwards behaves like its Django base).
CORE_MODULES = ("django.db.migrations.operations", "django.contrib.postgres.operations")

_READ_ONLY = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|PRAGMA|WITH|DESCRIBE|DESC|EXPLAIN|SET|SAVEPOINT|RELEASE|ROLLBACK|BEGIN"
    r"|COMMIT|START\s+TRANSACTION)\b",
    re.I | re.S,
)


NEW_TABLE = "%s table %%s created by this release"  # a field operation on such a table is safe
NO_EFFECT = "no database effect (proxy, unmanaged or routed elsewhere)"

# Operations safe for the serving code whatever their arguments: the reason, from the operation.
ALWAYS_SAFE = {
    "AlterModelTableComment": lambda op: "changes the table comment only",
    "AlterModelOptions": lambda op: "model options only (no database effect)",
    "AlterModelManagers": lambda op: "model managers only (no database effect)",
    "AlterIndexTogether": lambda op: "adds or drops non-unique indexes (index_together)",
    "AddIndex": lambda op: "adds index %s" % getattr(op.index, "name", ""),
    "RemoveIndex": lambda op: "drops an index (queries only get slower)",
    "RenameIndex": lambda op: "renames an index",
    "AlterConstraint": lambda op: "changes constraint attributes without database effect",
    "RemoveConstraint": lambda op: "drops constraint %s (the serving code never relied on it to write)" % op.name,
    "ValidateConstraint": lambda op: "validates existing rows against a constraint that already applies to writes",
    "CreateExtension": lambda op: "installs database extension %s" % op.name,
    "CreateCollation": lambda op: "creates collation %s" % op.name,
    "RemoveCollation": lambda op: "drops collation %s (fails if a column still uses it)" % op.name,
}
# PostgreSQL's concurrent forms have the effect of the plain ones
ALWAYS_SAFE["AddIndexConcurrently"] = ALWAYS_SAFE["AddIndex"]
ALWAYS_SAFE["RemoveIndexConcurrently"] = ALWAYS_SAFE["RemoveIndex"]


class Settled(Exception):
    """An operation's verdict is clear before its own rules (no such model here, a table this release creates)."""

    def __init__(self, verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


class WriteRefused(Exception):
    """The probe (or code it called) tried to change the live database."""


def read_only_guard(execute, sql, params, many, context):
    """A connection.execute_wrapper that lets reads (and session/transaction statements) through, nothing else."""
    text = sql if isinstance(sql, str) else str(sql)
    if not _READ_ONLY.match(text):
        raise WriteRefused("the migration probe refused to write to the database: %s" % text[:200])
    return execute(sql, params, many, context)


# --------------------------------------------------------------------------------------------------------
# column types: what counts as widening


_INT_RANK = {"tinyint": 0, "smallint": 1, "smallserial": 1, "mediumint": 2, "integer": 3, "int": 3, "serial": 3,
             "int4": 3, "bigint": 4, "bigserial": 4, "int8": 4, "int2": 1}  # fmt: skip
_TEXT_RANK = {"tinytext": 1, "text": 3, "mediumtext": 4, "longtext": 5, "clob": 5, "nclob": 5}
_CHARS = ("varchar", "char", "character varying", "character", "nvarchar", "nchar", "varchar2", "nvarchar2")
_BLOB_RANK = {"tinyblob": 1, "blob": 3, "mediumblob": 4, "longblob": 5, "bytea": 5}
_FLOAT_RANK = {"real": 1, "float": 1, "double precision": 2, "double": 2}
_SUFFIXES = re.compile(
    r"\b(auto_increment|autoincrement|primary key|generated by default as identity|identity)\b", re.I
)
_TYPE = re.compile(r"^([a-z][a-z0-9_ ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*(unsigned)?$")


def parse_type(db_type):
    """('varchar', 50, None, unsigned=False) from 'varchar(50)'; None when it does not look like a plain type."""
    text = _SUFFIXES.sub("", str(db_type).lower()).strip()
    text = re.sub(r"\s+", " ", text)
    match = _TYPE.match(text)
    if not match:
        return None
    base, first, second, unsigned = match.groups()
    return (base.strip(), int(first) if first else None, int(second) if second else None, bool(unsigned))


def widening(old_type, new_type):
    """(True, why) when every value of a column of old_type fits a column of new_type unchanged."""
    old, new = parse_type(old_type), parse_type(new_type)
    if old is None or new is None:
        return False, "cannot compare column types %s and %s" % (old_type, new_type)
    (ob, on, os_, ou), (nb, nn, ns, nu) = old, new
    if ob in _INT_RANK and nb in _INT_RANK:
        if ou and not nu and _INT_RANK[nb] > _INT_RANK[ob]:
            return True, "widens %s to %s" % (old_type, new_type)
        if ou == nu and _INT_RANK[nb] >= _INT_RANK[ob]:
            return True, "widens %s to %s" % (old_type, new_type)
        return False, "narrows %s to %s" % (old_type, new_type)
    old_chars = ob in _CHARS or ob in _TEXT_RANK
    new_chars = nb in _CHARS or nb in _TEXT_RANK
    if old_chars and new_chars:
        old_unlimited = ob in _TEXT_RANK or (ob in _CHARS and on is None and ob.startswith("varchar"))
        new_unlimited = nb in _TEXT_RANK or (nb in _CHARS and nn is None and nb.startswith("varchar"))
        if new_unlimited and (not old_unlimited or _TEXT_RANK.get(nb, 5) >= _TEXT_RANK.get(ob, 0)):
            return True, "widens %s to %s" % (old_type, new_type)
        if not old_unlimited and not new_unlimited and on is not None and nn is not None and nn >= on:
            return True, "widens %s to %s" % (old_type, new_type)
        return False, "narrows %s to %s" % (old_type, new_type)
    if ob in ("numeric", "decimal") and nb in ("numeric", "decimal"):
        if on is not None and nn is not None and (ns or 0) >= (os_ or 0) and nn - (ns or 0) >= on - (os_ or 0):
            return True, "widens %s to %s" % (old_type, new_type)
        return False, "narrows %s to %s (fewer integer or decimal digits)" % (old_type, new_type)
    if ob in _FLOAT_RANK and nb in _FLOAT_RANK:
        if _FLOAT_RANK[nb] >= _FLOAT_RANK[ob]:
            return True, "widens %s to %s" % (old_type, new_type)
        return False, "narrows %s to %s" % (old_type, new_type)
    old_bin = ob in _BLOB_RANK or ob in ("varbinary", "binary")
    new_bin = nb in _BLOB_RANK or nb in ("varbinary", "binary")
    if old_bin and new_bin:
        if nb in _BLOB_RANK and _BLOB_RANK[nb] >= _BLOB_RANK.get(ob, 0):
            return True, "widens %s to %s" % (old_type, new_type)
        if ob in ("varbinary", "binary") and nb == "varbinary" and on and nn and nn >= on:
            return True, "widens %s to %s" % (old_type, new_type)
        return False, "narrows %s to %s" % (old_type, new_type)
    if (ob, on, os_, ou) == (nb, nn, ns, nu):
        return True, "same column type"
    return False, "changes the column type from %s to %s" % (old_type, new_type)


# --------------------------------------------------------------------------------------------------------
# judging one operation


class Verdict:
    """What one operation does to the serving code."""

    def __init__(self, safe, reason, kind="", children=None):
        self.safe, self.reason, self.kind, self.children = safe, reason, kind, children or []


def safe(reason):
    return Verdict(True, reason)


def unsafe(kind, reason):
    return Verdict(False, reason, kind)


def core_class(operation):
    """The Django operation class whose semantics this operation has (None: unknown effect)."""
    cls = type(operation)
    for base in cls.__mro__:
        if base.__module__.startswith(CORE_MODULES):
            if base is cls or getattr(cls, "database_forwards", None) is getattr(base, "database_forwards", None):
                return base
            return None
    return None


class Judge:
    """Classifies operations against one connection, remembering tables and columns this plan creates."""

    def __init__(self, connection):
        from django.db.models.fields import NOT_PROVIDED

        self.connection = connection
        self.not_provided = NOT_PROVIDED
        self.new_tables = set()  # tables created earlier in this plan: the serving code does not use them
        self.new_columns = set()  # (table, column) added earlier in this plan
        self.serving_state = None  # the project state the serving code was written for (before the plan)

    def reset(self, serving_state=None):
        self.new_tables, self.new_columns = set(), set()
        self.serving_state = serving_state

    def already_unique(self, app_label, model_name, fields):
        """How the serving code's schema already makes ``fields`` unique (a subset of them is), or ''."""
        model_state = self.serving_state.models.get((app_label, model_name)) if self.serving_state else None
        if model_state is None or not fields:
            return ""
        from django.db.models.options import normalize_together

        items = model_state.fields.items() if hasattr(model_state.fields, "items") else model_state.fields
        sets = [({name}, "%s is unique" % name) for name, f in items if f.unique or f.primary_key]
        for together in normalize_together(model_state.options.get("unique_together") or ()):
            sets.append((set(together), "unique_together %s" % ", ".join(together)))
        for constraint in model_state.options.get("constraints") or ():
            if type(constraint).__name__ != "UniqueConstraint" or getattr(constraint, "condition", None):
                continue
            if getattr(constraint, "expressions", None) or not getattr(constraint, "fields", None):
                continue
            sets.append((set(constraint.fields), "unique constraint %s" % constraint.name))
        for names, how in sets:
            if names <= set(fields):
                return how
        return ""

    # ---------------------------------------------------------------- helpers

    def model(self, state, app_label, name):
        try:
            return state.apps.get_model(app_label, name)
        except LookupError:
            return None

    def allowed(self, operation, model):
        """False when the operation has no effect on this database (proxy, unmanaged, swapped, router)."""
        if model is None:
            return True
        try:
            return bool(operation.allow_migrate_model(self.connection.alias, model))
        except Exception:  # noqa: BLE001 (an odd router: assume it runs)
            return True

    def has_db_default(self, field):
        return getattr(field, "db_default", self.not_provided) is not self.not_provided

    def db_params(self, field):
        try:
            return field.db_parameters(connection=self.connection)
        except Exception:  # noqa: BLE001
            return {"type": None, "check": None}

    def through_tables(self, model):
        tables = set()
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            if through is not None and not isinstance(through, str) and through._meta.auto_created:
                tables.add(through._meta.db_table)
        return tables

    def collect_sql(self, operation, app_label, from_state, to_state):
        """The SQL the operation would run here (collected, never executed); None when it cannot be asked."""
        try:
            with self.connection.schema_editor(collect_sql=True, atomic=False) as editor:
                operation.database_forwards(app_label, editor, from_state, to_state)
            return [str(sql) for sql in editor.collected_sql]
        except Exception:  # noqa: BLE001 (introspection of a table that does not exist yet, a backend quirk)
            return None

    # ---------------------------------------------------------------- dispatch

    def judge(self, operation, app_label, from_state, to_state):
        """A Verdict for ``operation`` of app ``app_label`` going from ``from_state`` to ``to_state``."""
        base = core_class(operation)
        name = base.__name__ if base is not None else ""
        if name in ALWAYS_SAFE:
            return safe(ALWAYS_SAFE[name](operation))
        method = getattr(self, "op_" + name, None) if name else None
        if method is None:
            return self.unknown(operation, app_label, from_state, to_state, base)
        try:
            verdict = method(operation, app_label, from_state, to_state)
        except Settled as settled:
            verdict = settled.verdict
        if (
            not verdict.safe
            and verdict.kind not in ("run_python", "run_sql", "unknown")
            and name != "SeparateDatabaseAndState"
        ):
            sql = self.collect_sql(operation, app_label, from_state, to_state)
            if sql is not None and not any(s.strip() for s in sql):
                return safe("emits no SQL on %s (%s)" % (self.connection.vendor, verdict.reason))
        return verdict

    def unknown(self, operation, app_label, from_state, to_state, base):
        cls = type(operation)
        label = "%s.%s" % (cls.__module__, cls.__qualname__)
        sql = self.collect_sql(operation, app_label, from_state, to_state)
        if sql is not None and not any(s.strip() for s in sql):
            return safe("third-party operation %s emits no SQL on %s" % (label, self.connection.vendor))
        statements = _sql_statements(sql or [])
        if statements and all(_known_safe_sql(s) for s in statements):
            return safe("third-party operation %s only runs %s" % (label, _quote(statements)))
        if sql:
            return unsafe("unknown", "unknown effect: third-party operation %s runs %s" % (label, _quote(sql)))
        return unsafe("unknown", "unknown effect: third-party operation %s (its SQL cannot be inspected)" % label)

    # ---------------------------------------------------------------- models

    def _model_change(self, op, app_label, states, names, on_new_table=""):
        """(models, table) of an operation, or Settled when its verdict is clear before its own rules.

        ``states`` and ``names`` give the model as it is before and/or after the operation; the table is
        the last one's. ``on_new_table`` words the safe verdict for a table this release creates.
        """
        models = [self.model(state, app_label, name) for state, name in zip(states, names)]
        if any(model is None for model in models) or not self.allowed(op, models[-1]):
            raise Settled(safe(NO_EFFECT))
        table = models[-1]._meta.db_table
        if on_new_table and table in self.new_tables:
            raise Settled(safe(NEW_TABLE % on_new_table % table))
        return models, table

    def op_CreateModel(self, op, app_label, from_state, to_state):
        model = self.model(to_state, app_label, op.name_lower)
        if model is None or not self.allowed(op, model):
            return safe(NO_EFFECT)
        self.new_tables.add(model._meta.db_table)
        self.new_tables.update(self.through_tables(model))
        return safe("creates table %s, which the serving code does not use" % model._meta.db_table)

    def op_DeleteModel(self, op, app_label, from_state, to_state):
        _models, table = self._model_change(op, app_label, [from_state], [op.name_lower], "drops")
        return unsafe("delete_model", "drops table %s, which the serving code still reads and writes" % table)

    def _rename_table(self, op, app_label, from_state, to_state, names, unchanged):
        """RenameModel and AlterModelTable: the table (and its automatic join tables) may get a new name."""
        (old, new), new_t = self._model_change(op, app_label, [from_state, to_state], names)
        old_t = old._meta.db_table
        if old_t in self.new_tables:
            self.new_tables.add(new_t)
            self.new_tables.update(self.through_tables(new))
            return safe("renames table %s created by this release" % old_t)
        if old_t == new_t and self.through_tables(old) == self.through_tables(new):
            return safe(unchanged % old_t)
        return unsafe("rename_model", "renames table %s to %s, which the serving code still uses by its old name"
                      % (old_t, new_t))  # fmt: skip

    def op_RenameModel(self, op, app_label, from_state, to_state):
        names = [op.old_name_lower, op.new_name_lower]
        unchanged = "renames the model only: table %s keeps its name (db_table)"
        return self._rename_table(op, app_label, from_state, to_state, names, unchanged)

    def op_AlterModelTable(self, op, app_label, from_state, to_state):
        names = [op.name_lower, op.name_lower]
        return self._rename_table(op, app_label, from_state, to_state, names, "table name unchanged (%s)")

    def _together(self, state, app_label, name, option):
        model_state = state.models.get((app_label, name))
        value = model_state.options.get(option) if model_state is not None else None
        from django.db.models.options import normalize_together

        return {tuple(item) for item in normalize_together(value or ())}

    def op_AlterUniqueTogether(self, op, app_label, from_state, to_state):
        _models, table = self._model_change(op, app_label, [to_state], [op.name_lower], "unique_together on")
        old = self._together(from_state, app_label, op.name_lower, "unique_together")
        new = self._together(to_state, app_label, op.name_lower, "unique_together")
        added = sorted(new - old)
        if not added:
            return safe("only removes unique_together %s" % sorted(old - new) if old - new else "no change")
        covered = [self.already_unique(app_label, op.name_lower, cols) for cols in added]
        if all(covered):
            return safe("adds unique_together the serving code already respects (%s)" % "; ".join(covered))
        return unsafe("unique", "adds a unique constraint on %s (%s): the serving code may still insert duplicates"
                      % (table, "; ".join(", ".join(cols) for cols in added)))  # fmt: skip

    def op_AlterOrderWithRespectTo(self, op, app_label, from_state, to_state):
        _models, table = self._model_change(op, app_label, [to_state], [op.name_lower], "order_with_respect_to on")
        model_state = from_state.models.get((app_label, op.name_lower))
        before = model_state.options.get("order_with_respect_to") if model_state is not None else None
        after = op.order_with_respect_to
        if bool(before) == bool(after):
            return safe("order_with_respect_to changes its field only: column _order stays")
        if after:
            return unsafe("not_null_column", "adds NOT NULL column %s._order without a database default: INSERTs of "
                          "the serving code fail" % table)  # fmt: skip
        return unsafe("remove_field", "drops column %s._order, which the serving code still writes" % table)

    # ---------------------------------------------------------------- fields

    def _field(self, model, name):
        try:
            return model._meta.get_field(name)
        except Exception:  # noqa: BLE001
            return None

    def _field_change(self, op, app_label, states, names, on_new_table, m2m_kind=""):
        """(models, fields, table) of a field operation, or Settled when its verdict is clear before its own rules.

        ``states`` and ``names`` give the field as it is before and/or after: one (AddField: after,
        RemoveField: before) or two (RenameField, AlterField: before, after).
        """
        models, table = self._model_change(op, app_label, states, [op.model_name_lower] * len(states), on_new_table)
        fields = [self._field(model, name) for model, name in zip(models, names)]
        if any(field is None for field in fields):
            raise Settled(safe("no column"))
        if m2m_kind and any(field.many_to_many for field in fields):
            raise Settled(self._m2m_change(*fields, m2m_kind))
        return models, fields, table

    @staticmethod
    def _auto_through(field):
        """The join model Django made for a many-to-many field (None for an explicit ``through``)."""
        through = field.remote_field.through
        if through is not None and not isinstance(through, str) and through._meta.auto_created:
            return through
        return None

    def op_AddField(self, op, app_label, from_state, to_state):
        _models, (field,), table = self._field_change(op, app_label, [to_state], [op.name], "adds a column to")
        if field.many_to_many:
            through = self._auto_through(field)
            if through is not None:
                self.new_tables.add(through._meta.db_table)
                return safe("creates join table %s, which the serving code does not use" % through._meta.db_table)
            return safe("many-to-many through an explicit model: no database effect")
        params = self.db_params(field)
        if not getattr(field, "concrete", True) or not field.column or params.get("type") is None:
            return safe("adds no column")
        column = "%s.%s" % (table, field.column)
        self.new_columns.add((table, field.column))
        python_default = field.has_default() or getattr(op, "field", field).has_default()
        return self._new_column(field, column, "adds", python_default)

    def _new_column(self, field, column, verb, python_default=False):
        """A column the serving code does not know: its INSERTs omit it, so it must accept that."""
        if getattr(field, "generated", False):
            return safe("%s generated column %s, computed by the database" % (verb, column))
        if field.primary_key:
            return unsafe("primary_key", "%s primary key column %s" % (verb, column))
        db_default = self.has_db_default(field)
        if not field.null and not db_default:
            extra = " (Django fills the existing rows with %s, then drops the database default)" % (
                "its Python default=" if python_default or field.has_default() else "an implicit default"
            )
            return unsafe("not_null_column", "%s NOT NULL column %s without a database default: INSERTs of the "
                          "serving code omit it and fail%s" % (verb, column, extra))  # fmt: skip
        if field.unique and db_default:
            return unsafe("unique", "%s unique column %s with a database default: every INSERT of the serving code "
                          "gets the same value, the second one fails" % (verb, column))  # fmt: skip
        if db_default and not field.null:
            return safe("%s NOT NULL column %s with a database default (db_default)" % (verb, column))
        if field.unique:
            return safe("%s nullable unique column %s: the serving code writes NULL, which never collides"
                        % (verb, column))  # fmt: skip
        return safe("%s nullable column %s" % (verb, column))

    def op_RemoveField(self, op, app_label, from_state, to_state):
        (model,), (field,), table = self._field_change(op, app_label, [from_state], [op.name], "drops a column of")
        if field.many_to_many:
            through = self._auto_through(field)
            if through is not None:
                if through._meta.db_table in self.new_tables:
                    return safe("drops join table %s created by this release" % through._meta.db_table)
                return unsafe("remove_field", "drops join table %s of %s.%s, which the serving code still uses"
                              % (through._meta.db_table, model.__name__, field.name))  # fmt: skip
            return safe("many-to-many through an explicit model: no database effect")
        if not getattr(field, "concrete", True) or not field.column or self.db_params(field).get("type") is None:
            return safe("drops no column")
        if (table, field.column) in self.new_columns:
            self.new_columns.discard((table, field.column))
            return safe("drops column %s.%s added by this release" % (table, field.column))
        return unsafe("remove_field", "drops column %s.%s, which the serving code still reads and writes"
                      % (table, field.column))  # fmt: skip

    def op_RenameField(self, op, app_label, from_state, to_state):
        states, names = [from_state, to_state], [op.old_name, op.new_name]
        _models, (old, new), table = self._field_change(
            op, app_label, states, names, "renames a column of", "rename_field"
        )
        if old.column == new.column:
            return safe("renames the field only: column %s.%s keeps its name (db_column)" % (table, old.column))
        if self._carry_new_column(table, old, new):
            return safe("renames column %s.%s added by this release" % (table, old.column))
        return unsafe("rename_field", "renames column %s.%s to %s, which the serving code still uses by its old name"
                      % (table, old.column, new.column))  # fmt: skip

    def _carry_new_column(self, table, old, new):
        """Whether ``old``'s column was added by this release; if so, it is known as ``new``'s column from now on."""
        if (table, old.column) not in self.new_columns:
            return False
        self.new_columns.discard((table, old.column))
        self.new_columns.add((table, new.column))
        return True

    def _m2m_change(self, old, new, kind):
        def table(field):
            through = field.remote_field.through
            if through is None or isinstance(through, str):
                return None
            return through._meta.db_table if through._meta.auto_created else None

        if not (old.many_to_many and new.many_to_many):
            return unsafe("retype", "turns %s between a many-to-many and a column" % new.name)
        old_t, new_t = table(old), table(new)
        if old_t == new_t:
            return safe("many-to-many keeps its join table")
        if old_t is None or new_t is None:
            return unsafe(kind, "moves many-to-many %s between an automatic join table and a through model"
                          % new.name)  # fmt: skip
        if old_t in self.new_tables:
            self.new_tables.add(new_t)
            return safe("renames join table %s created by this release" % old_t)
        return unsafe(kind, "renames join table %s to %s, which the serving code still uses" % (old_t, new_t))

    def op_AlterField(self, op, app_label, from_state, to_state):
        states, names = [from_state, to_state], [op.name, op.name]
        _models, (old, new), table = self._field_change(
            op, app_label, states, names, "alters a column of", "rename_model"
        )
        if not self._should_alter(old, new) or (old.column == new.column and not _changed_kwargs(old, new, True)):
            changed = _changed_kwargs(old, new)
            return safe("no database change%s" % (" (only %s)" % ", ".join(changed) if changed else ""))
        if self._carry_new_column(table, old, new):
            return self._new_column(new, "%s.%s" % (table, new.column), "alters")
        column = "%s.%s" % (table, old.column)
        if old.column != new.column:
            return unsafe("rename_field", "renames column %s to %s (db_column), which the serving code still uses"
                          % (column, new.column))  # fmt: skip
        if old.primary_key != new.primary_key:
            return unsafe("primary_key", "changes the primary key of %s (%s)" % (table, column))
        notes = []
        old_p, new_p = self.db_params(old), self.db_params(new)
        old_type, new_type = old_p.get("type"), new_p.get("type")
        if old_type and new_type and _norm(old_type) != _norm(new_type):
            ok, why = widening(old_type, new_type)
            if not ok:
                return unsafe("retype", "%s of %s: the serving code may write values the new type rejects or alters"
                              % (why, column))  # fmt: skip
            notes.append(why)
        elif bool(old_type) != bool(new_type):
            return unsafe("retype", "turns %s between a column and no column" % column)
        narrowed = _narrowed_field(old, new, old_type, new_type)
        if narrowed:
            return unsafe("retype", "%s of %s: the serving code may write values the new column rejects or alters"
                          % (narrowed, column))  # fmt: skip
        old_check, new_check = old_p.get("check"), new_p.get("check")
        if new_check and _norm(new_check) != _norm(old_check or ""):
            return unsafe("check", "adds CHECK (%s) on %s: the serving code may write rows it rejects"
                          % (new_check, column))  # fmt: skip
        if old.null and not new.null:
            hint = ""
            default = old.get_default() if old.has_default() and not callable(old.default) else None
            if default is not None:
                hint = " (its model writes default=%r on INSERT: only code that stores None breaks)" % (default,)
            return unsafe("make_not_null", "makes %s NOT NULL: the serving code may still write NULL into it%s"
                          % (column, hint))  # fmt: skip
        if new.unique and not old.unique and not new.primary_key:
            covered = self.already_unique(app_label, op.model_name_lower, (new.name,))
            if covered:
                notes.append("adds a unique constraint the serving code already respects (%s)" % covered)
            else:
                return unsafe("unique", "adds a unique constraint on %s: the serving code may still insert "
                              "duplicates" % column)  # fmt: skip
        old_remote = getattr(old.remote_field, "model", None) if old.remote_field else None
        new_remote = getattr(new.remote_field, "model", None) if new.remote_field else None
        if old_remote is not None and new_remote is not None:
            if old_remote._meta.db_table != new_remote._meta.db_table:
                return unsafe(
                    "retarget_fk",
                    "points foreign key %s from %s to %s: the serving code writes ids of "
                    "the old target" % (column, old_remote._meta.db_table, new_remote._meta.db_table),
                )
            if not getattr(old, "db_constraint", True) and getattr(new, "db_constraint", True):
                return unsafe("check", "adds a foreign key constraint on %s: the serving code's writes were not "
                              "checked against it" % column)  # fmt: skip
        if self.has_db_default(old) and not self.has_db_default(new) and not new.null:
            return unsafe("db_default_removed", "drops the database default of NOT NULL column %s, which the "
                          "serving code's INSERTs rely on" % column)  # fmt: skip
        if old.null != new.null:
            notes.append("makes it nullable")
        if old.unique and not new.unique:
            notes.append("drops its unique constraint")
        if bool(getattr(old, "db_index", False)) != bool(getattr(new, "db_index", False)):
            notes.append("adds or drops an index")
        if self.has_db_default(new) and not self.has_db_default(old):
            notes.append("adds a database default")
        if not notes:
            notes = ["changes %s" % (", ".join(_changed_kwargs(old, new, True)) or "column attributes")]
        return safe("alters %s compatibly: %s" % (column, ", ".join(notes)))

    def _should_alter(self, old, new):
        try:
            editor = self.connection.schema_editor()
            return bool(editor._field_should_be_altered(old, new))
        except Exception:  # noqa: BLE001 (older Django: compare the deconstructed fields)
            return old.column != new.column or bool(_changed_kwargs(old, new, db_only=True))

    # ---------------------------------------------------------------- indexes, constraints

    def op_AddConstraint(self, op, app_label, from_state, to_state):
        _models, table = self._model_change(op, app_label, [to_state], [op.model_name_lower], "adds a constraint to")
        constraint = op.constraint
        kind = type(constraint).__name__
        if kind == "UniqueConstraint":
            fields = tuple(getattr(constraint, "fields", ()) or ())
            cols = ", ".join(fields) or "expressions"
            # a condition only narrows the rows it covers; NULLS NOT DISTINCT is stricter than the old constraint
            plain = (
                not getattr(constraint, "expressions", None)
                and getattr(constraint, "nulls_distinct", None) is not False
            )
            covered = self.already_unique(app_label, op.model_name_lower, fields) if plain else ""
            if covered:
                return safe("adds unique constraint %s on %s (%s), which the serving code already respects (%s)"
                            % (constraint.name, table, cols, covered))  # fmt: skip
            return unsafe("unique", "adds unique constraint %s on %s (%s): the serving code may still insert "
                          "duplicates" % (constraint.name, table, cols))  # fmt: skip
        if kind == "CheckConstraint":
            return unsafe("check", "adds check constraint %s on %s: the serving code may write rows it rejects"
                          % (constraint.name, table))  # fmt: skip
        if kind == "ExclusionConstraint":
            return unsafe("unique", "adds exclusion constraint %s on %s: the serving code may write rows it rejects"
                          % (constraint.name, table))  # fmt: skip
        return unsafe("check", "adds %s %s on %s: the serving code may write rows it rejects"
                      % (kind, getattr(constraint, "name", ""), table))  # fmt: skip

    def op_AddConstraintNotValid(self, op, app_label, from_state, to_state):
        return self.op_AddConstraint(op, app_label, from_state, to_state)

    # ---------------------------------------------------------------- special

    def op_SeparateDatabaseAndState(self, op, app_label, from_state, to_state):
        if not op.database_operations:
            return safe("state only: no database operations")
        children = []
        sub_from = from_state.clone()
        for sub in op.database_operations:
            sub_to = sub_from.clone()
            sub.state_forwards(app_label, sub_to)
            verdict = self.judge(sub, app_label, sub_from, sub_to)
            verdict = apply_operation_marker(sub, verdict)
            children.append((sub, verdict))
            sub_from = sub_to
        bad = [(sub, v) for sub, v in children if not v.safe]
        result = Verdict(not bad, "", bad[0][1].kind if bad else "", children)
        if bad:
            result.reason = "database operations: " + "; ".join("%s: %s" % (_describe(s), v.reason) for s, v in bad)
        else:
            result.reason = "database operations all safe: " + "; ".join(
                "%s: %s" % (_describe(s), v.reason) for s, v in children
            )
        return result

    def op_RunPython(self, op, app_label, from_state, to_state):
        from django.db import router
        from django.db.migrations.operations.special import RunPython

        if not router.allow_migrate(self.connection.alias, app_label, **(op.hints or {})):
            return safe("not run on database %s (router)" % self.connection.alias)
        code = op.code
        if code is RunPython.noop or getattr(code, "__func__", None) is getattr(RunPython.noop, "__func__", 0):
            return safe("RunPython.noop")
        label = "%s.%s" % (getattr(code, "__module__", "?"), getattr(code, "__qualname__", repr(code)))
        if str(getattr(code, "__module__", "")).startswith("django.contrib."):
            return safe("Django's own data migration %s (keeps rows the serving code reads valid)" % label)
        return unsafe("run_python", "runs Python code %s whose effect on the serving code cannot be known" % label)

    def op_RunSQL(self, op, app_label, from_state, to_state):
        from django.db import router

        if not router.allow_migrate(self.connection.alias, app_label, **(op.hints or {})):
            return safe("not run on database %s (router)" % self.connection.alias)
        statements = _sql_statements(op.sql)
        if not statements:
            return safe("empty SQL")
        unknown = [s for s in statements if not _known_safe_sql(s)]
        if not unknown:
            return safe("SQL of known additive effect (%s)" % _quote(statements))
        return unsafe("run_sql", "runs SQL whose effect on the serving code cannot be known: %s" % _quote(unknown))


_NON_DB_ATTRS = ("blank", "choices", "db_column", "editable", "error_messages", "help_text", "limit_choices_to",
                 "on_delete", "related_name", "related_query_name", "validators", "verbose_name")  # fmt: skip


def _narrowed_field(old, new, old_type, new_type):
    """Narrowing the backend's type names may hide (SQLite's decimal has no digits): '' when none."""
    old_len, new_len = getattr(old, "max_length", None), getattr(new, "max_length", None)
    if "char" in _norm(old_type) and "char" in _norm(new_type) and old_len and new_len and new_len < old_len:
        return "narrows max_length from %s to %s" % (old_len, new_len)
    digits = [getattr(f, a, None) for f in (old, new) for a in ("max_digits", "decimal_places")]
    if None not in digits:
        od, op_, nd, np_ = digits
        if np_ < op_ or nd - np_ < od - op_:
            return "narrows decimal(%s, %s) to decimal(%s, %s)" % (od, op_, nd, np_)
    return ""


def _norm(text):
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def _changed_kwargs(old, new, db_only=False):
    """Names of the deconstructed field arguments that differ (db_only: leave Python-side ones out)."""
    try:
        _, old_path, _, old_kw = old.deconstruct()
        _, new_path, _, new_kw = new.deconstruct()
    except Exception:  # noqa: BLE001
        return ["field"]
    names = sorted(k for k in set(old_kw) | set(new_kw) if old_kw.get(k, None) != new_kw.get(k, None))
    if old_path != new_path:
        names.insert(0, "class")
    if db_only:
        skip = set(getattr(new, "non_db_attrs", ())) or set(_NON_DB_ATTRS)
        names = [n for n in names if n not in skip and n != "default"]
    return names


_SAFE_SQL = re.compile(
    r"^(CREATE\s+(INDEX|EXTENSION|TABLE|SEQUENCE)|DROP\s+INDEX|COMMENT\s+ON|ANALYZE|VACUUM|SELECT\s+1\b|"
    r"CREATE\s+INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY)",
    re.I,
)


def _sql_statements(sql):
    """The statements of a RunSQL's sql (a string, a list of strings, or of (sql, params) pairs)."""
    items = [sql] if isinstance(sql, str) else list(sql or [])
    out = []
    for item in items:
        text = item[0] if isinstance(item, (list, tuple)) else item
        text = re.sub(r"--[^\n]*", "", str(text))
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        out.extend(part.strip() for part in text.split(";") if part.strip())
    return out


def _known_safe_sql(statement):
    return bool(_SAFE_SQL.match(statement)) and not re.match(r"^CREATE\s+UNIQUE", statement, re.I)


def _quote(statements):
    shown = ["%s" % re.sub(r"\s+", " ", s).strip()[:SQL_CHARS] for s in statements[:SQL_SHOWN]]
    more = " (+%d more)" % (len(statements) - SQL_SHOWN) if len(statements) > SQL_SHOWN else ""
    return " | ".join(shown) + more


def _describe(operation):
    try:
        return str(operation.describe())
    except Exception:  # noqa: BLE001
        return type(operation).__name__


def apply_operation_marker(operation, verdict):
    """hints={"bluegreen": "safe"} on a RunPython/RunSQL: reviewed by a human."""
    hints = getattr(operation, "hints", None) or {}
    if not verdict.safe and isinstance(hints, dict) and hints.get(MARKER) == "safe":
        marked = Verdict(True, "marked hints={'bluegreen': 'safe'} (would otherwise be unsafe: %s)" % verdict.reason)
        marked.marked, marked.children = "operation", verdict.children
        return marked
    return verdict


# --------------------------------------------------------------------------------------------------------
# the plan


def migration_marker(migration, settings):
    """'contract', 'safe' or None, from the Migration class or the settings lists."""
    key = "%s.%s" % (migration.app_label, migration.name)
    if key in set(getattr(settings, "BLUEGREEN_CONTRACT_MIGRATIONS", ()) or ()):
        return "contract"
    if key in set(getattr(settings, "BLUEGREEN_SAFE_MIGRATIONS", ()) or ()):
        return "safe"
    return getattr(migration, MARKER, None)


def operation_record(migration, index, operation, verdict, marker, path=()):
    record = {
        "app_label": migration.app_label,
        "migration": migration.name,
        "index": index,
        "path": list(path),
        "operation": type(operation).__name__,
        "operation_path": "%s.%s" % (type(operation).__module__, type(operation).__qualname__),
        "description": _describe(operation),
        "verdict": "safe" if verdict.safe else "unsafe",
        "reason": verdict.reason,
        "kind": verdict.kind,
        "contract": marker == "contract",
        "marked": getattr(verdict, "marked", None),
        "children": [],
    }
    for i, (sub, sub_verdict) in enumerate(verdict.children):
        child = operation_record(migration, index, sub, sub_verdict, marker, (*path, i))
        record["children"].append(child)
    return record


def judge_migration(judge, migration, state, settings):
    """Records of every operation of ``migration``, advancing ``state`` through it."""
    marker = migration_marker(migration, settings)
    records = []
    for index, operation in enumerate(migration.operations):
        from_state = state.clone()
        operation.state_forwards(migration.app_label, state)
        try:
            verdict = judge.judge(operation, migration.app_label, from_state, state)
        except Exception as exc:  # noqa: BLE001 (one odd operation must not hide the others)
            verdict = unsafe("unknown", "the gate could not judge this operation (%s: %s)" % (type(exc).__name__, exc))
        verdict = apply_operation_marker(operation, verdict)
        if marker == "contract":
            natural = "safe" if verdict.safe else "unsafe: " + verdict.reason
            verdict = Verdict(True, "contract migration: runs after the switch and the watch window (before it "
                              "this would be %s)" % natural, verdict.kind, verdict.children)  # fmt: skip
            record = operation_record(migration, index, operation, verdict, marker)
            record["verdict"] = "contract"
        elif marker == "safe" and not verdict.safe:
            reviewed = Verdict(True, "migration marked bluegreen = 'safe' (reviewed; would otherwise be unsafe: %s)"
                               % verdict.reason, verdict.kind, verdict.children)  # fmt: skip
            reviewed.marked = "migration"
            record = operation_record(migration, index, operation, reviewed, marker)
        else:
            record = operation_record(migration, index, operation, verdict, marker)
        records.append(record)
    return marker, records


def pre_switch(graph, plan_keys, contract_keys):
    """Which unapplied migrations may run before the switch, as per-app migrate targets, and which wait."""
    unapplied = set(plan_keys)
    ancestors = {}
    for key in plan_keys:
        ancestors[key] = [a for a in graph.forwards_plan(key) if a in unapplied and a != key]
    deferred = []
    deferred_keys = set()
    for key in plan_keys:
        if key in contract_keys:
            deferred.append({"app_label": key[0], "name": key[1], "contract": True, "because": None})
            deferred_keys.add(key)
            continue
        hit = [a for a in ancestors[key] if a in contract_keys]
        if hit:
            deferred.append({"app_label": key[0], "name": key[1], "contract": False,
                             "because": "%s.%s" % hit[0]})  # fmt: skip
            deferred_keys.add(key)
    allowed = [k for k in plan_keys if k not in deferred_keys]
    apps = {}
    for app in sorted({k[0] for k in allowed}):
        mine = [k for k in allowed if k[0] == app]
        below = set()
        for k in mine:
            below.update(a for a in ancestors[k] if a[0] == app)
        maximal = [k for k in mine if k not in below]
        apps[app] = {"targets": [k[1] for k in maximal], "expressible": len(maximal) == 1,
                     "migrations": [k[1] for k in mine]}  # fmt: skip
    targets = [{"app_label": app, "name": name} for app, info in apps.items() for name in info["targets"]]
    return {
        "all": not deferred,
        "allowed": [{"app_label": k[0], "name": k[1]} for k in allowed],
        "targets": targets,
        "apps": apps,
        "expressible": all(info["expressible"] for info in apps.values()),
    }, deferred


def build_report(database="default", history=False):
    import django
    from django.conf import settings
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[database]
    with connection.execute_wrapper(read_only_guard):
        executor = MigrationExecutor(None if history else connection)
        if not history:
            executor.connection = connection
        loader = executor.loader
        warnings = []
        if not history:
            loader.check_consistent_history(connection)
        conflicts = {app: sorted(names) for app, names in loader.detect_conflicts().items()}
        targets = loader.graph.leaf_nodes()
        plan = executor.migration_plan(targets, clean_start=history)
        backwards = [m for m, back in plan if back]
        if backwards:
            warnings.append("the plan unapplies %s" % ", ".join("%s.%s" % (m.app_label, m.name) for m in backwards))
        plan = [m for m, back in plan if not back]
        state = executor._create_project_state(with_applied_migrations=not history)
        judge = Judge(connection)
        judge.reset(state.clone())
        operations, migrations, contract_keys = [], [], set()
        for migration in plan:
            if history:
                judge.reset(state.clone())
            marker, records = judge_migration(judge, migration, state, settings)
            if marker not in (None, "contract", "safe"):
                warnings.append("%s.%s: unknown bluegreen marker %r (expected 'contract' or 'safe')"
                                % (migration.app_label, migration.name, marker))  # fmt: skip
            key = (migration.app_label, migration.name)
            if marker == "contract":
                contract_keys.add(key)
            operations.extend(records)
            migrations.append({
                "app_label": key[0],
                "name": key[1],
                "marker": marker if marker in ("contract", "safe") else None,
                "operations": len(records),
                "unsafe": sum(1 for r in records if r["verdict"] == "unsafe"),
            })  # fmt: skip
        plan_keys = [(m["app_label"], m["name"]) for m in migrations]
        switch, deferred = pre_switch(loader.graph, plan_keys, contract_keys) if not history else ({}, [])
    return {
        "format": FORMAT,
        "ok": True,
        "django": django.get_version(),
        "database": database,
        "vendor": connection.vendor,
        "mode": "history" if history else "plan",
        "conflicts": conflicts,
        "migrations": migrations,
        "operations": operations,
        "pre_switch": switch,
        "deferred": deferred,
        "warnings": warnings,
    }


def app_facts(database="default"):
    """What else the deploy asks of the app's settings, in the same interpreter (one probe per deploy): the
    database a backup dumps, the management commands it has (optional steps: compress), and whether its
    tests read collected static files (a strict manifest storage's names, compress's offline manifest)."""
    from django.conf import settings
    from django.core.management import get_commands

    storages = getattr(settings, "STORAGES", None) or {}
    backend = (storages.get("staticfiles") or {}).get("BACKEND") or getattr(settings, "STATICFILES_STORAGE", "")
    manifest = "Manifest" in str(backend)  # a strict manifest: {% static %} fails before collectstatic wrote it
    try:
        from django.contrib.staticfiles.storage import ManifestFilesMixin
        from django.utils.module_loading import import_string

        found = import_string(backend) if backend else None
        manifest = bool(found and issubclass(found, ManifestFilesMixin) and getattr(found, "manifest_strict", True))
    except Exception:  # noqa: BLE001 (a storage that does not import: judged by its name)
        pass
    return {
        "database": dict(settings.DATABASES.get(database) or {}),
        "commands": sorted(get_commands()),
        "reads_collected": bool(manifest or getattr(settings, "COMPRESS_OFFLINE", False)),
    }


def setup_django(settings_module=None):
    """Configure Django when nobody did (file mode): --settings, the environment, or ./manage.py's setdefault."""
    from django.conf import settings

    if settings.configured:
        return
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not os.environ.get("DJANGO_SETTINGS_MODULE") and os.path.exists("manage.py"):
        with open("manage.py", encoding="utf-8") as handle:
            found = re.search(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""", handle.read())
        if found:
            os.environ["DJANGO_SETTINGS_MODULE"] = found.group(1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import django

    django.setup()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="django_migration_plan", description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="default", help="the database alias (default: default)")
    parser.add_argument("--history", action="store_true",
                        help="judge every migration of the project as if each were deployed on its own")  # fmt: skip
    parser.add_argument("--settings", help="DJANGO_SETTINGS_MODULE when Django is not set up yet")
    parser.add_argument("--indent", type=int, default=None)
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    facts = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            setup_django(args.settings)
            facts = app_facts(args.database)
            report = dict(build_report(args.database, args.history), app=facts)
        code = 0
    except BaseException as exc:  # noqa: BLE001 (anything, SystemExit of a broken project included, is reported)
        report = {
            "format": FORMAT,
            "ok": False,
            "error": "%s: %s" % (type(exc).__name__, exc),
            "traceback": traceback.format_exc()[-4000:],
            "app": facts,  # the settings read: a backup or an optional step needs no plan of the migrations
        }
        code = 2
    real_stdout.write(json.dumps(report, indent=args.indent, default=str) + "\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    # run as a file: our own directory must not shadow the project's modules; the checkout (cwd) must be importable
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.exit(main())
