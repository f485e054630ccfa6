"""Tests for the bundled example Django app (example/app).

Each check runs in a fresh subprocess against a copy of the app in a tmp dir,
so Django is never configured in the pytest process itself and every
settings env var (data dir, STATIC_ROOT, color) is honoured at import time.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor_bluegreen.host import appprobe
from supervisor_bluegreen.host.migrations import gate

APP_SRC = Path(__file__).resolve().parent.parent / "example" / "app"
VERSION = "1.2.3-test"

PRELUDE = """
import json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "exampleapp.settings"
import django
django.setup()
from django.core.management import call_command
from django.test import Client
client = Client()
def emit(obj):
    print("RESULT " + json.dumps(obj))
"""


def _copy_checkout(dest: Path, version: str | None) -> Path:
    """Copy the app like a fresh checkout (no db, no collected static)."""
    shutil.copytree(
        APP_SRC,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "staticroot", "*.sqlite3", "VERSION"),
    )
    if version is not None:
        (dest / "VERSION").write_text(version + "\n")
    return dest


def _env(checkout: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "EXAMPLE_", "CELERY_", "BLUEGREEN_")) and k != "STATIC_ROOT"
    }
    env.update(
        PYTHONPATH=str(checkout),
        EXAMPLE_DATA_DIR=str(checkout.parent / "data"),
        STATIC_ROOT=str(checkout.parent / "static-empty"),
        BLUEGREEN_COLOR="blue",
    )
    env.update(extra)
    return env


def run_django(checkout: Path, code: str, **env: str) -> Any:
    """Run ``code`` with Django set up in ``checkout``; return what it emit()s."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=checkout,
        env=_env(checkout, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated copy of the app with a VERSION file."""
    root = tmp_path_factory.mktemp("example")
    (root / "data").mkdir()
    co = _copy_checkout(root / "checkout", VERSION)
    tables = run_django(
        co,
        """
        call_command("migrate", verbosity=0)
        from django.db import connection
        emit(sorted(connection.introspection.table_names()))
        """,
    )
    assert {"exampleapp_note", "exampleapp_taskrun"} <= set(tables)
    return co


@pytest.mark.integration
def test_migrations_applied_and_nothing_pending(checkout: Path) -> None:
    out = run_django(
        checkout,
        """
        from io import StringIO
        buf = StringIO()
        call_command("showmigrations", "exampleapp", stdout=buf)
        try:
            call_command("makemigrations", "--check", "--dry-run", verbosity=0)
            pending = False
        except SystemExit:
            pending = True
        emit({"show": buf.getvalue(), "pending": pending})
        """,
    )
    assert "[X] 0001_initial" in out["show"]
    assert out["pending"] is False


@pytest.mark.integration
def test_health_version_notes_and_headers(checkout: Path) -> None:
    out = run_django(
        checkout,
        """
        from exampleapp.models import Note
        Note.objects.create(text="hello")
        res = {}
        for path in ["/health", "/version", "/notes", "/nope"]:
            r = client.get(path)
            res[path] = {
                "status": r.status_code,
                "type": r["Content-Type"],
                "body": r.content.decode(),
                "color": r.get("X-Bluegreen-Color"),
                "version": r.get("X-App-Version"),
            }
        emit(res)
        """,
    )
    health = out["/health"]
    assert health["status"] == 200
    assert health["body"] == f"ok {VERSION}"
    assert health["type"].startswith("text/plain")
    assert json.loads(out["/version"]["body"]) == {"version": VERSION, "color": "blue", "greeting": ""}
    notes = json.loads(out["/notes"]["body"])["notes"]
    assert [n["text"] for n in notes] == ["hello"]
    assert out["/nope"]["status"] == 404
    for r in out.values():  # every response, including the 404
        assert r["color"] == "blue"
        assert r["version"] == VERSION


@pytest.mark.integration
def test_health_reports_db_down(checkout: Path, tmp_path: Path) -> None:
    out = run_django(
        checkout,
        """
        r = client.get("/health")
        emit({"status": r.status_code, "body": r.content.decode()})
        """,
        EXAMPLE_DATA_DIR=str(tmp_path / "missing" / "dir"),
    )
    assert out == {"status": 503, "body": "db down"}


@pytest.mark.integration
def test_slow_sleeps_and_caps(checkout: Path) -> None:
    out = run_django(
        checkout,
        """
        t0 = time.monotonic()
        r = client.get("/slow", {"seconds": "0.3"})
        elapsed = time.monotonic() - t0
        slept = []
        time.sleep = slept.append  # the cap check must not really sleep 60 s
        capped = client.get("/slow", {"seconds": "1000"})
        bad = client.get("/slow", {"seconds": "abc"})
        emit({
            "status": r.status_code, "body": r.content.decode(), "elapsed": elapsed,
            "capped": [capped.status_code, slept], "bad": bad.status_code,
        })
        """,
    )
    assert out["status"] == 200
    assert out["body"] == "slow done"
    assert out["elapsed"] >= 0.3
    assert out["capped"] == [200, [60.0]]
    assert out["bad"] == 400


INDEX = """
r = client.get("/")
emit({"status": r.status_code, "body": r.content.decode()})
"""


@pytest.mark.integration
def test_index_renders_without_collected_static(checkout: Path) -> None:
    out = run_django(checkout, INDEX)
    assert out["status"] == 200
    assert VERSION in out["body"]
    assert "blue" in out["body"]
    assert 'href="/static/example/site.css"' in out["body"]


@pytest.mark.integration
def test_collectstatic_hashes_and_index_uses_them(checkout: Path, tmp_path: Path) -> None:
    static_root = tmp_path / "static"
    run_django(
        checkout,
        'call_command("collectstatic", interactive=False, verbosity=0); emit(1)',
        STATIC_ROOT=str(static_root),
    )
    assert (static_root / "staticfiles.json").is_file()
    hashed = [p.name for p in (static_root / "example").glob("site.*.css") if p.name != "site.css"]
    assert len(hashed) == 1, hashed
    out = run_django(checkout, INDEX, STATIC_ROOT=str(static_root))
    assert out["status"] == 200
    assert f'href="/static/example/{hashed[0]}"' in out["body"]


@pytest.mark.integration
def test_record_run_task_records_version_and_rejects_duplicates(
    checkout: Path,
) -> None:
    out = run_django(
        checkout,
        """
        from django.db import IntegrityError, transaction
        from exampleapp import celery_app
        from exampleapp.models import TaskRun
        from exampleapp.tasks import record_run
        record_run("tok-1", seconds=0.01)
        try:
            with transaction.atomic():
                record_run("tok-1")
            dup = "no error"
        except IntegrityError:
            dup = "IntegrityError"
        conf = celery_app.conf
        emit({
            "rows": list(TaskRun.objects.values_list("token", "version")),
            "dup": dup,
            "registered": "exampleapp.tasks.record_run" in celery_app.tasks,
            "acks_late": conf.task_acks_late,
            "prefetch": conf.worker_prefetch_multiplier,
            "backend": conf.result_backend,
            "broker": conf.broker_url,
        })
        """,
    )
    assert out["rows"] == [["tok-1", VERSION]]
    assert out["dup"] == "IntegrityError"
    assert out["registered"] is True
    assert out["acks_late"] is True
    assert out["prefetch"] == 1
    assert out["backend"] is None
    assert out["broker"] == "amqp://guest:guest@127.0.0.1:5672//"


@pytest.mark.integration
def test_version_falls_back_to_git_then_unknown(tmp_path: Path) -> None:
    co = _copy_checkout(tmp_path / "co", version=None)
    code = "from exampleapp.version import VERSION; emit(VERSION)"
    # tmp dirs are not inside a git repo, so no VERSION and no git -> unknown.
    assert run_django(co, code) == "unknown"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(co)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert run_django(co, code) == head


def probed(checkout: Path, **env: str) -> appprobe.Probed:
    """The deploy's one probe of the app, run as a deploy runs it (manage.py shell), in ``checkout``."""
    done = subprocess.run(list(gate.probe_argv(sys.executable)), cwd=checkout, env=_env(checkout, **env),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return appprobe.Probed(done.stdout, done.returncode, done.stderr)


@pytest.mark.integration
def test_the_one_probe_gives_the_plan_the_database_the_commands_and_the_static_storage(checkout: Path) -> None:
    found = probed(checkout)
    assert found.report().migrations == ()  # migrated: nothing to apply
    facts = found.facts()
    assert {"migrate", "collectstatic", "test", "shell"} <= facts.commands and "compress" not in facts.commands
    assert facts.database["ENGINE"] == "django.db.backends.sqlite3" and facts.database["NAME"].endswith(".sqlite3")
    assert not facts.reads_collected  # its manifest storage forgives a missing manifest: tests run beside
    (checkout / "strict_settings.py").write_text(
        "from exampleapp.settings import *  # noqa\n"
        "STORAGES = {**STORAGES, 'staticfiles': "
        "{'BACKEND': 'django.contrib.staticfiles.storage.ManifestStaticFilesStorage'}}\n"
    )
    assert probed(checkout, DJANGO_SETTINGS_MODULE="strict_settings").facts().reads_collected


@pytest.mark.integration
def test_settings_that_break_django_fail_the_probe_and_say_why(checkout: Path) -> None:
    found = probed(checkout, DJANGO_SETTINGS_MODULE="no_such_settings")
    with pytest.raises(appprobe.ProbeError, match=r"the app's settings could not be read: .*no_such_settings"):
        found.facts()
    with pytest.raises(gate.GateError, match="no_such_settings"):
        found.report()
