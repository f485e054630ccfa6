"""rollback(): a person's (a gated switch back) and the watch window's automatic one, against fakes.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import World, failed_step, step_names, with_worker


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """green live after a deploy, blue its rollback target, still RUNNING."""
    w = World(tmp_path, monkeypatch)
    w.live("green", previous="blue")
    return w


def automatic(reason: str = "shop_green went EXITED", failed: str = "green") -> dict[str, str]:
    return {"reason": reason, "failed": failed}


def test_a_rollback_is_a_gated_switch_back_to_the_previous_color(world: World) -> None:
    job = world.job("rollback")
    assert job["status"] == "succeeded", job["message"]
    assert job["message"].startswith("shop: blue live (was green) in ")
    assert step_names(job) == ["reconcile", "check target", "health gate", "switch", "verify", "record"]
    assert world.links() == world.color("blue").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["watch"]) == ("blue", "green", None)  # a rollback opens no window
    assert world.rpc.calls == []
    assert world.events() == [("rollback", f":leftwards_arrow_with_hook: {job['message']}")]


def test_nothing_to_roll_back_to(world: World) -> None:
    world.store.update(previous=None)
    job = world.job("rollback")
    assert job["status"] == "failed" and step_names(job) == []
    assert (
        job["message"]
        == "shop: rollback failed: nothing to roll back to: no previous color recorded\ngreen live, unchanged"
    )
    assert world.links() == world.color("green").socket


def test_the_automatic_rollback_moves_traffic_at_once_and_stops_the_failed_color(world: World) -> None:
    world.rpc.stderr["shop_green"] = "cut\nTraceback (most recent call last):\nRuntimeError: boom\n"
    world.store.update(watch={"color": "green", "previous": "blue", "since": 1.0, "until": 2.0, "job": 1})
    job = world.job("rollback", automatic())
    assert job["status"] == "succeeded", job["message"]
    assert job["message"] == "shop: rolled back automatically to blue: shop_green went EXITED"
    assert step_names(job) == ["live color", "check target", "switch", "record", "probe", "stop failed color"]
    assert world.links() == world.color("blue").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["watch"]) == ("blue", None, None)  # the color it left failed
    assert world.rpc.calls == [("stop", "shop_green")]
    log = world.log(job)
    assert "rolling back automatically: shop_green went EXITED" in log
    assert "--- shop_green stderr (errors, then the last lines) ---" in log and "RuntimeError: boom" in log
    assert "blue: ok status 200" in log
    assert world.probes.targets == [world.color("blue").socket]  # no gate, no public verify: every moment counts
    assert world.events() == [
        ("rollback", ":leftwards_arrow_with_hook: shop: rolled back automatically to blue: shop_green went EXITED")
    ]


def test_an_automatic_rollback_of_a_color_no_longer_live_does_nothing(world: World) -> None:
    job = world.job("rollback", automatic(failed="blue"))
    assert job["status"] == "failed" and step_names(job) == ["live color"]
    assert "blue is no longer live (green is): nothing to roll back" in job["message"]
    assert world.links() == world.color("green").socket and world.rpc.calls == []


def test_an_automatic_rollback_to_a_color_that_is_not_running_is_refused(world: World) -> None:
    world.rpc.states["shop_blue"] = "FATAL"
    job = world.job("rollback", automatic())
    assert job["status"] == "failed" and failed_step(job) == "check target"
    assert "blue (shop_blue) is FATAL, not RUNNING" in job["message"]
    assert world.links() == world.color("green").socket and world.store.read()["previous"] == "blue"


def test_a_previous_color_that_does_not_answer_either_is_reported(world: World) -> None:
    world.probes.sick.add("blue")
    job = world.job("rollback", automatic())
    assert job["status"] == "failed" and failed_step(job) == "probe"
    assert "blue is live again but does not answer either: FAIL status 500" in job["message"]
    assert job["message"].endswith("blue live")  # traffic moved: not "unchanged"
    assert world.store.read()["last_health"]["ok"] is False


def test_a_failed_color_that_cannot_be_stopped_is_logged(world: World) -> None:
    world.rpc.states["shop_green"] = "EXITED"  # supervisord answers NOT_RUNNING: nothing to stop, no failure
    job = world.job("rollback", automatic())
    assert job["status"] == "succeeded"
    world.live("green", previous="blue")
    world.rpc.refuse[("stopProcess", "shop_green")] = 2  # Faults.FAILED
    job = world.job("rollback", automatic())
    assert job["status"] == "succeeded" and "could not stop shop_green: cannot stop shop_green" in world.log(job)


def test_an_automatic_rollback_restarts_the_workers_on_the_old_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = with_worker(tmp_path, monkeypatch, "green", "blue")
    job = world.job("rollback", automatic())
    assert job["status"] == "succeeded", job["message"]
    assert step_names(job)[-1] == "workers"
    assert world.rpc.calls == [("stop", "shop_green"), ("stop", "shop_worker"), ("start", "shop_worker")]
    assert "runs blue's checkout" in world.log(job)


def test_a_manual_rollback_restarts_the_workers_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = with_worker(tmp_path, monkeypatch, "green", "blue")
    job = world.job("rollback")
    assert job["status"] == "succeeded" and step_names(job)[-1] == "workers"
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]


def test_an_automatic_rollback_refuses_a_live_link_to_no_color(world: World) -> None:
    os.unlink(world.app.live_socket)
    os.symlink("/elsewhere.sock", world.app.live_socket)
    job = world.job("rollback", automatic())
    assert job["status"] == "failed" and failed_step(job) == "live color"
    assert job["message"].startswith("shop: rollback failed: refusing to act: ")
    assert "\nno color is surely live: " in job["message"] and world.rpc.calls == []
