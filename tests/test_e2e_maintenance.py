"""End to end: `bluegreen maintenance` and `bluegreen lock` on a real stack (supervisord, gunicorn, nginx,
MariaDB, git).

Under load, maintenance on makes nginx answer 503 with the message and Retry-After (no reload, no connection
error: only 503s while it is on), off serves the app again. A locked app refuses a deploy and a push with the
reason; unlock lets the deploy through. The stack is shared by the module; tests run in file order.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import QUICK, blue_live, push, served, status

from example.load import Load
from example.stack import Stack
from supervisor_bluegreen.host import nginx

MESSAGE = "Upgrading the database, back at 10:00"


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    overrides = {**QUICK, "drain_timeout": "5", "health_deadline": "20", "maintenance_retry_after": "120"}
    return blue_live(make_stack, celery=False, ini_overrides=overrides)


def fetch(stack: Stack, path: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(stack.url(path), timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_maintenance_under_load_answers_503_with_the_message_then_the_app_again(stack: Stack) -> None:
    (stack.root / "blue/static/maint.txt").write_text("still served\n")
    pidfile = str(stack.root / "nginx/nginx.pid")
    workers = nginx.worker_pids(pidfile)
    with Load("127.0.0.1", stack.port, keepalive=6, fresh=2, slow=1, slow_path="/slow?seconds=1") as load:
        time.sleep(1)
        on_began = time.monotonic()
        on = stack.ctl("bluegreen", "maintenance", "on", "abiapp", "--message", MESSAGE)
        on_done = time.monotonic()
        page = fetch(stack, "/")
        probe = fetch(stack, "/health")
        asset = fetch(stack, "/static/maint.txt")
        st = status(stack)
        time.sleep(2)
        off_began = time.monotonic()
        off = stack.ctl("bluegreen", "maintenance", "off", "abiapp")
        off_done = time.monotonic()
        again = fetch(stack, "/health")
        time.sleep(1)
    assert on.returncode == 0 and on.stdout.strip() == f"abiapp: maintenance on: {MESSAGE}", on.stdout
    assert off.returncode == 0 and off.stdout.strip() == "abiapp: maintenance off", off.stdout
    status_, headers, body = page
    assert status_ == 503 and headers["Retry-After"] == "120" and MESSAGE in body
    assert headers["Content-Type"].startswith("text/html")
    assert probe[0] == 503 and probe[1]["Retry-After"] == "120"  # health probes through nginx too
    assert asset[0] == 200 and asset[2] == "still served\n"  # static files stay served
    assert st["maintenance"]["message"] == MESSAGE and "via supervisorctl" in st["maintenance"]["who"]
    assert again[0] == 200 and served(stack)[0] == "blue"
    assert nginx.worker_pids(pidfile) == workers  # no reload: the same workers throughout

    samples = load.samples
    assert len(samples) > 100
    assert [s for s in samples if s.status is None] == []  # no connection error, no reset
    assert {s.status for s in samples} == {200, 503}
    before = [s for s in samples if s.end < on_began]
    during = [s for s in samples if s.start > on_done and s.end < off_began]
    after = [s for s in samples if s.start > off_done]
    assert before and during and after
    assert all(s.status == 200 for s in before + after)
    assert all(s.status == 503 for s in during)
    assert {s.kind for s in during} == {"keepalive", "fresh", "slow"}

    rows = stack.ctl("bluegreen", "history", "abiapp", "-n", "2").stdout
    assert "maintenance" in rows and f"abiapp: maintenance on: {MESSAGE}" in rows and "abiapp: maintenance off" in rows


def test_a_locked_app_refuses_deploy_and_push_with_the_reason_and_unlock_lets_the_deploy_through(stack: Stack) -> None:
    commit = push(stack, {"VERSION": "v2\n"}, "v2")
    locked = stack.ctl("bluegreen", "lock", "abiapp", "--reason", "release freeze until Monday")
    assert locked.returncode == 0 and locked.stdout.strip() == "abiapp: locked: release freeze until Monday"
    st = status(stack)
    assert st["lock"]["reason"] == "release freeze until Monday" and "via supervisorctl" in st["lock"]["who"]

    refused = stack.ctl("bluegreen", "deploy", "abiapp")
    assert refused.returncode == 1, refused.stdout
    assert "abiapp: deploy refused: locked by " in refused.stdout
    assert "via supervisorctl since 20" in refused.stdout and ": release freeze until Monday" in refused.stdout
    pushed = subprocess.run(
        [f"{stack.venv}/bin/bluegreen", "push", "-c", str(stack.conf), "abiapp", commit],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert pushed.returncode != 0 and "deploy refused: locked by " in pushed.stdout, pushed.stdout + pushed.stderr
    assert stack.ctl("bluegreen", "switch", "abiapp").returncode == 1
    assert status(stack)["live"] == "blue" and not status(stack)["running"]
    assert "LOCKED by " in stack.ctl("bluegreen", "status", "abiapp").stdout

    unlocked = stack.ctl("bluegreen", "unlock", "abiapp")
    assert unlocked.returncode == 0 and unlocked.stdout.startswith("abiapp: unlocked (locked by "), unlocked.stdout
    out = stack.ctl("bluegreen", "deploy", "abiapp")
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith(f"abiapp: green live at {commit[:7]} in ")
    assert served(stack) == ("green", "v2")
    history = stack.ctl("bluegreen", "history", "abiapp", "-n", "3").stdout
    assert "lock " in history and "unlock " in history and "release freeze until Monday" in history
