"""switch_to(): reconcile, check target, health gate, switch, verify, record, workers, against fakes.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import World, failed_step, step_names, with_worker
from test_deploy_sequence import frozen_verify

from supervisor_bluegreen.host import links


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """blue live, green RUNNING beside it."""
    w = World(tmp_path, monkeypatch)
    w.live("blue", previous="green")
    return w


def test_a_switch_moves_traffic_to_the_running_color_and_opens_a_window(world: World) -> None:
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    first, watching = job["message"].split("\n")
    assert first.startswith("shop: green live (was blue) in ")
    assert watching.startswith("watching green for 60 s: a crash or 3 failed probes in a row switch back to blue")
    assert step_names(job) == ["reconcile", "check target", "health gate", "switch", "verify", "record"]
    assert world.links() == world.color("green").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("green", "blue", None)
    assert (state["watch"]["color"], state["watch"]["previous"], state["watch"]["job"]) == ("green", "blue", job["id"])
    assert (job["color"], job["watch"]["state"]) == ("green", "running")
    assert world.rpc.calls == []  # a switch never starts or stops a color
    log = world.log(job)
    assert "probe: ok status 200" in log and "from green" in log
    assert world.probes.targets.count(world.app.public_url) == 1


def test_a_switch_to_a_named_color_that_is_live_is_refused(world: World) -> None:
    job = world.job("switch", {"wanted": "blue"})
    assert (
        job["status"] == "failed"
        and job["message"] == "shop: switch failed: blue is already live\nblue live, unchanged"
    )


def test_the_first_switch_must_name_a_color(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch)
    job = world.job("switch")
    assert "no color is live yet: name the first one (one of blue, green)" in job["message"]
    world.rpc.states["shop_blue"] = "RUNNING"
    job = world.job("switch", {"wanted": "blue"})
    assert job["status"] == "succeeded" and job["message"].startswith("shop: blue live in ")
    assert world.store.read()["watch"] is None  # nothing to go back to: no window


def test_a_switch_to_a_color_that_is_not_running_is_refused_before_any_probe(world: World) -> None:
    world.rpc.states["shop_green"] = "STOPPED"
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "check target"
    assert job["message"] == "shop: switch failed: green (shop_green) is STOPPED, not RUNNING\nblue live, unchanged"
    assert world.probes.targets == [] and world.links() == world.color("blue").socket


def test_a_switch_to_a_color_that_does_not_answer_is_refused_by_the_gate(world: World) -> None:
    world.probes.sick.add("green")
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "health gate"
    assert "green is not healthy: not healthy within 0.1 s: last probe status 500, expected 200" in job["message"]
    assert world.links() == world.color("blue").socket
    assert world.app.public_url not in world.probes.targets


def test_a_switch_nginx_does_not_follow_is_switched_back(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen_verify(monkeypatch)
    world.probes.public_down = True
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "verify"
    assert "switched back to blue" in job["message"] and job["message"].endswith("blue live, unchanged")
    assert world.links() == world.color("blue").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("blue", "green", None)


def test_links_that_cannot_be_moved_fail_the_switch_and_stay(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    real = links.atomic_symlink

    def refused(link: str, target: str, owner: tuple[int, int] | None = None) -> None:
        if target == world.color("green").socket:
            raise PermissionError(13, "Permission denied", link)
        real(link, target, owner)

    monkeypatch.setattr(links, "atomic_symlink", refused)
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "switch"
    assert "could not switch: [Errno 13] Permission denied: " in job["message"] and "links restored" in job["message"]
    assert world.links() == world.color("blue").socket and world.store.read()["switching"] is None


def test_a_live_link_to_no_color_is_refused(world: World) -> None:
    os.unlink(world.app.live_socket)
    os.symlink("/elsewhere.sock", world.app.live_socket)
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "reconcile"
    assert "refusing to act: " in job["message"] and "no color is surely live" in job["message"]


def test_a_switch_restarts_the_workers_on_the_new_live_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = with_worker(tmp_path, monkeypatch, "blue", "green")
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    assert step_names(job)[-1] == "workers"
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]
    assert "worker shop_worker pid" in world.log(job) and "runs green's checkout" in world.log(job)
    assert world.store.read()["workers_restarting"] is None


def test_a_verify_whose_switch_back_fails_says_so(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen_verify(monkeypatch)
    world.probes.public_down = True
    real = links.atomic_symlink

    def no_way_back(link: str, target: str, owner: tuple[int, int] | None = None) -> None:
        if target == world.color("blue").socket and world.links() == world.color("green").socket:
            raise PermissionError(13, "Permission denied", link)
        real(link, target, owner)

    monkeypatch.setattr(links, "atomic_symlink", no_way_back)
    job = world.job("switch")
    assert failed_step(job) == "verify"
    assert (
        "answered status 502, expected 200; switching back failed too: [Errno 13] Permission denied" in job["message"]
    )
    assert job["message"].endswith("green live")  # said as it is: not "unchanged"
    assert world.store.read()["switching"] is None


def test_a_target_that_dies_right_after_its_check_is_refused_as_crashed(world: World) -> None:
    """A crash between "check target" and the first probe counts: the gate says why, at once."""
    answer = world.rpc.getProcessInfo

    def dies_after_answering(program: str) -> dict:
        info = answer(program)
        if program == "shop_green" and info["statename"] == "RUNNING":
            world.rpc.states[program] = "EXITED"
            world.watch.update(program, "EXITED")  # supervisord's event, before the gate starts
        return info

    world.rpc.getProcessInfo = dies_after_answering
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "health gate"
    assert "green is not healthy: shop_green went EXITED" in job["message"], job["message"]
    assert world.probes.targets == [] and world.links() == world.color("blue").socket
