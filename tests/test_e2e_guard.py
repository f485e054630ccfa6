"""End to end: the live site is guarded after the switch (the watch window) and against links spelled
another way, and a stopped listener ends a deploy in order. Real supervisord, gunicorn, nginx, git,
MariaDB, under load. The stack is shared by the module; tests run in file order."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    QUICK,
    blue_live,
    job_id_of,
    push,
    served,
    settled,
    slow_deploy,
    status,
    store_of,
    wait_finished,
)

from example.load import Load, summarize
from example.stack import Stack

WATCH = 15.0  # long enough that a loaded machine still sees the window open


@pytest.fixture(scope="module")
def stack(make_stack) -> Stack:
    ini = {**QUICK, "watch_interval": "0.3", "watch_failures": "3", "health_deadline": "15", "build": "migrate test"}
    return blue_live(make_stack, celery=False, watch=str(WATCH), ini_overrides=ini)


def pid_of(stack: Stack, color: str) -> int:
    return stack.rpc().supervisor.getProcessInfo(f"abiapp_{color}")["pid"]


def test_a_release_that_dies_after_go_live_is_rolled_back_by_itself(stack: Stack) -> None:
    before = status(stack)
    old = before["live"]
    commit = push(stack, {"VERSION": "v-dies\n"}, "dies after go-live", branch="dies")
    with Load("127.0.0.1", stack.port, keepalive=6, fresh=2, slow=1) as load:
        time.sleep(0.5)
        waiting = subprocess.Popen(
            [f"{stack.venv}/bin/supervisorctl", "-c", str(stack.conf), "bluegreen", "deploy", "abiapp", commit,
             "--wait"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert waiting.stdout is not None
            lines = []
            for line in waiting.stdout:
                lines.append(line)
                if "record done in" in line:
                    break
            new = status(stack)["live"]
            assert new != old and status(stack)["watch"].get("previous") == old, "".join(lines)
            time.sleep(1.0)
            killed, killed_at = time.monotonic(), time.time()
            os.kill(pid_of(stack, new), signal.SIGKILL)  # its gunicorn master dies some seconds after go-live
            out, _ = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        time.sleep(2.0)
    text = "".join(lines) + out
    assert waiting.returncode != 0, text
    assert f"rolled back automatically: abiapp_{new} went" in text
    after = status(stack)
    assert after["live"] == old and not after["watch"] and after["previous"] == ""
    assert after["colors"][new]["state"] == "STOPPED"  # the failed release is stopped, not a rollback target
    assert served(stack)[0] == old
    history = stack.ctl("bluegreen", "history", "abiapp", "-n", "2").stdout
    assert "rollback" in history and "by bluegreen watch" in history and "rolled back automatically" in history
    log = stack.ctl("bluegreen", "log", "abiapp").stdout  # the rollback job's log: why, with the stderr tail
    assert "rolling back automatically" in log and "switch done in" in log

    after_kill = [s for s in load.samples if s.start >= killed]
    back = min(s.end for s in after_kill if s.ok and s.color == old)
    failed = [s for s in after_kill if not s.ok]
    result = summarize(load.samples)
    rollback = stack.rpc().bluegreen.history("abiapp", 1)[0]
    switched = next(step["ended"] for step in rollback["steps"] if step["name"] == "switch")
    created = (rollback["created"] - killed_at) * 1000
    print(
        f"\ncrash to previous live: {(back - killed) * 1000:.0f} ms through nginx, links moved after "
        f"{(switched - killed_at) * 1000:.0f} ms (rollback job created after {created:.0f} ms); "
        f"failed requests: {result['failed']}"
    )
    assert back - killed < 3.0
    assert all(s.start < back for s in failed)  # failures only in the window between the crash and the rollback
    assert {s.color for s in load.samples if s.ok and s.start > back} == {old}


def test_a_release_that_holds_passes_its_window_and_a_deploy_waits_for_it(stack: Stack) -> None:
    old = status(stack)["live"]
    first = push(stack, {"VERSION": "v-holds\n"}, "holds", branch="holds")
    out = stack.ctl("bluegreen", "deploy", "abiapp", first)
    assert out.returncode == 0, out.stdout
    assert f"watching {'green' if old == 'blue' else 'blue'} for {WATCH:g} s" in out.stdout
    during = status(stack)
    assert during["watch"]["previous"] == old and 0 < during["watch"]["remaining"] <= WATCH
    assert "watched for" in stack.ctl("bluegreen", "status").stdout
    second = push(stack, {"VERSION": "v-after-window\n"}, "asked for during the window", branch="after")
    queued = job_id_of(stack.ctl("bluegreen", "deploy", "abiapp", second, "--detach"))
    waiting = f"waiting for the watch window of job {queued - 1}"  # said once, while it waits
    deadline = time.monotonic() + 60  # it builds at once; only its start waits
    while waiting not in stack.ctl("bluegreen", "log", "abiapp", str(queued)).stdout:
        assert time.monotonic() < deadline, stack.ctl("bluegreen", "log", "abiapp", str(queued)).stdout
        time.sleep(0.3)
    assert status(stack)["colors"][old]["state"] == "RUNNING"  # the rollback target is not drained meanwhile
    assert status(stack)["running"]["step"] == "window"
    assert stack.ctl("bluegreen", "log", "abiapp", str(queued)).stdout.count(f"{waiting} (until ") == 1
    assert waiting in stack.ctl("bluegreen", "status").stdout
    job = wait_finished(stack, queued, timeout=60)
    assert job["status"] == "succeeded", job["message"]
    first_job = stack.rpc().bluegreen.log("abiapp", queued - 1, 0)
    assert first_job["job"]["watch"]["state"] == "passed"
    waited = next(step for step in job["steps"] if step["name"] == "window")
    assert waited["ended"] >= first_job["job"]["finished"] + WATCH - 1.5  # its start waited out the window
    follow = stack.ctl("bluegreen", "log", "abiapp", str(queued - 1), "-f")
    assert follow.returncode == 0 and "watch window passed" in follow.stdout
    settled(stack)


def test_a_rollback_asked_for_during_the_window_cuts_it_short(stack: Stack) -> None:
    old = status(stack)["live"]
    commit = push(stack, {"VERSION": "v-cut\n"}, "rolled back by hand", branch="cut")
    assert stack.ctl("bluegreen", "deploy", "abiapp", commit).returncode == 0
    assert status(stack)["watch"]
    out = stack.ctl("bluegreen", "rollback")
    assert out.returncode == 0, out.stdout
    after = status(stack)
    assert after["live"] == old and not after["watch"]


def test_a_relative_live_link_is_the_live_color_and_a_deploy_builds_the_idle_one(stack: Stack) -> None:
    settled(stack)
    live = status(stack)["live"]
    link = stack.root / "run" / "abiapp.live.sock"
    tmp = link.with_name(".relative")
    tmp.symlink_to(f"abiapp.{live}.sock")  # as `ln -sfn` or a hand repair writes it
    tmp.replace(link)
    commit = push(stack, {"VERSION": "v-relative\n"}, "relative link", branch="relative")
    with Load("127.0.0.1", stack.port, keepalive=6, fresh=2, slow=1) as load:
        time.sleep(0.5)
        out = stack.ctl("bluegreen", "deploy", "abiapp", commit)
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout
    idle = "green" if live == "blue" else "blue"
    assert stack.rpc().bluegreen.log("abiapp", job_id_of(out), 0)["job"]["color"] == idle
    assert status(stack)["live"] == idle
    assert summarize(load.samples)["failed"] == 0
    assert served(stack)[1] == "v-relative"
    settled(stack)


def test_a_live_link_to_no_color_refuses_deploy_and_switch_saying_how_to_repair(stack: Stack) -> None:
    link = stack.root / "run" / "abiapp.live.sock"
    good = os.readlink(link)
    before = served(stack)
    tmp = link.with_name(".stray")
    tmp.symlink_to("/tmp/somewhere-else.sock")
    tmp.replace(link)
    try:
        for command in (("deploy",), ("switch",)):
            out = stack.ctl("bluegreen", *command)
            assert out.returncode != 0, out.stdout
            assert f"{link} points at '/tmp/somewhere-else.sock'" in out.stdout and "ln -sfn" in out.stdout
            assert "drain ..." not in out.stdout
    finally:
        tmp.symlink_to(good)
        tmp.replace(link)
    assert served(stack) == before


def test_sigterm_lets_the_running_step_finish_and_ends_the_job_interrupted(stack: Stack) -> None:
    before = status(stack)
    job_id = slow_deploy(stack, "v-term", branch="term")
    listener = stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"]
    restarted = stack.ctl("restart", "bluegreen")  # supervisord's SIGTERM, then a new listener
    assert restarted.returncode == 0, restarted.stdout
    job = wait_finished(stack, job_id, timeout=30)
    assert job["status"] == "interrupted", job["message"]
    assert "interrupted before" in job["message"] and f"{before['live']} live, unchanged" in job["message"]
    log = Path(stack.root / "state" / "abiapp" / "jobs" / f"{job_id}.log").read_text()
    assert "test done in" in log  # the running step finished, it was not killed
    assert stack.rpc().supervisor.getProcessInfo("bluegreen")["pid"] != listener
    after = status(stack)
    assert after["live"] == before["live"] and not after["running"] and after["locked"] is False
    assert served(stack)[0] == before["live"]


def jobs_of(stack: Stack) -> list[dict]:
    """Every job in the store (queued, running, finished), oldest first."""
    return store_of(stack).jobs()


@pytest.mark.parametrize("how", ["SIGTERM", pytest.param("supervisorctl shutdown", marks=pytest.mark.chaos)])
def test_supervisord_stopped_during_a_watch_window_is_no_crash(stack: Stack, how: str) -> None:
    """Its programs stop (the new color's probes fail) and its RPC refuses: once taken for a crash, a rollback
    job "interrupted by bluegreen watch" and a deploy "automatic rollback failed". The window resumes instead."""
    settled(stack)
    old = status(stack)["live"]
    commit = push(stack, {"VERSION": f"v-{how.split()[-1]}\n"}, f"supervisord stopped by {how} in the window")
    out = stack.ctl("bluegreen", "deploy", "abiapp", commit)
    assert out.returncode == 0, out.stdout
    deploy_id, new = job_id_of(out), status(stack)["live"]
    assert new != old and status(stack)["watch"]["color"] == new
    time.sleep(1.0)  # a probe or two of the new color passed
    supervisord = stack.pid
    assert supervisord is not None
    if how == "SIGTERM":
        os.kill(supervisord, signal.SIGTERM)
    else:
        assert stack.ctl("shutdown").returncode == 0
    assert psutil.wait_procs([psutil.Process(supervisord)], timeout=60)[1] == []
    stack.pid = None
    stack.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (jobs_of(stack)[-1].get("watch") or {}).get("state", "running") == "running":
        time.sleep(0.3)
    deploy = next(j for j in jobs_of(stack) if j["id"] == deploy_id)
    assert deploy["watch"]["state"] == "passed", deploy["watch"]  # resumed after the restart, then held
    assert [j["kind"] for j in jobs_of(stack) if j["id"] > deploy_id] == [], jobs_of(stack)[-1]
    after = status(stack)
    assert after["live"] == new and after["previous"] == old and not after["watch"]
    deadline = time.monotonic() + 30  # both colors, Celery and the listener boot at once after the restart
    while True:
        try:
            assert served(stack) == (new, f"v-{how.split()[-1]}")
            break
        except OSError:  # a timeout, or nginx's 502 while the color boots (URLError)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    log = (stack.root / "state" / "abiapp" / "jobs" / f"{deploy_id}.log").read_text()
    assert "rolling back" not in log and f"watch: {new} held for" in log
