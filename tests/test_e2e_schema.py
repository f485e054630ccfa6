"""End to end on MariaDB, under load on a page that reads the model: schema changes never break the color
that is serving. The migration gate refuses a rename before anything migrates; the same change as expand
then contract reaches the new schema, the contract migration only after the old color left; a release
whose tests fail leaves django_migrations alone; a cancelled or killed deploy never cuts a migrate in half.
Real supervisord, gunicorn, nginx, git, MariaDB. The stack is shared by the module; tests run in order."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import time

import pytest
from conftest import QUICK, blue_live, job_id_of, push, settled, status, wait_finished, wait_step

from example import services
from example.load import Load, summarize
from example.stack import EXAMPLE_APP, Stack

WATCH = 3.0
MODELS = (
    "from django.db import models\n\n\n"
    "class Note(models.Model):\n{fields}"
    "    created = models.DateTimeField(auto_now_add=True)\n\n\n"
    "class TaskRun(models.Model):\n"
    "    token = models.CharField(max_length=64, unique=True)\n"
    "    version = models.CharField(max_length=64)\n"
    "    created = models.DateTimeField(auto_now_add=True)\n"
)
MIGRATION = (
    "from django.db import migrations, models\n\n{extra}\n"
    "class Migration(migrations.Migration):\n{marker}"
    "    dependencies = [('exampleapp', '{previous}')]\n"
    "    operations = [\n{operations}    ]\n"
)
FAILING_TEST = (
    "from django.test import SimpleTestCase\n\n\nclass Broken(SimpleTestCase):\n"
    "    def test_fails(self):\n        self.fail('release is broken')\n"
)


CHAR = "models.CharField(max_length=200, null=True)"
INT = "models.IntegerField(null=True)"


def add(name: str, field: str) -> str:
    return f"migrations.AddField(model_name='note', name='{name}', field={field})"


def models(*fields: str) -> str:
    return MODELS.format(fields="".join(f"    {f}\n" for f in fields))


def migration(previous: str, *operations: str, extra: str = "", marker: str = "") -> str:
    return MIGRATION.format(
        previous=previous,
        operations="".join(f"        {op},\n" for op in operations),
        extra=extra,
        marker=f"    bluegreen = {marker!r}\n" if marker else "",
    )


def views_reading(field: str) -> str:
    """The example's views.py with /notes reading ``field`` of every note (so a missing column is a 500)."""
    return (EXAMPLE_APP / "exampleapp" / "views.py").read_text().replace('"text": n.text', f'"text": n.{field}')


def app_tests(field: str) -> str:
    """The example's own tests, writing notes through ``field``."""
    text = (EXAMPLE_APP / "exampleapp" / "tests.py").read_text()
    return text.replace('Note.objects.create(text="Abi 2027")', f'Note.objects.create({field}="Abi 2027")')


def applied(stack: Stack) -> list[str]:
    with services.mariadb(stack.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM django_migrations WHERE app = 'exampleapp' ORDER BY id")
        return [row[0] for row in cur.fetchall()]


def columns(stack: Stack) -> list[str]:
    with services.mariadb(stack.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = "
            "'exampleapp_note' ORDER BY ordinal_position",
            (stack.database,),
        )
        return [row[0] for row in cur.fetchall()]


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    ini = {**QUICK, "health_deadline": "60", "health_timeout": "5", "build": "test gate backup migrate",
           "watch_interval": "0.3"}  # fmt: skip
    s = blue_live(make_stack, celery=False, watch=str(WATCH), ini_overrides=ini)
    with services.mariadb(s.database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO exampleapp_note (text, created) VALUES ('Abiball 2027', NOW())")
    return s


def notes_load(stack: Stack) -> Load:
    return Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=0, path="/notes")


def test_a_rename_is_refused_before_anything_migrates(stack: Stack) -> None:
    before, cols = applied(stack), columns(stack)
    commit = push(
        stack,
        {
            "exampleapp/models.py": models("body = models.CharField(max_length=200)"),
            "exampleapp/migrations/0002_rename.py": migration(
                "0001_initial", "migrations.RenameField(model_name='note', old_name='text', new_name='body')"
            ),
            "exampleapp/views.py": views_reading("body"),
            "exampleapp/tests.py": app_tests("body"),
            "VERSION": "v-rename\n",
        },
        "rename text to body",
        branch="rename",
    )
    with notes_load(stack) as load:
        time.sleep(0.5)
        out = stack.ctl("bluegreen", "deploy", "abiapp", commit)
        time.sleep(0.5)
    assert out.returncode == 1, out.stdout
    assert "migration gate: refused before anything migrated" in out.stdout
    assert "exampleapp.0002_rename, operation 1 (RenameField" in out.stdout
    assert "expand/contract" in out.stdout and "--allow-unsafe-migrations" in out.stdout
    assert "migrate ..." not in out.stdout and "backup ..." not in out.stdout
    assert applied(stack) == before and columns(stack) == cols
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]


def test_a_release_whose_tests_fail_never_touches_the_live_database(stack: Stack) -> None:
    before, cols = applied(stack), columns(stack)
    commit = push(
        stack,
        {
            "exampleapp/models.py": models("text = models.CharField(max_length=200)", f"mood = {INT}"),
            "exampleapp/migrations/0002_mood.py": migration(
                "0001_initial",
                add("mood", INT),
            ),
            "exampleapp/tests_broken.py": FAILING_TEST,
            "VERSION": "v-tests-fail\n",
        },
        "tests fail",
        branch="tests-fail",
    )
    out = stack.ctl("bluegreen", "deploy", "abiapp", commit)
    assert out.returncode == 1 and "deploy failed: test failed" in out.stdout, out.stdout
    assert applied(stack) == before and columns(stack) == cols


def test_expand_then_contract_reaches_the_new_schema_with_the_drop_after_the_old_color_left(stack: Stack) -> None:
    settled(stack)
    copy = (
        "\ndef copy(apps, schema_editor):\n"
        "    Note = apps.get_model('exampleapp', 'Note')\n"
        "    Note.objects.update(body=models.F('text'))\n\n"
    )
    expand = push(
        stack,
        {
            "exampleapp/models.py": models(
                "text = models.CharField(max_length=200, null=True)",
                f"body = {CHAR}",
            ),
            "exampleapp/migrations/0002_expand.py": migration(
                "0001_initial",
                f"migrations.AlterField(model_name='note', name='text', field={CHAR})",
                add("body", CHAR),
                "migrations.RunPython(copy, migrations.RunPython.noop, hints={'bluegreen': 'safe'})",
                extra=copy,
            ),
            "VERSION": "v-expand\n",
        },
        "expand: body beside text",
    )
    with notes_load(stack) as load:
        time.sleep(0.5)
        out = stack.ctl("bluegreen", "deploy", "abiapp", expand)
        assert out.returncode == 0, out.stdout
        assert "migration gate: 1 unapplied migration(s)" in out.stdout
        settled(stack)
        assert "body" in columns(stack) and "text" in columns(stack)
        contract = push(
            stack,
            {
                "exampleapp/models.py": models(f"body = {CHAR}"),
                "exampleapp/migrations/0003_contract.py": migration(
                    "0002_expand", "migrations.RemoveField(model_name='note', name='text')", marker="contract"
                ),
                "exampleapp/views.py": views_reading("body"),
                "exampleapp/tests.py": app_tests("body"),
                "VERSION": "v-contract\n",
            },
            "contract: drop text",
        )
        old = status(stack)["live"]
        out = stack.ctl("bluegreen", "deploy", "abiapp", contract)
        assert out.returncode == 0, out.stdout
        assert "contract" in out.stdout and "0003_contract" in out.stdout
        during = status(stack)
        assert during["contract"]["migrations"] == ["exampleapp.0003_contract"]
        assert "text" in columns(stack)  # the old color may still serve: the column it reads stays
        assert during["colors"][old]["state"] == "RUNNING"
        final = settled(stack)
        time.sleep(0.5)
    assert "text" not in columns(stack) and applied(stack)[-1] == "0003_contract"
    history = stack.rpc().bluegreen.history("abiapp", 3)
    job = next(h for h in history if h["kind"] == "contract")
    assert job["status"] == "succeeded", job
    # only once the window passed (it opens at the record step, before the workers step the command waits for)
    assert job["created"] >= during["switched_at"] + WATCH - 0.5
    assert "rollback target" in job["message"] and "not safe" in job["message"]
    assert final["previous"] == "" and final["colors"][old]["state"] == "STOPPED"
    refused = stack.ctl("bluegreen", "rollback")
    assert refused.returncode != 0 and "contract migrations of a later release were applied" in refused.stdout
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]


SLOW = "\ndef slow(apps, schema_editor):\n    import time\n    time.sleep(5)\n\n"


def test_cancel_during_a_slow_migration_waits_for_it_and_the_next_deploy_succeeds(stack: Stack) -> None:
    settled(stack)
    commit = push(
        stack,
        {
            "exampleapp/models.py": models(f"body = {CHAR}", f"mood = {INT}"),
            "exampleapp/migrations/0004_slow.py": migration(
                "0003_contract",
                "migrations.RunPython(slow, migrations.RunPython.noop, hints={'bluegreen': 'safe'})",
                add("mood", INT),
                extra=SLOW,
            ),
            "VERSION": "v-slow-migrate\n",
        },
        "slow migration",
    )
    live = status(stack)["live"]
    job_id = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", commit, "--detach"))
    wait_step(stack, job_id, "migrate")
    time.sleep(1.0)
    out = stack.ctl("bluegreen", "cancel")
    assert out.returncode == 0, out.stdout
    job = wait_finished(stack, job_id)
    assert job["status"] == "cancelled"
    log = (stack.root / "state" / "abiapp" / "jobs" / f"{job_id}.log").read_text()
    assert "cancel asked" in log and "never cut in half" in log and "migrate done in" in log
    assert applied(stack)[-1] == "0004_slow" and "mood" in columns(stack)  # it completed, whole
    assert status(stack)["live"] == live
    again = stack.ctl("bluegreen", "deploy", "abiapp", commit)
    assert again.returncode == 0, again.stdout


def test_a_killed_listener_never_cuts_a_migrate_in_half(stack: Stack) -> None:
    settled(stack)
    commit = push(
        stack,
        {
            "exampleapp/models.py": models(
                f"body = {CHAR}",
                f"mood = {INT}",
                f"place = {CHAR}",
            ),
            "exampleapp/migrations/0005_slow.py": migration(
                "0004_slow",
                "migrations.RunPython(slow, migrations.RunPython.noop, hints={'bluegreen': 'safe'})",
                add("place", CHAR),
                extra=SLOW,
            ),
            "VERSION": "v-killed-migrate\n",
        },
        "killed mid-migrate",
    )
    job_id = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", commit, "--detach"))
    wait_step(stack, job_id, "migrate")
    time.sleep(1.5)
    os.kill(stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"], signal.SIGKILL)
    job = wait_finished(stack, job_id, timeout=60)
    assert job["status"] == "interrupted" and "ran to its end" in job["message"], job
    assert applied(stack)[-1] == "0005_slow" and "place" in columns(stack)
    log = (stack.root / "state" / "abiapp" / "jobs" / f"{job_id}.log").read_text()
    assert "waiting for it to end" in log
    again = stack.ctl("bluegreen", "deploy", "abiapp", commit)
    assert again.returncode == 0, again.stdout


def test_allow_unsafe_migrations_deploys_what_the_gate_refused_and_history_says_who(stack: Stack) -> None:
    """The flag once died in the listener with a TypeError (deploy() took no allow_unsafe): it never ran a step."""
    settled(stack)
    commit = push(
        stack,
        {
            "exampleapp/models.py": models(f"body = {CHAR}", f"mood = {INT}"),
            "exampleapp/migrations/0006_drop_place.py": migration(
                "0005_slow", "migrations.RemoveField(model_name='note', name='place')"
            ),
            "VERSION": "v-unsafe\n",
        },
        "drop place, unmarked",
        branch="unsafe",
    )
    refused = stack.ctl("bluegreen", "deploy", "abiapp", commit)
    assert refused.returncode == 1 and "migration gate: refused before anything migrated" in refused.stdout
    assert "place" in columns(stack)
    out = stack.ctl("bluegreen", "deploy", "abiapp", commit, "--allow-unsafe-migrations")
    assert out.returncode == 0, out.stdout
    who = f"{getpass.getuser()}@{socket.gethostname()} via supervisorctl"
    assert f"migration gate: UNSAFE migrations allowed by {who}" in out.stdout
    assert applied(stack)[-1] == "0006_drop_place" and "place" not in columns(stack)
    now = status(stack)
    assert now["colors"][now["live"]]["version"] == commit[:7]
    history = stack.ctl("bluegreen", "history", "abiapp", "-n", "1")
    assert history.returncode == 0, history.stdout
    assert f"deploy   succeeded   ref={commit} commit={commit[:7]}" in history.stdout, history.stdout
    assert f"by {who}" in history.stdout
    assert f"UNSAFE migrations allowed by {who} (--allow-unsafe-migrations)" in history.stdout
