"""The contract phase (contract.py) and when the listener runs or drops it (AppWorker.contract_due)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import World, failed_step, step_names
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.listener import jobs
from supervisor_bluegreen.listener.loop import AppWorker

CONTRACT = ("python3", "manage.py", "migrate", "--noinput")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """green live after deploy job 7, blue its rollback target, one contract migration held back for green."""
    w = World(tmp_path, monkeypatch)
    w.live("green", previous="blue", contract={"job": 7, "color": "green", "migrations": ["shop.0003_drop"]})
    return w


def test_a_contract_migrates_the_live_color_then_clears_and_stops_the_rollback_target(world: World) -> None:
    job = world.job("contract")
    assert job["status"] == "succeeded", job["message"]
    assert job["message"] == (
        "shop: contract migrations applied on green: shop.0003_drop; rollback target blue cleared and stopped "
        "(rolling back past them is not safe)"
    )
    assert step_names(job) == ["reconcile", "contract migrate", "clear rollback target"]
    assert world.runner.commands[-1] == (CONTRACT, world.color("green").checkout)
    state = world.store.read()
    assert (state["previous"], state["contract"]) == (None, None)
    assert state["rollback_cleared"]["job"] == 7 and state["rollback_cleared"]["contract"] == job["id"]
    assert world.rpc.calls == [("stop", "shop_blue")]
    assert "$ python3 manage.py migrate --noinput" in world.log(job)
    assert job["uncut"] is None  # its pid was recorded while it ran, for a restarted listener


def test_a_contract_whose_release_is_not_live_is_dropped(world: World) -> None:
    world.store.update(contract={"job": 7, "color": "blue", "migrations": ["shop.0003_drop"]})
    job = world.job("contract")
    assert job["status"] == "succeeded"
    assert job["message"] == "shop: no contract migration to run (blue is not live)"
    assert world.store.read()["contract"] is None and world.store.read()["previous"] == "blue"
    assert world.runner.ran("migrate") == [] and world.rpc.calls == []


def test_no_contract_pending(world: World) -> None:
    world.store.update(contract=None)
    assert world.job("contract")["message"] == "shop: no contract migration to run (nothing is not live)"


def test_a_failed_contract_migrate_keeps_the_rollback_target(world: World) -> None:
    world.runner.fail["migrate"] = "django.db.utils.OperationalError: locked"
    job = world.job("contract")
    assert job["status"] == "failed" and failed_step(job) == "contract migrate"
    assert (
        "contract migrate failed: exit status 1: django.db.utils.OperationalError: locked; the rollback target is kept"
        in (job["message"])
    )
    state = world.store.read()
    assert state["previous"] == "blue" and state["contract"]["color"] == "green"
    assert world.rpc.calls == []


def test_a_cancel_does_not_stop_a_contract_past_its_switch(world: World) -> None:
    run = world.new_run("contract")
    world.runner.on_run["migrate"] = lambda: world.store.request_cancel(run.job.id)
    jobs.execute(run)
    job = world.store.read_job(run.job.id) or {}
    assert job["status"] == "succeeded", job["message"]
    assert world.store.read()["previous"] is None and world.rpc.calls == [("stop", "shop_blue")]


def test_a_rollback_target_that_cannot_be_stopped_is_logged(world: World) -> None:
    world.rpc.refuse[("stopProcess", "shop_blue")] = Faults.FAILED
    job = world.job("contract")
    assert job["status"] == "succeeded"
    assert "could not stop shop_blue: cannot stop shop_blue" in world.log(job)
    assert world.store.read()["previous"] is None


def test_a_contract_without_a_previous_color_stops_nothing(world: World) -> None:
    world.store.update(previous=None)
    job = world.job("contract")
    assert "rollback target none cleared" in job["message"] and world.rpc.calls == []


# --------------------------------------------------------------------------------------------
# the listener runs it once the window passed


def worker(world: World) -> AppWorker:
    return AppWorker(world.app, world.watch)


def test_the_contract_waits_for_the_window_then_runs_as_a_job(world: World) -> None:
    world.store.update(watch={"color": "green", "previous": "blue", "since": 1.0, "until": 9e9, "job": 7})
    worker(world).contract_due(world.store)
    assert [j["kind"] for j in world.store.jobs()] == []
    world.store.update(watch=None)
    worker(world).contract_due(world.store)
    (job,) = world.store.jobs()
    assert (job["kind"], job["status"], job["who"]) == ("contract", "succeeded", "bluegreen (after the watch window)")
    assert world.store.read()["contract"] is None and world.rpc.calls == [("stop", "shop_blue")]


def test_a_contract_of_a_release_rolled_back_is_dropped_and_its_deploy_told(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.live("blue", previous=None, contract={"job": 7, "color": "green", "migrations": ["shop.0003_drop"]})
    worker(world).contract_due(world.store)
    assert world.store.jobs() == [] and world.store.read()["contract"] is None
    assert "contract migrations dropped: the release is not live" in world.store.read_log(7)[0]
    assert "shop: contract migrations of job 7 dropped: the release is not live" in capsys.readouterr().err


def test_a_stopping_listener_runs_no_contract(world: World) -> None:
    w = worker(world)
    w.stopping.set()
    w.contract_due(world.store)
    assert world.store.jobs() == [] and world.store.read()["contract"]["color"] == "green"


def test_with_contract_manual_the_listener_leaves_it_to_a_contract_job(tmp_path: Path, monkeypatch) -> None:
    """A fleet on one database runs the contract once every host serves the new release: not on one host's timer."""
    w = World(tmp_path, monkeypatch, contract="manual")
    w.live("green", previous="blue", contract={"job": 7, "color": "green", "migrations": ["shop.0003_drop"]})
    worker(w).contract_due(w.store)
    assert w.store.jobs() == [] and w.store.read()["contract"]["color"] == "green"  # waits, past the window
    job = w.job("contract")  # as `bluegreen contract shop` queues it
    assert job["status"] == "succeeded", job["message"]
    assert w.store.read()["contract"] is None and w.store.read()["previous"] is None
