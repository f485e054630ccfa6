"""End to end, under load: the listener killed -9 at each step of a deploy and of a rollback, and
supervisord restarted mid-deploy. After each: 0 failed requests, the live color serves the version
``status`` says, the workers run from the live checkout, no job is stuck, and the next deploy and
rollback succeed. Real supervisord, gunicorn, nginx, git, MariaDB, RabbitMQ and Celery.

The points are armed with the listener's failpoints (failpoint.py): the step's entry, and
``workers.started`` (the new color's Celery up, the old one's not stopped yet). ``make test`` runs a representative cut;
the whole matrix is marked ``chaos`` and runs with ``make chaos``.
"""

from __future__ import annotations

import os
import time
import urllib.request
import xmlrpc.client
from collections.abc import Iterator

import psutil
import pytest
from conftest import QUICK, blue_live, job_id_of, other, push, settled, status, wait_finished, wait_step

from example.load import Load, summarize
from example.stack import Stack
from supervisor_bluegreen.listener.failpoint import ROLLBACK_POINTS, branch, deploy_points
from supervisor_bluegreen.shared.stepdefs import PRESETS

DEPLOY_POINTS = deploy_points(PRESETS["django"])
# before anything changes (drain), after the flip (record), with both colors' Celery up (workers.started), a rollback's
# record; a kill mid-migrate is test_e2e_schema's, the other points (workers, every build step) make chaos's
CUT = {("deploy", "drain"), ("deploy", "record"), ("deploy", "workers.started"), ("rollback", "record")}


def matrix() -> Iterator[object]:
    for kind, points in (("deploy", DEPLOY_POINTS), ("rollback", ROLLBACK_POINTS)):
        for point in points:
            marks = () if (kind, point) in CUT else (pytest.mark.chaos,)
            yield pytest.param(kind, point, id=f"{kind}-{point}", marks=marks)


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    # the whole preset in `make chaos`; the cut kills only at migrate among the build steps
    build = os.environ.get("BLUEGREEN_FAULTS_BUILD", "gate backup migrate")
    return blue_live(make_stack, ini_overrides={**QUICK, "health_deadline": "30", "build": build})


@pytest.fixture(scope="module")
def load(stack: Stack) -> Iterator[Load]:
    with Load("127.0.0.1", stack.port, keepalive=4, fresh=2, slow=1) as running:
        yield running


def listener_pid(stack: Stack) -> int:
    return stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"]


def wait_listener_back(stack: Stack, old_pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = stack.rpc().supervisor.getProcessInfo("bluegreen")
        except (OSError, xmlrpc.client.Fault):
            info = {}
        if info.get("statename") == "RUNNING" and info.get("pid") != old_pid:
            return
        time.sleep(0.2)
    raise AssertionError("the listener did not come back")


def worker_past_start(stack: Stack, name: str, timeout: float = 60) -> dict:
    """The worker's process info once it left STARTING: after a reload supervisord starts it anew (startsecs)."""
    deadline = time.monotonic() + timeout
    info = stack.rpc().supervisor.getProcessInfo(name)
    while info["statename"] == "STARTING" and time.monotonic() < deadline:
        time.sleep(0.2)
        info = stack.rpc().supervisor.getProcessInfo(name)
    return info


def assert_consistent(stack: Stack) -> None:
    """What a user sees agrees with itself: links, status, served version, workers."""
    now = settled(stack)
    live = now["live"]
    with urllib.request.urlopen(stack.url("/health"), timeout=5) as resp:
        color, version = resp.headers["X-Bluegreen-Color"], resp.headers["X-App-Version"]
    assert color == live
    checkout = stack.checkout(live)
    expected = (checkout / "VERSION").read_text().strip() if (checkout / "VERSION").exists() else None
    if expected is not None:
        assert version == expected
    assert now["colors"][live]["state"] == "RUNNING"
    celery = worker_past_start(stack, f"abiapp_celery_{live}")
    assert celery["statename"] == "RUNNING", celery
    assert psutil.Process(celery["pid"]).cwd() == os.path.realpath(checkout)  # its color's release
    idle = stack.rpc().supervisor.getProcessInfo(f"abiapp_celery_{other(live)}")
    assert idle["statename"] == "STOPPED", idle  # handed over: the old color's worker stopped
    if now["previous"]:
        assert now["previous"] != live and now["colors"][now["previous"]]["state"] == "RUNNING"


@pytest.mark.parametrize(("kind", "point"), list(matrix()))
def test_listener_killed_at_a_step_leaves_a_consistent_state(stack: Stack, load: Load, kind: str, point: str) -> None:
    settled(stack)
    if kind == "rollback" and not status(stack)["previous"]:
        out = stack.ctl("bluegreen", "deploy", "abiapp", push(stack, {"VERSION": f"v-before-{point}\n"}, "warm"))
        assert out.returncode == 0, out.stdout
    before = status(stack)
    (stack.root / "state" / "abiapp" / "failpoint").write_text(point)
    pid = listener_pid(stack)
    if kind == "deploy":
        commit = push(stack, {"VERSION": f"v-{point}\n"}, f"killed at {point}", branch=branch(point))
        job_id = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", commit, "--detach"))
    else:
        proc = stack.ctl("bluegreen", "rollback")
        job_id = int(proc.stdout.split("queued as job ")[1].split()[0])
    wait_listener_back(stack, pid)
    job = wait_finished(stack, job_id, timeout=60)
    assert job["status"] == "interrupted", job
    assert not (stack.root / "state" / "abiapp" / "failpoint").exists()
    assert_consistent(stack)
    after = status(stack)
    moved = after["live"] != before["live"]
    if moved:  # traffic had moved before the kill: the go-live was recorded on restart, with its rollback target
        assert point in ("verify", "record", "workers", "workers.started")
        assert after["previous"] == before["live"]


def test_the_next_deploy_and_rollback_succeed_after_the_kills(stack: Stack, load: Load) -> None:
    settled(stack)
    out = stack.ctl("bluegreen", "deploy", "abiapp", push(stack, {"VERSION": "v-after-kills\n"}, "after"))
    assert out.returncode == 0, out.stdout
    out = stack.ctl("bluegreen", "rollback")
    assert out.returncode == 0, out.stdout
    assert_consistent(stack)


def test_no_request_failed_through_all_the_kills(load: Load) -> None:
    result = summarize(load.samples)
    assert result["requests"] > 100
    assert result["failed"] == 0, result["failed_by_kind"]


def test_supervisord_reloaded_mid_deploy_ends_consistent(stack: Stack) -> None:
    """supervisord restarts every program (the live color's downtime is its own); the state stays right."""
    settled(stack)
    before = status(stack)
    commit = push(stack, {"VERSION": "v-reload\n"}, "reloaded mid-deploy", branch="reload")
    job_id = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", commit, "--detach"))
    wait_step(stack, job_id, "backup")  # mid-build: supervisord's stop lets the step finish, then no new one
    with Load("127.0.0.1", stack.port, keepalive=2, fresh=1) as around:
        assert stack.ctl("reload").returncode == 0
        stack.wait_running(90)
        job = wait_finished(stack, job_id, timeout=90)
        assert job["status"] == "interrupted", job["message"]
        assert_consistent(stack)
    after = status(stack)
    assert after["live"] == before["live"]
    result = summarize(around.samples)
    print(f"\nsupervisord reload mid-deploy: {result['failed']} of {result['requests']} requests failed "
          f"(supervisord restarts the live color itself), longest gap {result['max_gap_ms']:.0f} ms")  # fmt: skip
