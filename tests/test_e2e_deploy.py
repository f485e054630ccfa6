"""End to end: `bluegreen deploy` takes a pushed commit live on real supervisord, gunicorn, nginx, git,
MariaDB, RabbitMQ and Celery. The stack is shared by the module; tests run in file order."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import threading
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from celery import Celery
from conftest import (
    QUICK,
    REPO,
    SLOW_TEST,
    blue_live,
    build_processes,
    job_id_of,
    jobs_done,
    push,
    served,
    slow_deploy,
    status,
    wait_finished,
    wait_step,
)
from supervisor.xmlrpc import Faults

from example import services
from example.load import Load, summarize
from example.stack import Stack
from supervisor_bluegreen.host.backup import restore_argv
from supervisor_bluegreen.shared.store import AppLock

FAILING_TEST = """\
from django.test import SimpleTestCase


class Broken(SimpleTestCase):
    def test_fails(self):
        self.fail("release is broken")
"""


class Hooks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        Hooks.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhooks() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(make_stack, webhooks) -> Stack:
    hook = f"http://127.0.0.1:{webhooks.server_address[1]}/hook"
    s = blue_live(make_stack, ini_overrides={**QUICK, "health_deadline": "10", "webhooks": hook})
    subprocess.run(["git", "clone", "-q", str(s.root / "app.git"), str(s.root / "work")], check=True)
    return s


def task_rows(stack: Stack) -> list[tuple[str, str]]:
    with services.mariadb(stack.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT token, version FROM exampleapp_taskrun")
        return list(cur.fetchall())


class Submitter(threading.Thread):
    """Submits record_run tasks continuously to the stack's queue: each token must run exactly once."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.app = Celery(broker=services.BROKER_URL)
        self.queue = stack.name
        self.tokens: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            token = uuid.uuid4().hex
            self.app.send_task("exampleapp.tasks.record_run", args=[token, 0.3], queue=self.queue)
            self.tokens.append(token)
            time.sleep(0.2)  # 0.3 s tasks at 5/s: within two workers, so the queue never piles up


def test_pushed_commit_goes_live_under_load_and_celery_runs_every_task_once(stack: Stack, webhooks) -> None:
    commit = push(stack, {"VERSION": "v2\n"}, "v2")
    submitter = Submitter(stack)
    with Load("127.0.0.1", stack.port, keepalive=6, fresh=2, slow=1) as load:
        submitter.start()
        time.sleep(1)
        began = time.monotonic()
        out = stack.ctl("bluegreen", "deploy")
        confirmed = time.monotonic()
        done = jobs_done(stack)  # the command returned once traffic moved; the job hands the workers over
        time.sleep(2)  # tasks submitted after the handover reach the new workers
        submitter.done.set()
        submitter.join()
    assert out.returncode == 0, out.stdout
    live, handover = out.stdout.strip().splitlines()[-2:]
    assert live.startswith(f"abiapp: green live at {commit[:7]} in "), live
    assert handover.startswith("the workers are being handed over to the new code (job "), handover
    assert "$ " + f"{stack.venv}/bin/python -m pip install --quiet --requirement requirements.txt" in out.stdout
    for step in ("resolve", "drain", "checkout", "deps", "backup", "migrate", "collectstatic", "test", "health gate",
                 "switch", "verify", "record"):  # fmt: skip
        assert f"{step} done in" in out.stdout, step
    assert done["last_job"]["status"] == "succeeded", done["last_job"]
    by_color = {w["color"]: w for w in done["workers"]}
    assert (by_color["green"]["state"], by_color["blue"]["state"]) == ("RUNNING", "STOPPED"), done["workers"]
    assert served(stack) == ("green", "v2")
    result = summarize(load.samples, [(confirmed, "green", began)])
    assert result["failed"] == 0, result["failed_by_kind"]
    assert result["old_after_switch"] == 0

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(task_rows(stack)) < len(submitter.tokens):
        time.sleep(0.5)
    rows = task_rows(stack)
    tokens = [t for t, _ in rows]
    assert len(submitter.tokens) > 15
    assert sorted(tokens) == sorted(submitter.tokens)  # every task ran, none twice
    assert "v2" in {v for _, v in rows}  # the restarted workers run the new code

    events = [h["event"] for h in Hooks.received]
    assert events[-2:] == ["start", "success"]
    assert commit[:7] in Hooks.received[-1]["text"]
    history = json.loads(stack.ctl("bluegreen", "status", "--json").stdout)[0]
    assert history["colors"]["green"]["version"] == commit[:7]


BROKEN = {
    "migrate": {
        "exampleapp/migrations/0002_broken.py": (
            # it breaks on the live database only: the test step's own test database applies it fine
            "from django.db import migrations\n\n\ndef boom(apps, schema_editor):\n"
            "    if not schema_editor.connection.settings_dict['NAME'].startswith('test_'):\n"
            "        raise RuntimeError('migration is broken')\n\n\n"
            "class Migration(migrations.Migration):\n"
            "    dependencies = [('exampleapp', '0001_initial')]\n"
            "    operations = [migrations.RunPython(boom, hints={'bluegreen': 'safe'})]\n"
        )
    },
    "collectstatic": {"static/example/broken.css": "body { background: url('missing.png'); }\n"},
    "test": {"exampleapp/tests_broken.py": FAILING_TEST},
}


def broken_views(stack: Stack) -> str:
    """A release whose own tests pass but which fails under gunicorn: only the health gate can catch it."""
    views = (stack.checkout("blue") / "exampleapp" / "views.py").read_text()
    return views + (
        "\n\n_tested_health = health\n\n\ndef health(request):\n    import sys\n\n"
        "    if 'gunicorn' in sys.argv[0]:\n        raise RuntimeError('health is broken')\n"
        "    return _tested_health(request)\n"
    )


@pytest.mark.parametrize(
    "step",
    ["migrate", "test", "health", pytest.param("backup", marks=pytest.mark.chaos),
     pytest.param("collectstatic", marks=pytest.mark.chaos)],
)  # fmt: skip
def test_failing_step_aborts_and_live_keeps_serving(stack: Stack, step: str) -> None:
    before = status(stack)
    live_before = served(stack)
    ini = stack.ini.read_text()
    if step == "backup":
        stack.ini.write_text(ini.replace(f"backup_dir = {stack.root}/backups", "backup_dir = /proc/no-backups-here"))
        ref = push(stack, {"VERSION": "v-backup\n"}, "needs a backup", branch="broken-backup")
    else:
        files = BROKEN[step] if step != "health" else {"exampleapp/views.py": broken_views(stack)}
        ref = push(stack, {**files, "VERSION": f"v-{step}\n"}, f"broken {step}", branch=f"broken-{step}")
    try:
        with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as load:
            time.sleep(0.5)
            out = stack.ctl("bluegreen", "deploy", "abiapp", ref)
            time.sleep(0.5)
    finally:
        stack.ini.write_text(ini)
    assert out.returncode == 1, out.stdout
    reason = {
        "backup": "deploy failed: backup failed",
        "migrate": "deploy failed: migrate failed: exit status 1",
        "collectstatic": "deploy failed: collectstatic failed: exit status 1",
        "test": "deploy failed: test failed: exit status 1",
        "health": "is not healthy",
    }[step]
    assert reason in out.stdout, out.stdout
    assert f"{before['live']} live, unchanged" in out.stdout
    assert served(stack) == live_before
    assert status(stack)["live"] == before["live"]
    result = summarize(load.samples)
    assert result["failed"] == 0, result["failed_by_kind"]
    assert {s.color for s in load.samples if s.ok} == {before["live"]}
    if step == "migrate":
        assert "migration is broken" in out.stdout  # the step's own output is in the log
    if step == "health":
        assert "health is broken" in out.stdout  # the tail of the target's stderr


def test_bad_refs_are_refused_before_anything_changes(stack: Stack) -> None:
    before = status(stack)
    idle = next(c for c, v in before["colors"].items() if v["role"] == "idle")
    for ref, message in [
        ("main;reboot", "refusing ref 'main;reboot'"),
        ("$(reboot)", "refusing ref '$(reboot)'"),
        ("a..b", "refusing ref 'a..b'"),
    ]:
        out = stack.ctl("bluegreen", "deploy", "abiapp", ref)
        assert out.returncode == 1
        assert message in out.stdout and "nothing changed" in out.stdout
    with pytest.raises(xmlrpc.client.Fault) as refused:  # what a git hook or dashboard would send
        stack.rpc().bluegreen.deploy("abiapp", "--upload-pack=touch /tmp/x", "hook")
    assert refused.value.faultCode == Faults.BAD_ARGUMENTS
    assert "refusing ref '--upload-pack=touch /tmp/x'" in refused.value.faultString
    out = stack.ctl("bluegreen", "deploy", "abiapp", "no-such-branch")
    assert out.returncode == 1
    assert "unknown ref 'no-such-branch'" in out.stdout
    assert "drain ..." not in out.stdout
    after = status(stack)
    assert after["live"] == before["live"]
    assert after["colors"][idle]["state"] == before["colors"][idle]["state"]


def test_second_deploy_queues_and_three_coalesce_to_the_newest(stack: Stack) -> None:
    first = slow_deploy(stack, "v-slow", branch="slow")
    refs = [push(stack, {"VERSION": f"v-q{i}\n"}, f"queued {i}", branch=f"q{i}") for i in range(3)]
    queued = [job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", ref, "--detach")) for ref in refs]
    assert wait_finished(stack, first)["status"] == "succeeded"
    newest = wait_finished(stack, queued[-1])
    assert newest["status"] == "succeeded", newest["message"]
    for job_id in queued[:-1]:
        job = wait_finished(stack, job_id)
        assert job["status"] == "cancelled"
        assert "superseded by job" in job["message"]
    assert served(stack)[1] == "v-q2"
    history = stack.ctl("bluegreen", "history", "abiapp", "-n", "5").stdout
    assert f"#{queued[-1]}" in history and "superseded" in history


def test_cancel_stops_a_deploy_before_its_switch(stack: Stack) -> None:
    before = served(stack)
    job_id = slow_deploy(stack, "v-cancel", branch="c")
    out = stack.ctl("bluegreen", "cancel")
    assert out.returncode == 0, out.stdout
    assert wait_finished(stack, job_id)["status"] == "cancelled"
    assert served(stack) == before
    assert build_processes(stack) == []


def test_kill_9_of_the_caller_does_not_stop_the_deploy(stack: Stack) -> None:
    slow = push(stack, {"exampleapp/tests_slow.py": SLOW_TEST, "VERSION": "v-caller\n"}, "caller dies", branch="k1")
    caller = subprocess.Popen(
        [f"{stack.venv}/bin/supervisorctl", "-c", str(stack.conf), "bluegreen", "deploy", "abiapp", slow],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        job_id = job_id_of(caller.stdout.readline())
        wait_step(stack, job_id, "test")
    finally:
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
    job = wait_finished(stack, job_id)
    assert job["status"] == "succeeded", job["message"]
    assert served(stack)[1] == "v-caller"
    follow = stack.ctl("bluegreen", "log", "abiapp", str(job_id), "-f")  # reattach: the whole story
    assert follow.returncode == 0 and "live at" in follow.stdout


def test_kill_9_of_the_listener_leaves_no_stale_lock_and_the_next_deploy_works(stack: Stack) -> None:
    before = status(stack)
    job_id = slow_deploy(stack, "v-killed", branch="k2")
    listener = stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"]
    os.kill(listener, signal.SIGKILL)
    job = wait_finished(stack, job_id, timeout=30)
    assert job["status"] == "interrupted"
    stack.wait_running(30, ("bluegreen",))
    after = status(stack)
    assert after["live"] == before["live"] and not after["running"] and after["locked"] is False
    assert not AppLock(str(stack.root / "state" / "abiapp" / "lock")).held_elsewhere()
    time.sleep(0.5)
    assert build_processes(stack) == []
    commit = push(stack, {"VERSION": "v-after\n"}, "after the crash")
    out = stack.ctl("bluegreen", "deploy")
    assert out.returncode == 0, out.stdout
    said = next(line for line in out.stdout.splitlines() if " live at " in line)
    assert said.split(" live at ")[1].startswith(commit[:7]), out.stdout
    assert served(stack)[1] == "v-after"


def test_a_deploy_backup_restores_into_a_scratch_database(stack: Stack) -> None:
    with services.mariadb(stack.database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO exampleapp_note (text, created) VALUES ('Abschlussfahrt nach Prag', NOW())")
    push(stack, {"VERSION": "v-backup-check\n"}, "backup check")
    out = stack.ctl("bluegreen", "deploy")
    assert out.returncode == 0, out.stdout
    # each color installed these requirements once already: into its own virtualenv, not again
    assert "deps: skipped, requirements (requirements.txt) unchanged since" in out.stdout
    jobs_done(stack)  # the command returned once traffic moved: history shows the job once it ended
    history = stack.ctl("bluegreen", "history", "abiapp", "-n", "1").stdout
    backup = Path(history.split("backup: ")[1].split()[0])
    assert backup.name.startswith("abiapp-") and backup.suffixes[-2:] == [".sql", ".gz"]
    scratch = f"{stack.database}_restore"
    services.create_database(scratch)
    try:
        argv, env = restore_argv("mysql", {"NAME": scratch, "HOST": "127.0.0.1", "PORT": "3306", "USER": "root"})
        subprocess.run(argv, input=gzip.decompress(backup.read_bytes()), env={**os.environ, **env}, check=True)
        with services.mariadb(scratch) as conn, conn.cursor() as cur:
            cur.execute("SELECT text FROM exampleapp_note")
            assert ("Abschlussfahrt nach Prag",) in cur.fetchall()
    finally:
        services.drop_database(scratch)


def test_post_receive_hook_deploys_a_push_and_streams_progress(stack: Stack) -> None:
    bare = stack.root / "app.git"
    hook = bare / "hooks" / "post-receive"
    hook.write_text((REPO / "conf" / "hooks" / "post-receive").read_text())
    hook.chmod(0o755)
    for key, value in (("supervisorctl", f"{stack.venv}/bin/supervisorctl -c {stack.conf}"), ("app", "abiapp")):
        subprocess.run(["git", "--git-dir", str(bare), "config", f"bluegreen.{key}", value], check=True)
    work = stack.root / "work"
    subprocess.run(["git", "-C", str(work), "fetch", "-q", "origin"], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "-B", "main", "origin/main"], check=True)
    (work / "VERSION").write_text("v-pushed\n")
    with (work / "requirements.txt").open("a") as requirements:
        requirements.write("requests>=2\n")  # new requirements: installed into the idle color's virtualenv
    subprocess.run(["git", "-C", str(work), "-c", "user.name=Abi", "-c", "user.email=a@b", "commit", "-qam", "pushed"],
                   check=True)  # fmt: skip
    pushed = subprocess.run(["git", "-C", str(work), "push", "origin", "main"], capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    assert "remote: [" in pushed.stderr and "health gate done in" in pushed.stderr
    assert " live at " in pushed.stderr
    assert "-m pip install --quiet --requirement requirements.txt" in pushed.stderr
    assert served(stack)[1] == "v-pushed"


def test_rollback_moves_the_workers_back_too(stack: Stack) -> None:
    """After a rollback Celery must run the code traffic went back to, not the release it left."""
    live = status(stack)["live"]
    out = stack.ctl("bluegreen", "rollback")
    assert out.returncode == 0, out.stdout
    after = jobs_done(stack)
    previous = after["live"]
    assert previous != live
    log = stack.ctl("bluegreen", "log", "abiapp", str(after["last_job"]["id"])).stdout
    assert f"worker abiapp_celery_{previous} pid" in log and f"runs {previous}'s checkout" in log, log
    assert f"worker abiapp_celery_{live} stopped (warm shutdown)" in log, log
    by_color = {w["color"]: w for w in after["workers"]}
    assert (by_color[previous]["state"], by_color[live]["state"]) == ("RUNNING", "STOPPED"), after["workers"]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/stdin"])
def test_requirements_pushed_as_a_link_to_a_device_fail_the_deploy(stack: Stack, device: str) -> None:
    """Pushed code is the app user's: root must not read requirements.txt -> /dev/zero (all memory) nor
    -> /dev/stdin (supervisord's event pipe, which would wedge the listener with the lock held)."""
    before = served(stack)
    work = stack.root / "work"
    subprocess.run(["git", "-C", str(work), "fetch", "-q", "origin"], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "-B", "evil", "origin/main"], check=True)
    (work / "requirements.txt").unlink()
    (work / "requirements.txt").symlink_to(device)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=Abi", "-c", "user.email=a@b", "commit", "-qam", device],
                   check=True)  # fmt: skip
    subprocess.run(["git", "-C", str(work), "push", "-q", "-f", "origin", "evil"], check=True)

    out = stack.ctl("bluegreen", "deploy", "abiapp", "evil", timeout=60)

    assert out.returncode != 0, out.stdout
    assert "deps: " in out.stdout and "not a regular file" in out.stdout, out.stdout
    assert served(stack) == before
    after = status(stack)
    assert not after["running"] and after["locked"] is False  # the listener is free for the next job
