"""The sequences with a fake supervisor, the way supervisor tests its own rpcinterface: what an
interrupted go-live leaves is finished on restart, the automatic rollback, and how every job ends.

Links, state files and the probed color are real (tmp_path, a tiny HTTP server on a unix socket);
only supervisord is stood in for, by a dict of program states.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerFactory, shop_config

from supervisor_bluegreen import config, jobs, switch
from supervisor_bluegreen.config import App
from supervisor_bluegreen.orchestrator import ProcessWatch, Run, reconcile_links, rollback
from supervisor_bluegreen.state import Store


class FakeSupervisor:
    """supervisor.* as the sequences use it: program states that start and stop on request."""

    def __init__(self, **states: str):
        self.states = dict(states)
        self.calls: list[tuple[str, str]] = []

    def state(self, program: str) -> str:
        return self.states.get(program, "UNKNOWN")

    def info(self, program: str) -> dict[str, Any]:
        return {"statename": self.state(program), "pid": 0}

    def start(self, program: str) -> None:
        self.calls.append(("start", program))
        self.states[program] = "RUNNING"

    def stop(self, program: str) -> None:
        self.calls.append(("stop", program))
        self.states[program] = "STOPPED"

    def stderr_tail(self, program: str, length: int = 16000) -> str:
        return "cut line\nTraceback (most recent call last):\nRuntimeError: boom\n"


def make_app(tmp_path: Path, **extra: str) -> App:
    return config.parse(shop_config(tmp_path, **extra)).app()


def make_run(app: App, sup: FakeSupervisor, kind: str, args: dict | None = None, **kw: Any) -> Run:
    store = Store(app.state_dir, app.name).ensure()
    job = store.claim(store.enqueue(kind, args or {}, "test")["id"])
    assert job is not None
    return Run(app, store, job, sup, ProcessWatch(), **kw)  # type: ignore[arg-type]


def quiet(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# an interrupted go-live is finished from the links


def test_a_kill_after_the_flip_and_before_record_keeps_the_rollback_target(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = Store(app.state_dir, app.name).ensure()
    switch.point(app, app.color("green"))  # the flip happened ...
    store.update(live="blue", previous=None, switching={"job": 4, "kind": "deploy", "from": "blue", "to": "green",
                                                        "previous": "blue"})  # fmt: skip
    assert reconcile_links(app, store, quiet) == "green"  # ... the record did not: finished from the intent
    state = store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("green", "blue", None)
    assert state["workers_restarting"] == "green"  # the workers still run blue's code
    assert state["watch"]["color"] == "green" and state["watch"]["previous"] == "blue" and state["watch"]["job"] == 4


def test_a_kill_before_the_flip_changes_nothing_but_the_intent(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = Store(app.state_dir, app.name).ensure()
    switch.point(app, app.color("blue"))
    store.update(live="blue", previous="green", switching={"job": 4, "kind": "deploy", "from": "blue", "to": "green",
                                                           "previous": "blue"})  # fmt: skip
    assert reconcile_links(app, store, quiet) == "blue"
    state = store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("blue", "green", None)
    assert not state.get("watch") and not state.get("workers_restarting")


def test_an_interrupted_automatic_rollback_leaves_no_rollback_target(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = Store(app.state_dir, app.name).ensure()
    switch.point(app, app.color("blue"))
    store.update(live="green", previous="blue", switching={"job": 5, "kind": "rollback", "from": "green",
                                                           "to": "blue", "previous": None})  # fmt: skip
    assert reconcile_links(app, store, quiet) == "blue"
    state = store.read()
    assert (state["live"], state["previous"], state["watch"]) == ("blue", None, None)


# --------------------------------------------------------------------------------------------
# the automatic rollback


def test_the_automatic_rollback_moves_traffic_stops_the_failed_color_and_opens_no_window(
    tmp_path: Path, serve: ServerFactory
) -> None:
    app = make_app(tmp_path, watch="60")
    serve(app.color("blue").socket)
    switch.point(app, app.color("green"))
    sup = FakeSupervisor(shop_blue="RUNNING", shop_green="BACKOFF")
    run = make_run(app, sup, "rollback", {"reason": "shop_green went EXITED"})
    run.store.update(live="green", previous="blue", watch={"color": "green"})
    message = rollback(run, "shop_green went EXITED")
    assert message == "shop: rolled back automatically to blue: shop_green went EXITED"
    assert switch.live_color(app) == "blue"
    state = run.store.read()
    assert (state["live"], state["previous"], state["watch"], state["switching"]) == ("blue", None, None, None)
    assert sup.calls == [("stop", "shop_green")]
    log = run.store.read_log(run.job["id"])[0]
    assert "RuntimeError: boom" in log  # why it died, in the log only


def test_the_automatic_rollback_refuses_a_previous_color_that_is_not_running(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    switch.point(app, app.color("green"))
    sup = FakeSupervisor(shop_blue="STOPPED", shop_green="BACKOFF")
    run = make_run(app, sup, "rollback", {"reason": "shop_green went FATAL"})
    run.store.update(live="green", previous="blue")
    jobs.execute(run)
    job = run.store.read_job(run.job["id"])
    assert job["status"] == "failed"
    assert job["message"] == "shop: rollback failed: blue (shop_blue) is STOPPED, not RUNNING\ngreen live, unchanged"
    assert switch.live_color(app) == "green" and sup.calls == []


# --------------------------------------------------------------------------------------------
# every way a job ends


def test_a_bug_in_a_sequence_ends_the_job_failed_naming_the_live_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path)
    switch.point(app, app.color("blue"))

    def broken(run: Run) -> str:
        raise KeyError("oops")

    monkeypatch.setitem(jobs.SEQUENCES, "switch", broken)
    run = make_run(app, FakeSupervisor(), "switch")
    jobs.execute(run)
    job = run.store.read_job(run.job["id"])
    assert job["status"] == "failed"
    assert job["message"] == "shop: switch failed: internal error KeyError: 'oops'\nblue live, unchanged"
    assert run.store.read()["last_job"]["status"] == "failed"


def test_a_stopping_listener_starts_no_new_step_and_the_job_ends_interrupted(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    switch.point(app, app.color("blue"))
    stopping = threading.Event()
    stopping.set()
    run = make_run(app, FakeSupervisor(shop_green="RUNNING"), "switch", stopping=stopping)
    jobs.execute(run)
    job = run.store.read_job(run.job["id"])
    assert job["status"] == "interrupted"
    assert job["message"] == (
        "shop: switch failed: interrupted before reconcile: the listener is stopping\nblue live, unchanged"
    )


def test_a_live_link_to_no_color_is_refused_before_anything_moves(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    os.symlink("/elsewhere.sock", app.live_socket)
    run = make_run(app, FakeSupervisor(shop_green="RUNNING", shop_blue="RUNNING"), "switch", {"wanted": "green"})
    jobs.execute(run)
    job = run.store.read_job(run.job["id"])
    assert job["status"] == "failed"
    assert "refusing to act: " in job["message"] and "points at '/elsewhere.sock'" in job["message"]
    assert os.readlink(app.live_socket) == "/elsewhere.sock"
