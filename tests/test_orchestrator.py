"""The sequences with a fake supervisor, the way supervisor tests its own rpcinterface: what an
interrupted go-live leaves is finished on restart, the automatic rollback, and how every job ends.

Links, state files and the probed color are real (tmp_path, a tiny HTTP server on a unix socket);
only supervisord is stood in for, by a dict of program states.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerFactory, shop_config
from supervisor.xmlrpc import Faults, RPCError
from test_trust import fake_supervisord

from supervisor_bluegreen.host import links
from supervisor_bluegreen.host.supervisor import ProcessWatch
from supervisor_bluegreen.listener import golive, jobs
from supervisor_bluegreen.listener.golive import reconcile_links
from supervisor_bluegreen.listener.run import Run
from supervisor_bluegreen.listener.sequences.switch import rollback
from supervisor_bluegreen.shared import config, jobargs
from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.jobargs import RollbackArgs
from supervisor_bluegreen.shared.model import Job
from supervisor_bluegreen.shared.store import Store
from supervisor_bluegreen.supervisord import rpcinterface


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
    return Run(app, store, Job.of(job), sup, ProcessWatch(), **kw)  # type: ignore[arg-type]


def quiet(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# an interrupted go-live is finished from the links


def test_a_kill_after_the_flip_and_before_record_keeps_the_rollback_target(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = Store(app.state_dir, app.name).ensure()
    links.point(app, app.color("green"))  # the flip happened ...
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
    links.point(app, app.color("blue"))
    store.update(live="blue", previous="green", switching={"job": 4, "kind": "deploy", "from": "blue", "to": "green",
                                                           "previous": "blue"})  # fmt: skip
    assert reconcile_links(app, store, quiet) == "blue"
    state = store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("blue", "green", None)
    assert not state.get("watch") and not state.get("workers_restarting")


def test_an_interrupted_automatic_rollback_leaves_no_rollback_target(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    store = Store(app.state_dir, app.name).ensure()
    links.point(app, app.color("blue"))
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
    links.point(app, app.color("green"))
    sup = FakeSupervisor(shop_blue="RUNNING", shop_green="BACKOFF")
    run = make_run(app, sup, "rollback", {"reason": "shop_green went EXITED"})
    run.store.update(live="green", previous="blue", watch={"color": "green"})
    message = rollback(run, RollbackArgs(reason="shop_green went EXITED"))
    assert message == "shop: rolled back automatically to blue: shop_green went EXITED"
    assert links.live_color(app) == "blue"
    state = run.store.read()
    assert (state["live"], state["previous"], state["watch"], state["switching"]) == ("blue", None, None, None)
    assert sup.calls == [("stop", "shop_green")]
    log = run.store.read_log(run.job.id)[0]
    assert "RuntimeError: boom" in log  # why it died, in the log only


def test_the_automatic_rollback_refuses_a_previous_color_that_is_not_running(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    links.point(app, app.color("green"))
    sup = FakeSupervisor(shop_blue="STOPPED", shop_green="BACKOFF")
    run = make_run(app, sup, "rollback", {"reason": "shop_green went FATAL"})
    run.store.update(live="green", previous="blue")
    jobs.execute(run)
    job = run.store.read_job(run.job.id)
    assert job["status"] == "failed"
    assert job["message"] == "shop: rollback failed: blue (shop_blue) is STOPPED, not RUNNING\ngreen live, unchanged"
    assert links.live_color(app) == "green" and sup.calls == []


# --------------------------------------------------------------------------------------------
# every way a job ends


def test_a_bug_in_a_sequence_ends_the_job_failed_naming_the_live_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path)
    links.point(app, app.color("blue"))

    def broken(run: Run, args: object) -> str:
        raise KeyError("oops")

    monkeypatch.setitem(jobs.SEQUENCES, "switch", broken)
    run = make_run(app, FakeSupervisor(), "switch")
    jobs.execute(run)
    job = run.store.read_job(run.job.id)
    assert job["status"] == "failed"
    assert job["message"] == "shop: switch failed: internal error KeyError: 'oops'\nblue live, unchanged"
    assert run.store.read()["last_job"]["status"] == "failed"


def test_a_stopping_listener_starts_no_new_step_and_the_job_ends_interrupted(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    links.point(app, app.color("blue"))
    stopping = threading.Event()
    stopping.set()
    run = make_run(app, FakeSupervisor(shop_green="RUNNING"), "switch", stopping=stopping)
    jobs.execute(run)
    job = run.store.read_job(run.job.id)
    assert job["status"] == "interrupted"
    assert job["message"] == (
        "shop: switch failed: interrupted before reconcile: the listener is stopping\nblue live, unchanged"
    )


def test_a_live_link_to_no_color_is_refused_before_anything_moves(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    os.symlink("/elsewhere.sock", app.live_socket)
    run = make_run(app, FakeSupervisor(shop_green="RUNNING", shop_blue="RUNNING"), "switch", {"wanted": "green"})
    jobs.execute(run)
    job = run.store.read_job(run.job.id)
    assert job["status"] == "failed"
    assert "refusing to act: " in job["message"] and "points at '/elsewhere.sock'" in job["message"]
    assert os.readlink(app.live_socket) == "/elsewhere.sock"


# --------------------------------------------------------------------------------------------
# job arguments: what the RPC stores is what the sequence takes


def deploy_api(tmp_path: Path) -> rpcinterface.BlueGreenNamespaceRPCInterface:
    """The real RPC extension over a shop with a repo (that does not exist: resolve fails, after the args bind)."""
    ini = tmp_path / "bluegreen.ini"
    ini.write_text(
        shop_config(tmp_path, repo=str(tmp_path / "nope.git"), build="migrate")
        + f"root = {tmp_path}/%(color)s\ncheckout = {tmp_path}/%(color)s/src\n"
    )
    return rpcinterface.make_bluegreen_rpcinterface(fake_supervisord([]), config=str(ini))


@pytest.mark.integration
def test_a_deploy_queued_with_allow_unsafe_runs_with_it(tmp_path: Path) -> None:
    """``deploy --allow-unsafe-migrations`` once died in the listener: deploy() got an unexpected 'allow_unsafe'."""
    api = deploy_api(tmp_path)
    queued = api.deploy("shop", "main", "alice", True)
    app = config.load(str(tmp_path / "bluegreen.ini")).app("shop")
    store = Store(app.state_dir, app.name)
    run = Run(app, store, Job.of(store.claim(queued["id"]) or {}), FakeSupervisor(), ProcessWatch())  # type: ignore[arg-type]
    jobs.execute(run)
    job = store.read_job(queued["id"])
    assert run.allow_unsafe is True
    assert job["status"] == "failed"
    assert job["message"].startswith(f"shop: deploy failed: unknown ref 'main' in {tmp_path}/nope.git"), job["message"]


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda api: api.deploy("shop", "main", "alice", "yes"), "allow_unsafe must be bool, got str"),
        (lambda api: api.deploy("shop", 7, "alice"), "ref must be str, got int"),
        (lambda api: api.switch("shop", 1, "alice"), "wanted must be str, got int"),
        (lambda api: api.health("shop", ["blue"], "alice"), "color must be str, got list"),
    ],
)
def test_mistyped_job_arguments_are_refused_at_the_rpc_and_nothing_is_queued(
    tmp_path: Path, call: Callable[[Any], Any], problem: str
) -> None:
    api = deploy_api(tmp_path)
    with pytest.raises(RPCError) as caught:
        call(api)
    assert caught.value.code == Faults.BAD_ARGUMENTS
    assert caught.value.text == f"BAD_ARGUMENTS: shop: {problem}; nothing changed"
    assert Store(str(tmp_path / "state"), "shop").job_ids() == []


@pytest.mark.parametrize(
    ("kind", "raw", "problem"),
    [
        ("deploy", {"ref": "main", "force": True}, "deploy: unknown argument(s) force (it takes: ref, allow_unsafe)"),
        ("recover", {"ref": "main"}, "recover: unknown argument(s) ref (it takes: none)"),
        ("rollback", {"reason": 3}, "rollback: reason must be str, got int"),
        ("deploy", ["main"], "deploy: arguments must be a mapping, got list"),
        ("reboot", {}, "unknown job kind 'reboot' (kinds: switch, rollback, health, deploy, recover, contract, "
                       "restart)"),
    ],
)  # fmt: skip
def test_job_arguments_a_sequence_does_not_take_are_named(kind: str, raw: Any, problem: str) -> None:
    with pytest.raises(jobargs.BadArguments) as caught:
        jobargs.parse(kind, raw)
    assert str(caught.value) == problem


def test_a_job_whose_stored_arguments_do_not_fit_fails_with_why_not_a_type_error(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    links.point(app, app.color("blue"))
    run = make_run(app, FakeSupervisor(), "switch", {"wanted": "green", "colour": "green"})
    jobs.execute(run)
    job = run.store.read_job(run.job.id)
    assert job["status"] == "failed"
    assert job["message"] == (
        "shop: switch failed: bad arguments: switch: unknown argument(s) colour (it takes: wanted)"
        "\nblue live, unchanged"
    )


@pytest.mark.parametrize("kind", list(jobargs.KINDS))
def test_every_job_kind_has_a_sequence_and_its_stored_arguments_read_back(kind: str) -> None:
    args = jobargs.KINDS[kind]()
    assert kind in jobs.SEQUENCES
    assert jobargs.parse(kind, jobargs.stored(args)) == args


@pytest.mark.integration
def test_checkout_commit_runs_git_as_the_app_user_even_through_a_link_to_roots_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The app user can make its checkout a link to a folder of root's: git must not become root there."""
    bin_dir = Path(tempfile.mkdtemp(dir="/tmp"))  # a git that says who runs it, where the app user reaches it
    bin_dir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(bin_dir))
    (bin_dir / "git").write_text("#!/bin/sh\nid -u\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    roots = tmp_path / "roots"
    roots.mkdir()
    (tmp_path / "src").symlink_to(roots)
    text = shop_config(tmp_path, repo=f"{tmp_path}/app.git", checkout=f"{tmp_path}/src", user="nobody")
    app = config.parse(text, "t.ini").app("shop")
    assert golive.checkout_commit(app, app.colors[0]) == str(pwd.getpwnam("nobody").pw_uid)


def test_bluegreen_contract_queues_only_what_waits_once_the_window_passed(tmp_path: Path) -> None:
    api = deploy_api(tmp_path)
    store = Store(str(tmp_path / "state"), "shop")
    with pytest.raises(RPCError) as caught:
        api.contract("shop", "ansible")
    assert caught.value.text == "FAILED: shop: no contract migrations wait; nothing changed"
    window = {"color": "green", "previous": "blue", "since": 1.0, "until": time.time() + 60, "job": 4}
    store.update(contract={"job": 4, "color": "green", "migrations": ["shop.0003_drop"]}, watch=window)
    with pytest.raises(RPCError) as caught:
        api.contract("shop", "ansible")
    assert "the watch window of job 4 runs until " in caught.value.text and store.job_ids() == []
    store.update(watch=None)
    job = api.contract("shop", "ansible")
    assert (job["kind"], job["status"], job["who"]) == ("contract", "queued", "ansible")
