"""What a restarted listener does first (AppWorker.recover, the recover sequence): a job that was running
ends "interrupted", a go-live cut between the flip and its record is finished from the ``switching``
intent, workers left on the old code by a kill are restarted; against fakes.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fakes import COMMIT, World, step_names, with_worker

from supervisor_bluegreen.host import links
from supervisor_bluegreen.listener.loop import AppWorker
from supervisor_bluegreen.shared.model import Window
from supervisor_bluegreen.shared.store import Store


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """blue live, green RUNNING beside it, a worker on blue's code."""
    return with_worker(tmp_path, monkeypatch, "blue", "green")


def running_job(world: World, kind: str = "deploy", **fields: object) -> dict:
    """A job the killed listener was running."""
    job = world.store.claim(world.store.enqueue(kind, {}, "someone")["id"])
    assert job is not None
    return world.store.update_job(job["id"], **{"step": "test", **fields})


def recover(world: World) -> None:
    """AppWorker.recover as at the listener's start (its own log is stderr)."""
    AppWorker(world.app, world.watch).recover(world.store)


def test_a_job_that_was_running_ends_interrupted(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    job = running_job(world)
    recover(world)
    job = world.store.read_job(job["id"]) or {}
    assert (job["status"], job["step"], job["uncut"]) == ("interrupted", "", None)
    assert job["message"] == "shop: deploy interrupted (listener restarted)"
    assert "interrupted: the listener stopped while this job ran" in world.log(job)
    assert [j["kind"] for j in world.store.jobs()] == ["deploy"]  # nothing to repair: no recover job
    assert world.rpc.calls == [] and world.store.read()["live"] == "blue"
    assert "shop: live color blue" in capsys.readouterr().err


def test_a_migrate_the_killed_listener_left_running_is_waited_for_and_its_output_kept(world: World) -> None:
    me = psutil.Process(os.getpid())  # stands for the migrate: alive, started when recorded
    job = running_job(world, uncut={"pid": me.pid, "step": "migrate", "since": me.create_time()})
    Path(world.store.output_path(job["id"])).write_text("Applying shop.0002_add... OK\n")
    worker = AppWorker(world.app, world.watch)
    worker.stopping.set()  # it would wait for the process to end: the listener stops meanwhile
    worker.recover(world.store)
    job = world.store.read_job(job["id"]) or {}
    assert job["message"] == (
        "shop: deploy interrupted (listener restarted); its migrate ran to its end, so the database may have changed"
    )
    log = world.log(job)
    assert f"the listener restarted while migrate (pid {me.pid}) ran: waiting for it to end" in log
    assert "    | Applying shop.0002_add... OK" in log
    assert f"migrate (pid {me.pid}) ended" in log


def test_a_recorded_pid_now_of_another_process_is_not_waited_for(world: World) -> None:
    job = running_job(world, uncut={"pid": os.getpid(), "step": "migrate", "since": time.time() - 3600})
    recover(world)
    job = world.store.read_job(job["id"]) or {}
    assert job["message"] == "shop: deploy interrupted (listener restarted)"
    assert "waiting for it" not in world.log(job)


def test_a_go_live_cut_after_the_flip_is_finished_by_a_recover_job(world: World) -> None:
    deploy = running_job(world, step="record")
    links.point(world.app, world.color("green"))  # the flip happened, its record did not
    world.store.update(switching={"job": deploy["id"], "kind": "deploy", "from": "blue", "to": "green",
                                  "previous": "blue"})  # fmt: skip
    recover(world)
    jobs = world.store.jobs()
    assert [(j["kind"], j["status"]) for j in jobs] == [("deploy", "interrupted"), ("recover", "succeeded")]
    repair = jobs[1]
    assert repair["who"] == "bluegreen listener (restart)"
    assert repair["message"] == "shop: repaired after a listener restart: green live"
    assert step_names(repair) == ["reconcile", "workers"]
    state = world.store.read()
    assert (state["live"], state["previous"], state["switching"], state["workers_restarting"]) == (
        "green", "blue", None, None
    )  # fmt: skip
    assert (state["watch"]["color"], state["watch"]["previous"], state["watch"]["job"]) == (
        "green",
        "blue",
        deploy["id"],
    )
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]
    log = world.log(repair)
    assert f"an interrupted deploy job {deploy['id']} had made green live: recorded" in log
    assert "runs green's checkout" in log


def test_a_go_live_cut_before_the_flip_leaves_live_as_it_was(world: World) -> None:
    world.store.update(switching={"job": 3, "kind": "switch", "from": "blue", "to": "green", "previous": "blue"})
    recover(world)
    (repair,) = world.store.jobs()
    assert repair["kind"] == "recover" and repair["message"] == "shop: repaired after a listener restart: blue live"
    assert step_names(repair) == ["reconcile"]  # the workers never left blue: no marker, no restart
    state = world.store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("blue", "green", None)
    assert not state.get("watch") and world.rpc.calls == []


def test_workers_a_kill_left_on_the_old_code_are_restarted(world: World) -> None:
    world.store.update(workers_restarting="blue")
    recover(world)
    (repair,) = world.store.jobs()
    assert repair["status"] == "succeeded" and step_names(repair) == ["reconcile", "workers"]
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]
    assert world.store.read()["workers_restarting"] is None


def test_state_that_disagrees_with_the_links_is_corrected_from_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    links.point(world.app, world.color("green"))
    recover(world)
    assert world.store.read()["live"] == "green" and world.store.jobs() == []
    assert "state said live=blue, links say green: recording green" in capsys.readouterr().err


def test_a_live_link_to_no_color_is_reported_and_nothing_recorded(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    os.unlink(world.app.live_socket)
    os.symlink("/elsewhere.sock", world.app.live_socket)
    recover(world)
    assert world.store.read()["live"] == "blue"
    assert "which is no color of shop" in capsys.readouterr().err


def test_the_colors_commits_are_read_from_their_checkouts(world: World) -> None:
    recover(world)
    colors = world.store.read()["colors"]  # the whole id too: a fleet compares it with the commit it rolls out
    assert colors == {c: {"version": COMMIT[:7], "commit": COMMIT} for c in ("blue", "green")}


# --------------------------------------------------------------------------------------------
# which job runs next


def test_a_deploy_runs_at_once_in_a_window(world: World) -> None:
    worker = AppWorker(world.app, world.watch)
    deploy = world.store.enqueue("deploy", {}, "someone")
    world.store.update(watch={"color": "blue", "previous": "green", "since": 1.0, "until": 9e9, "job": 1})
    assert (worker.next_job(world.store) or {})["id"] == deploy["id"]  # it builds now; its start waits


# --------------------------------------------------------------------------------------------
# the worker's loop: repair once, then the queue


def test_the_worker_repairs_once_then_runs_the_queue_and_health_checks_beside(world: World) -> None:
    worker = AppWorker(world.app, world.watch)
    stale = running_job(world)
    switch_job = world.store.enqueue("switch", {}, "someone")
    health = world.store.enqueue("health", {}, "someone")
    try:
        worker.run_queued()
        wait_for(lambda: (world.store.read_job(health["id"]) or {}).get("status") == "succeeded")
    finally:
        worker.stopping.set()
        worker.guard.wake.set()
        worker.guard.join(5)
    statuses = {job["id"]: (job["kind"], job["status"]) for job in world.store.jobs()}
    assert statuses == {
        stale["id"]: ("deploy", "interrupted"),
        switch_job["id"]: ("switch", "succeeded"),
        health["id"]: ("health", "succeeded"),
    }
    assert (world.store.read_job(health["id"]) or {})["message"].startswith("shop green: ok status 200")
    assert worker.recovered and not worker.guard.is_alive()
    assert Window.from_state(world.store.read()["watch"]) is not None  # the stopped listener left it to resume


def test_jobs_wait_while_another_process_holds_the_lock(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    job = world.store.enqueue("switch", {}, "someone")
    other = Store(world.app.state_dir, world.app.name)  # another listener's handle on the same lock file
    assert other.lock.acquire()
    try:
        AppWorker(world.app, world.watch).run_queued()
    finally:
        other.lock.release()
    assert (world.store.read_job(job["id"]) or {})["status"] == "queued"
    assert "shop: lock held by another process; jobs wait" in capsys.readouterr().err


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


@pytest.mark.parametrize("fails", [False, True])
def test_in_nginx_mode_a_restart_makes_nginx_serve_what_the_link_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fails: bool
) -> None:
    (tmp_path / "sites").mkdir()
    world = World(tmp_path, monkeypatch, switch="nginx", nginx_sites=f"{tmp_path}/sites",
                  nginx_enabled=f"{tmp_path}/enabled.conf")  # fmt: skip
    world.live("green", previous="blue")
    reloads: list[str] = []

    def reload_nginx(app: object, log: object) -> None:  # a crash between the link and the reload
        reloads.append(links.live_color(world.app) or "")
        if fails:
            raise links.SwitchError("nginx config test failed")

    monkeypatch.setattr(links, "reload_nginx", reload_nginx)
    recover(world)
    assert reloads == ["green"]
    err = capsys.readouterr().err
    assert ("shop: nginx not reloaded at start: nginx config test failed" in err) is fails
    assert "shop: live color green" in err


def test_after_supervisord_starts_the_live_colors_own_worker_is_started_and_the_idle_ones_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Own workers never start by themselves (autostart = false): the listener's start hands them to the live color."""
    from fakes import with_own_workers

    world = with_own_workers(tmp_path, monkeypatch, "blue")
    world.rpc.states.update(shop_worker_blue="STOPPED", shop_worker_green="RUNNING")  # as a reboot left them
    recover(world)
    repair = world.store.jobs()[-1]
    assert repair["kind"] == "recover" and repair["status"] == "succeeded", repair.get("message")
    assert (world.rpc.states["shop_worker_blue"], world.rpc.states["shop_worker_green"]) == ("RUNNING", "STOPPED")
    world.rpc.calls.clear()
    recover(world)  # as they should be: nothing to repair, no job
    assert world.rpc.calls == [] and len(world.store.jobs()) == 1
