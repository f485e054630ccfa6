"""A color's own workers handed over (golive.hand_over_workers, workers.hand_over), against fakes.py.

The new live color's worker starts, runs its checkout, answers its ping and stays up before the other
color's gets its warm shutdown: there is always a consumer. A new worker that fails is stopped and the
old one keeps consuming; the command that moved traffic has returned before any of this.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import World, failed_step, step_names, with_own_workers

from supervisor_bluegreen.host import links, workers
from supervisor_bluegreen.shared import config


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """blue live with its worker RUNNING; green RUNNING (web only), its worker STOPPED."""
    return with_own_workers(tmp_path, monkeypatch, "blue")


def test_a_switch_starts_the_new_colors_worker_before_it_stops_the_old_ones(world: World) -> None:
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    assert step_names(job)[-2:] == ["record", "workers"]
    assert world.rpc.calls == [("start", "shop_worker_green"), ("stop", "shop_worker_blue")]
    assert (world.rpc.states["shop_worker_green"], world.rpc.states["shop_worker_blue"]) == ("RUNNING", "STOPPED")
    assert job["live"] == job["message"] and job["message"].startswith("shop: green live (was blue) in ")
    log = world.log(job)
    assert "worker shop_worker_green pid " in log and " runs green's checkout" in log
    assert "worker shop_worker_blue stopped (warm shutdown) in " in log
    assert log.index("runs green's checkout") < log.index("shop_worker_blue stopped")
    assert world.store.read()["workers_restarting"] is None


def test_the_command_is_told_traffic_moved_before_the_handover_begins(world: World) -> None:
    seen: list[str] = []
    world.rpc.on_start["shop_worker_green"] = lambda: seen.append(
        (world.store.read_job(world.last_run.job.id) or {}).get("live", "")  # type: ignore[union-attr]
    )
    job = world.job("switch")
    assert job["status"] == "succeeded" and seen and seen[0].startswith("shop: green live (was blue)")


def test_a_new_worker_that_crashes_is_stopped_and_the_old_one_keeps_consuming(world: World) -> None:
    world.rpc.crash_on_start["shop_worker_green"] = "FATAL"
    world.rpc.stderr["shop_worker_green"] = "cut\nImportError: cannot import name 'gone'\n"
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "workers"
    assert "worker shop_worker_green did not come back: FATAL" in job["message"]
    assert "the watch window rolls back to blue, workers included" in job["message"]
    assert "ImportError: cannot import name 'gone'" in job["message"]
    assert world.rpc.states["shop_worker_blue"] == "RUNNING" and ("stop", "shop_worker_blue") not in world.rpc.calls
    assert world.store.read()["workers_restarting"] == "green"  # a restarted listener tries again


def test_the_old_worker_stops_only_once_the_new_one_answers_its_ping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ping = "%(python)s -m celery -A shop inspect ping --destination %(worker)s@%(hostname)s"
    world = with_own_workers(tmp_path, monkeypatch, "blue", worker_ping=ping, worker_timeout="5")
    world.runner.pings = [1, 1]  # "No nodes replied" twice: Celery still connecting
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    asked = world.runner.ran("ping")
    assert len(asked) == 3 and asked[0][-1].startswith("shop_worker_green@") and asked[0][0] == "python3"
    assert "runs green's checkout, answers its ping" in world.log(job)
    assert world.rpc.states["shop_worker_blue"] == "STOPPED"


def test_the_old_worker_is_told_to_stop_consuming_before_its_warm_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiesce = "celery control cancel_consumer shop --destination %(worker)s@%(hostname)s"
    world = with_own_workers(tmp_path, monkeypatch, "blue", worker_quiesce=quiesce)
    asked: list[str] = []
    world.rpc.on_start["shop_worker_green"] = lambda: asked.append("green started")
    original = world.rpc.stopProcess

    def stop(program: str, wait: bool = True) -> bool:
        asked.append(f"{program} stopped after {len(world.runner.ran('cancel_consumer'))} quiesce")
        return original(program, wait)

    world.rpc.stopProcess = stop  # type: ignore[method-assign]
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    [argv] = world.runner.ran("cancel_consumer")
    assert argv[-1].startswith("shop_worker_blue@")  # the old color's node, never the new one
    assert asked == ["green started", "shop_worker_blue stopped after 1 quiesce"]


def test_a_quiesce_that_fails_still_stops_the_old_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = with_own_workers(tmp_path, monkeypatch, "blue", worker_quiesce="celery control ping cancel %(worker)s")
    world.runner.pings = [1]  # its argv holds "ping": the fake answers it as one, "no reply"
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    assert "worker shop_worker_blue did not confirm it stopped consuming (worker_quiesce)" in world.log(job)
    assert world.rpc.states["shop_worker_blue"] == "STOPPED"


def test_a_new_worker_that_never_answers_its_ping_is_stopped_and_the_old_one_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = with_own_workers(tmp_path, monkeypatch, "blue", worker_ping="celery inspect ping -d %(worker)s",
                             worker_timeout="1")  # fmt: skip
    world.runner.pings = [1] * 100
    job = world.job("switch")
    assert job["status"] == "failed" and failed_step(job) == "workers"
    assert "worker shop_worker_green (pid " in job["message"] and "did not answer its ping within 1 s" in job["message"]
    assert (world.rpc.states["shop_worker_green"], world.rpc.states["shop_worker_blue"]) == ("STOPPED", "RUNNING")


def test_a_rollback_hands_the_workers_back(world: World) -> None:
    assert world.job("switch")["status"] == "succeeded"
    world.rpc.calls.clear()
    job = world.job("rollback")
    assert job["status"] == "succeeded", job["message"]
    assert world.rpc.calls[-2:] == [("start", "shop_worker_blue"), ("stop", "shop_worker_green")]
    assert (world.rpc.states["shop_worker_blue"], world.rpc.states["shop_worker_green"]) == ("RUNNING", "STOPPED")


def test_a_new_worker_already_on_its_colors_checkout_is_kept(world: World) -> None:
    """A listener killed between the new worker's start and the old one's stop: the restart finishes it."""
    links.point(world.app, world.color("green"))
    world.rpc.startProcess("shop_worker_green")  # RUNNING, in green's checkout
    world.rpc.calls.clear()
    world.store.update(live="green", workers_restarting="green")
    job = world.job("recover")
    assert job["status"] == "succeeded", job["message"]
    assert world.rpc.calls == [("stop", "shop_worker_blue")]
    assert "worker shop_worker_green pid " in world.log(job) and "already runs green's checkout" in world.log(job)


def test_the_watch_window_counts_a_crash_of_the_live_colors_own_worker(world: World) -> None:
    assert world.app.color("blue").workers == ("shop_worker_blue",)
    assert world.app.has_workers and world.app.deploy is not None and world.app.deploy.workers == ()


def test_worker_argv_names_the_worker_and_this_host() -> None:
    argv = ("py", "-m", "celery", "inspect", "ping", "--destination", "%(worker)s@%(hostname)s")
    assert workers.worker_argv(argv, "shop_celery_green", "vm1")[-1] == "shop_celery_green@vm1"


def test_worker_ping_is_refused_without_a_colors_own_worker_and_with_unknown_keys(tmp_path: Path) -> None:
    from conftest import shop_config

    text = shop_config(tmp_path, repo=f"{tmp_path}/repo.git", workers="shop_celery",
                       worker_ping="celery inspect ping -d %(node)s")  # fmt: skip
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text)
    said = str(caught.value)
    assert "worker_ping: asks a color's own workers (workers = NAME_%(color)s): none set" in said
    assert "cannot expand '-d'" not in said and "%(node)s" in said
