"""The watch window's guard (guard.py WindowGuard.guard): crash or failed probes roll back by themselves,
a supervisord on its way out does not, a window that holds passes; against fakes.py."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from fakes import World, step_names, with_worker
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.host import links
from supervisor_bluegreen.listener.guard import WindowGuard
from supervisor_bluegreen.listener.loop import AppWorker
from supervisor_bluegreen.shared.model import Window


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """green went live by deploy job 1 a second ago; blue, its rollback target, RUNNING; probes every 0.05 s."""
    w = World(tmp_path, monkeypatch, watch_interval="0.05")
    w.live("green", previous="blue")
    w.store.enqueue("deploy", {}, "test")
    return w


class Guarded:
    """A guard beside an app worker, its log kept."""

    def __init__(
        self, world: World, seconds: float = 60.0, color: str = "green", ago: float = 1.0, previous: str = "blue"
    ) -> None:
        self.world = world
        self.worker = AppWorker(world.app, world.watch)
        self.lines: list[str] = []
        self.guard = WindowGuard(self.worker, self.lines.append)
        now = time.time()
        self.window = Window(color, previous, now - ago, now - ago + seconds, 1)  # opened ``ago`` s before
        world.store.update(watch=self.window.record())

    def run(self) -> None:
        self.guard.guard(self.world.store, self.window)

    def deploy_job(self) -> dict:
        return self.world.store.read_job(1) or {}

    def deploy_log(self) -> str:
        return self.world.store.read_log(1)[0]

    def kinds(self) -> list[str]:
        return [job["kind"] for job in self.world.store.jobs()]


def test_a_crash_of_the_new_color_rolls_back_at_once(world: World) -> None:
    g = Guarded(world)
    world.watch.update("shop_green", "EXITED")
    g.run()
    assert g.kinds() == ["deploy", "rollback"]
    rollback = world.store.jobs()[1]
    assert (rollback["status"], rollback["who"]) == ("succeeded", "bluegreen watch")
    assert rollback["args"] == {"reason": "shop_green went EXITED", "failed": "green", "to": ""}
    assert step_names(rollback) == ["live color", "check target", "switch", "record", "probe", "stop failed color"]
    assert world.links() == world.color("blue").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["watch"]) == ("blue", None, None)
    assert world.rpc.calls == [("stop", "shop_green")]
    assert g.deploy_job()["watch"] == {"state": "rolled back", "reason": "shop_green went EXITED"}
    assert "rolling back automatically: shop_green went EXITED" in g.deploy_log()
    assert re.fullmatch(r"shop: watching green for 5[89] s more", g.lines[0])
    assert "rolled back automatically: shop_green went EXITED" in g.lines[-1]
    assert g.worker.wake.is_set()  # a deploy that waited for the window may go on


def test_a_crash_of_a_worker_rolls_back_workers_included(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = with_worker(tmp_path, monkeypatch, "green", "blue", watch_interval="0.05")
    world.store.enqueue("deploy", {}, "test")
    g = Guarded(world)
    world.watch.update("shop_worker", "BACKOFF")  # the new release's Celery dies after the deploy restarted it
    g.run()
    rollback = world.store.jobs()[1]
    assert rollback["args"]["reason"] == "shop_worker went BACKOFF" and rollback["status"] == "succeeded"
    assert world.links() == world.color("blue").socket
    assert "workers" in step_names(rollback)  # they follow blue again
    assert ("start", "shop_worker") in world.rpc.calls


def test_a_crash_before_the_window_opened_is_not_this_releases(world: World) -> None:
    world.watch.update("shop_green", "BACKOFF")  # an earlier release's crash
    time.sleep(0.01)
    g = Guarded(world, seconds=0.15, ago=0.0)
    g.run()
    assert g.kinds() == ["deploy"] and g.deploy_job()["watch"]["state"] == "passed"


def test_failed_probes_in_a_row_roll_back(world: World) -> None:
    g = Guarded(world)
    world.probes.sick.add("green")
    g.run()
    assert g.kinds() == ["deploy", "rollback"]
    reason = "3 health probes failed in a row, the last: status 500, expected 200"
    assert world.store.jobs()[1]["args"]["reason"] == reason
    assert g.deploy_job()["watch"] == {"state": "rolled back", "reason": reason}
    assert world.links() == world.color("blue").socket


@pytest.mark.parametrize("how", ["SHUTDOWN", "RESTARTING", "gone"])
def test_a_supervisord_on_its_way_out_is_no_crash_the_window_waits(world: World, how: str) -> None:
    g = Guarded(world)
    world.probes.sick.add("green")  # supervisord stops the new color itself: its probes fail
    world.rpc.gone = how == "gone"
    world.rpc.statename = "RUNNING" if how == "gone" else how
    g.run()
    assert g.kinds() == ["deploy"]  # no rollback job
    assert world.links() == world.color("green").socket
    assert Window.from_state(world.store.read()["watch"]) == g.window  # resumed on the next start
    assert "but supervisord is stopping: no rollback, the window waits" in g.lines[-2]
    assert g.lines[-1] == "shop: watch window suspended; it resumes when the listener is back"
    assert "watch" not in g.deploy_job()


def test_a_window_that_holds_passes(world: World) -> None:
    g = Guarded(world, seconds=1.2)
    g.run()
    assert g.kinds() == ["deploy"] and world.store.read()["watch"] is None
    assert g.deploy_job()["watch"] == {"state": "passed", "reason": ""}
    assert "watch: green held for 1.2 s" in g.deploy_log()
    assert world.probes.targets and set(world.probes.targets) == {world.color("green").socket}


def test_a_window_of_a_color_no_longer_live_ends_and_its_crash_rolls_nothing_back(world: World) -> None:
    links.point(world.app, world.color("blue"))
    g = Guarded(world)
    world.watch.update("shop_green", "EXITED")  # a person switched away; the color then stopped
    g.run()
    assert g.deploy_job()["watch"] == {"state": "ended", "reason": "green is no longer live"}
    assert world.store.read()["watch"] is None and g.kinds() == ["deploy"]


@pytest.mark.parametrize("where", ["color", "previous"])
def test_a_window_naming_no_color_is_dropped(world: World, where: str) -> None:
    g = Guarded(world, color="purple") if where == "color" else Guarded(world, previous="purple")
    world.watch.update("shop_green", "EXITED")
    g.run()
    assert g.deploy_job()["watch"] == {"state": "ended", "reason": "window dropped: 'purple'"}
    assert g.kinds() == ["deploy"] and world.links() == world.color("green").socket


def test_a_persons_switch_cuts_the_window_short(world: World) -> None:
    g = Guarded(world)
    world.store.enqueue("switch", {"wanted": "blue"}, "someone")
    g.guard.wake.set()  # the RPC's wake reached the listener
    g.run()
    assert g.deploy_job()["watch"] == {"state": "ended", "reason": "cut short by switch job 2"}
    assert world.links() == world.color("green").socket  # the switch job moves traffic, not the guard


def test_a_stopping_listener_suspends_the_window(world: World) -> None:
    g = Guarded(world)
    g.worker.stopping.set()
    g.run()
    assert Window.from_state(world.store.read()["watch"]) == g.window and g.kinds() == ["deploy"]
    assert g.lines[-1] == "shop: watch window suspended; it resumes when the listener is back"


def test_an_automatic_rollback_that_fails_ends_the_window_saying_why(world: World) -> None:
    g = Guarded(world)
    world.rpc.states["shop_blue"] = "FATAL"
    world.watch.update("shop_green", "FATAL")
    g.run()
    assert world.store.jobs()[1]["status"] == "failed"
    assert g.deploy_job()["watch"]["state"] == "ended"
    assert g.deploy_job()["watch"]["reason"].startswith(
        "automatic rollback failed: shop: rollback failed: blue (shop_blue) is FATAL, not RUNNING"
    )
    assert world.links() == world.color("green").socket and world.store.read()["watch"] is None


def test_an_automatic_rollback_interrupted_by_a_shutdown_leaves_the_window_to_resume(world: World) -> None:
    g = Guarded(world)
    world.rpc.refuse[("getProcessInfo", "shop_blue")] = Faults.SHUTDOWN_STATE
    world.watch.update("shop_green", "EXITED")
    g.run()
    assert world.store.jobs()[1]["status"] == "interrupted"
    assert Window.from_state(world.store.read()["watch"]) == g.window
    assert g.lines[-1] == "shop: automatic rollback interrupted; the window resumes on the next start"
    assert world.links() == world.color("green").socket


def test_a_resumed_window_waits_while_supervisord_is_still_starting_the_color(world: World) -> None:
    g = Guarded(world, seconds=1.3)
    world.rpc.later["shop_green"] = ["STARTING"]
    g.run()
    assert "shop: shop_green is STARTING; watching it once it runs" in g.lines
    assert g.deploy_job()["watch"]["state"] == "passed"


def test_a_window_whose_color_stops_being_live_midway_ends(world: World) -> None:
    g = Guarded(world)
    world.probes.hook = lambda: links.point(world.app, world.color("blue"))  # a person's links, between probes
    g.run()
    assert g.deploy_job()["watch"] == {"state": "ended", "reason": "green is no longer live"}
    assert g.kinds() == ["deploy"]


def test_a_live_link_broken_midway_ends_the_window_without_a_rollback(world: World) -> None:
    g = Guarded(world)

    def broken() -> None:
        os.unlink(world.app.live_socket)
        os.symlink("/elsewhere.sock", world.app.live_socket)

    world.probes.hook = broken
    g.run()
    assert g.deploy_job()["watch"] == {"state": "ended", "reason": "green is no longer live"}
    assert g.kinds() == ["deploy"]


def test_a_wake_for_a_queued_deploy_does_not_end_the_window(world: World) -> None:
    g = Guarded(world, seconds=1.2)
    world.store.enqueue("deploy", {}, "someone")  # it waits for the window
    world.store.enqueue("rollback", {"reason": "r", "failed": "green"}, "bluegreen watch")  # not a person's
    g.guard.wake.set()
    g.run()
    assert g.deploy_job()["watch"]["state"] == "passed"


def test_the_guard_thread_resumes_the_recorded_window_and_stops_with_the_listener(world: World) -> None:
    g = Guarded(world)
    g.guard.start()
    try:
        world.watch.update("shop_green", "EXITED")  # the event wakes it at once
        deadline = time.monotonic() + 10
        while g.deploy_job().get("watch", {}).get("state") != "rolled back":
            assert time.monotonic() < deadline, g.lines
            time.sleep(0.02)
    finally:
        g.worker.stopping.set()
        g.guard.wake.set()
        g.guard.join(5)
    assert not g.guard.is_alive()
    assert world.links() == world.color("blue").socket
