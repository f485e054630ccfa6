"""Releases in the sequences: a build beside both colors, a start that waits for the window, rollback --to any
kept release, restart of the live one; against the fakes (fakes.py), asserted as a user would see them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fakes import COMMIT, OTHER, World, failed_step, step_names

THIRD = "beef000" + "0" * 33


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """blue live and green its warm rollback target (both before releases), no watch window."""
    w = World(tmp_path, monkeypatch, build="test", watch="0")
    w.runner.refs["v3"] = THIRD
    w.live("blue", previous="green")
    return w


def release_of(world: World, color: str) -> str:
    """The release folder a color's root leads to."""
    return os.path.basename(os.path.realpath(world.color(color).root))


def three_deploys(world: World) -> list[dict]:
    done = [world.job("deploy", {"ref": ref}) for ref in ("main", "v2", "v3")]
    assert [j["status"] for j in done] == ["succeeded"] * 3, [j["message"] for j in done]
    return done


def test_a_deploy_in_a_watch_window_builds_at_once_and_only_its_start_waits(world: World) -> None:
    until = time.time() + 600
    world.store.update(watch={"color": "blue", "previous": "green", "since": time.time(), "until": until, "job": 9})
    run = world.new_run("deploy")
    from supervisor_bluegreen.listener import jobs

    thread = threading.Thread(target=jobs.execute, args=(run,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while "waiting for the watch window of job 9" not in world.store.read_log(run.job.id)[0]:
            assert time.monotonic() < deadline, world.store.read_log(run.job.id)[0]
            time.sleep(0.02)
        # built (its tests ran), recorded as a release; green, the window's way back, untouched and running
        assert world.runner.ran("test") and world.rpc.calls == []
        assert world.store.read()["previous"] == "green" and world.store.read()["releases"]
        assert (world.store.read_job(run.job.id) or {})["waiting_for"] == 9
    finally:
        world.store.update(watch=None)
        thread.join(10)
    job = world.store.read_job(run.job.id) or {}
    assert job["status"] == "succeeded", job["message"]
    assert world.rpc.calls == [("stop", "shop_green"), ("start", "shop_green")]
    assert release_of(world, "green") == job["release"]


def test_three_deploys_then_rollback_to_the_first_starts_it_again_without_a_build(world: World) -> None:
    first, second, third = three_deploys(world)
    assert (release_of(world, "green"), release_of(world, "blue")) == (third["release"], second["release"])
    built = len(world.runner.ran("test"))
    world.rpc.calls.clear()
    job = world.job("rollback", {"to": COMMIT[:7]})
    assert job["status"] == "succeeded", job["message"]
    assert job["message"].startswith(f"shop: rolled back to {COMMIT[:7]} (release {first['release']})")
    assert step_names(job) == ["reconcile", "choose release", "drain", "point", "start", "health gate", "switch",
                               "verify", "record"]  # fmt: skip
    # the idle color (blue, on the second release) now runs the first; nothing was built or migrated
    assert release_of(world, "blue") == first["release"] and world.links() == world.color("blue").socket
    assert world.rpc.calls == [("stop", "shop_blue"), ("start", "shop_blue")]
    assert len(world.runner.ran("test")) == built and world.runner.ran("migrate") == []
    state = world.store.read()
    assert (state["live"], state["previous"]) == ("blue", "green")
    assert (job["commit"], job["release"]) == (COMMIT, first["release"])
    again = world.job("rollback", {"to": "-1"})  # from the first release there is none before it
    assert again["status"] == "failed" and "only 0 kept release(s) before the live one" in again["message"]


def test_rollback_to_a_release_older_than_an_applied_contract_is_refused_with_the_reason(world: World) -> None:
    _, second, _ = three_deploys(world)
    world.store.update(
        contracts=[{"at": time.time(), "job": 5, "release": second["release"], "migrations": ["shop.0003"]}]
    )
    world.rpc.calls.clear()
    job = world.job("rollback", {"to": COMMIT[:7]})
    assert job["status"] == "failed" and failed_step(job) == "choose release"
    assert "contract migrations of a later release were applied after it (shop.0003)" in job["message"]
    assert world.rpc.calls == [] and world.store.read()["live"] == "green"
    assert world.job("rollback", {"to": OTHER[:7]})["status"] == "succeeded"  # the contract's own release may


def test_a_plain_rollback_with_no_warm_color_starts_the_release_before_the_live_one(world: World) -> None:
    _, second, _ = three_deploys(world)
    world.store.update(previous=None)  # e.g. a contract migration cleared and stopped it
    job = world.job("rollback")
    assert job["status"] == "succeeded", job["message"]
    assert release_of(world, "blue") == second["release"] and world.store.read()["live"] == "blue"


def test_restart_starts_the_live_release_in_the_idle_color_and_switches(world: World) -> None:
    deployed = world.job("deploy")
    assert deployed["status"] == "succeeded", deployed["message"]
    world.rpc.calls.clear()
    job = world.job("restart")
    assert job["status"] == "succeeded", job["message"]
    assert job["message"].startswith(f"shop: restarted {COMMIT[:7]} in blue (was green)")
    assert release_of(world, "blue") == release_of(world, "green") == deployed["release"]
    assert world.rpc.calls == [("stop", "shop_blue"), ("start", "shop_blue")]
    assert world.store.read()["live"] == "blue" and world.runner.ran("test") == [world.runner.ran("test")[0]]


def test_restart_before_any_release_says_to_deploy_once(world: World) -> None:
    job = world.job("restart")
    assert job["status"] == "failed" and "blue runs no release yet" in job["message"]
    assert world.rpc.calls == []


def test_a_restart_is_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="test")
    world.live("blue")
    assert world.job("deploy")["status"] == "succeeded"
    world.store.update(watch=None)  # the deploy's window passed
    job = world.job("restart")
    assert job["status"] == "succeeded", job["message"]
    window = world.store.read()["watch"]
    assert (window["color"], window["previous"], window["job"]) == ("blue", "green", job["id"])


def test_old_releases_are_pruned_but_never_one_a_color_runs(world: World) -> None:
    for ref in ("main", "v2", "v3", "main", "v2", "v3", "main"):
        assert world.job("deploy", {"ref": ref})["status"] == "succeeded"
    kept = [r["id"] for r in world.store.read()["releases"]]
    assert len(kept) == 5
    on_disk = sorted(n for n in os.listdir(world.app.deploy.releases) if not n.startswith("before-"))  # type: ignore[union-attr]
    assert world.runner.ran("rm")  # the fakes remove nothing: what was asked is what counts
    removed = [name for argv in world.runner.ran("rm") for name in argv[3:]]
    assert all(os.path.basename(p) not in (release_of(world, "blue"), release_of(world, "green")) for p in removed)
    assert set(kept) <= set(on_disk)
