"""Worker programs: stopped, started again, confirmed on the live checkout (workers.py, hand_over_workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import World, failed_step, with_worker
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.host import links, workers
from supervisor_bluegreen.host.supervisor import ShuttingDown
from supervisor_bluegreen.listener.golive import hand_over_workers
from supervisor_bluegreen.listener.run import StepFailed


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """green live, its worker RUNNING from the live_root link (supervisord's directory=)."""
    return with_worker(tmp_path, monkeypatch, "green", "blue", worker_timeout="1")


def restart(world: World, timeout: float = 1.0, settle: float = 0.0) -> list[str]:
    """workers.restart of shop_worker onto green; the lines it logged (and "stopped" where its hook ran)."""
    lines: list[str] = []

    def stopped() -> None:
        lines.append(f"stopped ({world.rpc.states['shop_worker']})")

    workers.restart(
        world.sup, world.watch, "shop_worker", world.color("green"), timeout, lines.append, stopped, settle=settle
    )
    return lines


def test_a_worker_is_stopped_started_and_seen_in_the_live_checkout(world: World) -> None:
    lines = restart(world)
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]
    assert lines[0] == "stopped (STOPPED)"  # the hook runs between the stop and the start
    assert lines[1].startswith("worker shop_worker pid ") and lines[1].endswith(" runs green's checkout")


def test_a_stop_begun_by_a_killed_listener_is_waited_for(world: World) -> None:
    world.rpc.later["shop_worker"] = ["STOPPING"]
    restart(world)
    assert world.rpc.calls == [("stop", "shop_worker"), ("start", "shop_worker")]


def test_a_worker_stuck_in_stopping_is_an_error(world: World) -> None:
    world.rpc.later["shop_worker"] = ["STOPPING"] * 10
    with pytest.raises(workers.WorkerError, match=r"worker shop_worker is still STOPPING after 0\.3 s"):
        restart(world, timeout=0.3)
    assert world.rpc.started() == []


@pytest.mark.parametrize("state", ["FATAL", "BACKOFF", "EXITED"])
def test_a_worker_that_crashes_on_start_did_not_come_back(world: World, state: str) -> None:
    world.rpc.crash_on_start["shop_worker"] = state
    with pytest.raises(workers.WorkerError, match=f"worker shop_worker did not come back: {state}"):
        restart(world)


def test_a_worker_that_never_leaves_starting_did_not_come_back(world: World) -> None:
    world.rpc.crash_on_start["shop_worker"] = "STARTING"
    with pytest.raises(workers.WorkerError, match="did not come back: STARTING"):
        restart(world, timeout=0.3)


def test_a_refused_start_is_a_worker_error_and_a_shutdown_is_not(world: World) -> None:
    world.rpc.refuse[("startProcess", "shop_worker")] = Faults.SPAWN_ERROR
    with pytest.raises(workers.WorkerError, match="cannot start shop_worker"):
        restart(world)
    world.rpc.refuse[("startProcess", "shop_worker")] = Faults.SHUTDOWN_STATE
    with pytest.raises(ShuttingDown):
        restart(world)


def test_a_worker_running_other_code_is_named(world: World) -> None:
    world.rpc.dirs["shop_worker"] = str(world.tmp / "blue")  # its directory is a color's, not the link
    with pytest.raises(workers.WorkerError, match="set its directory to the live_root link") as caught:
        restart(world)
    assert f"runs in {world.tmp}/blue, not in green's checkout {world.tmp}/green" in str(caught.value)


def test_a_worker_whose_process_is_gone_is_named(world: World) -> None:
    world.rpc.pids["shop_worker"] = 2**22 + 12345  # above pid_max: no such process
    with pytest.raises(workers.WorkerError, match=r"worker shop_worker \(pid 4206649\): cannot read its directory"):
        restart(world)


# --------------------------------------------------------------------------------------------
# hand_over_workers: the step of deploy, switch, rollback and recover


def test_the_workers_step_follows_whatever_is_live(world: World) -> None:
    run = world.new_run("switch")
    links.point(world.app, world.color("blue"))  # the watch window's rollback moved traffic before the step ran
    hand_over_workers(run, world.color("green"))
    log = world.log(world.store.read_job(run.job.id) or {})
    assert "green is no longer live: the workers follow blue" in log and "runs blue's checkout" in log
    assert world.store.read()["workers_restarting"] is None


def test_a_worker_that_fails_after_traffic_moved_fails_the_step_and_is_left_to_the_rollback(world: World) -> None:
    run = world.new_run("switch")
    world.rpc.crash_on_start["shop_worker"] = "FATAL"
    # the watch window's automatic rollback moves traffic while the worker starts
    world.rpc.on_start["shop_worker"] = lambda: links.point(world.app, world.color("blue"))
    with pytest.raises(StepFailed) as caught:
        hand_over_workers(run, world.color("green"))
    said = "did not come back: FATAL; traffic moved back to blue meanwhile: its rollback restarts the workers there"
    assert said in str(caught.value)
    assert world.store.read()["workers_restarting"] == "green"


def test_a_worker_that_exits_after_running_fails_the_step_with_its_stderr(world: World) -> None:
    world.rpc.exits["shop_worker"] = (2, "EXITED")  # RUNNING (its state, its pid read), then gone at the next look
    world.rpc.stderr["shop_worker"] = "cut line\nboot\nkombu.exceptions.OperationalError: no broker\n"
    world.store.update(workers_restarting="green")
    job = world.job("recover")
    assert job["status"] == "failed" and failed_step(job) == "workers"
    assert "worker shop_worker (pid " in job["message"] and "exited" in job["message"]
    assert "after it was RUNNING (now EXITED)" in job["message"]
    assert "--- shop_worker stderr (errors, then the last lines) ---" in job["message"]
    assert "OperationalError: no broker" in job["message"]


def test_a_worker_restarted_by_supervisor_meanwhile_is_no_success(world: World) -> None:
    lines: list[str] = []
    original = world.rpc.getProcessInfo

    def new_pid_after_first(program: str) -> dict[str, Any]:  # RUNNING still, but started again by supervisord
        info = original(program)
        lines.append(program)
        return {**info, "pid": info["pid"] + (1 if len(lines) > 3 else 0)}

    world.rpc.getProcessInfo = new_pid_after_first  # type: ignore[method-assign]
    with pytest.raises(workers.WorkerError, match=r"exited .* after it was RUNNING \(now RUNNING\)"):
        restart(world, settle=5.0)


def test_a_worker_that_stays_up_passes_after_settling(world: World) -> None:
    lines = restart(world, settle=0.3)
    assert lines[-1].endswith("runs green's checkout, up for 0.3 s")


def test_the_window_sees_a_crash_of_a_worker_as_the_colors(world: World) -> None:
    assert not world.watch.crashed_since("shop_worker", 0.0)
    world.rpc.exits["shop_worker"] = (0, "BACKOFF")
    world.rpc.states["shop_worker"] = "STOPPED"
    world.rpc.startProcess("shop_worker", False)
    world.rpc.getProcessInfo("shop_worker")
    assert world.watch.crashed_since("shop_worker", 0.0) == "BACKOFF"


def test_an_app_without_workers_restarts_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch)
    world.live("green", previous="blue")
    hand_over_workers(world.new_run("switch"), world.color("green"))
    assert world.rpc.calls == [] and "workers_restarting" not in world.store.read()


def test_a_worker_that_fails_fails_the_step_and_keeps_the_marker(world: World) -> None:
    world.rpc.crash_on_start["shop_worker"] = "FATAL"
    world.store.update(workers_restarting="green")
    job = world.job("recover")
    assert job["status"] == "failed" and failed_step(job) == "workers"
    assert "worker shop_worker did not come back: FATAL" in job["message"]
    assert world.store.read()["workers_restarting"] == "green"
