"""``bluegreen.lock``/``unlock``/``maintenance`` with the real RPC extension over a fake supervisord: what a lock
refuses (and what it never refuses: the watch window's own rollback), the maintenance page, status and history."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import shop_config
from fakes import World
from supervisor.states import ProcessStates
from supervisor.xmlrpc import Faults, RPCError
from test_deploy_sequence import frozen_verify
from test_guard import Guarded
from test_trust import FakeProcess

from supervisor_bluegreen.host import health
from supervisor_bluegreen.shared import maintenance
from supervisor_bluegreen.shared.model import when
from supervisor_bluegreen.shared.store import Store
from supervisor_bluegreen.supervisord import rpcinterface


def fake_supervisord(listener: int = ProcessStates.RUNNING) -> Any:
    """The listener and both colors RUNNING (a switch's precondition), as supervisord's process table holds them."""
    groups = {
        name: SimpleNamespace(processes={name: FakeProcess(state)})
        for name, state in (("bluegreen", listener), ("shop_blue", ProcessStates.RUNNING),
                            ("shop_green", ProcessStates.RUNNING))
    }  # fmt: skip
    return SimpleNamespace(options=SimpleNamespace(logger=SimpleNamespace(error=print)), process_groups=groups)


def make_api(tmp_path: Path, listener: int = ProcessStates.RUNNING) -> rpcinterface.BlueGreenNamespaceRPCInterface:
    ini = tmp_path / "bluegreen.ini"
    ini.write_text(
        shop_config(tmp_path, repo=str(tmp_path / "repo.git"), maintenance_dir=f"{tmp_path}/www")
        + f"root = {tmp_path}/%(color)s\ncheckout = {tmp_path}/%(color)s/src\n"
    )
    return rpcinterface.make_bluegreen_rpcinterface(fake_supervisord(listener), config=str(ini))


@pytest.fixture
def api(tmp_path: Path) -> rpcinterface.BlueGreenNamespaceRPCInterface:
    a = make_api(tmp_path)
    Store(str(tmp_path / "state"), "shop").ensure().update(live="blue", previous="green")
    return a


def fault(call: Any) -> RPCError:
    with pytest.raises(RPCError) as caught:
        call()
    return caught.value


def queued(tmp_path: Path) -> list[str]:
    return [j["kind"] for j in Store(str(tmp_path / "state"), "shop").jobs(("queued",))]


def test_a_lock_refuses_deploy_switch_and_rollback_with_the_reason_who_and_since(api: Any, tmp_path: Path) -> None:
    before = time.time()
    record = api.lock("shop", "  database upgrade tonight ", "alice@host via supervisorctl")
    assert (record["kind"], record["status"], record["who"]) == ("lock", "succeeded", "alice@host via supervisorctl")
    lock = api.status("shop")[0]["lock"]
    assert lock["who"] == "alice@host via supervisorctl" and lock["reason"] == "database upgrade tonight"
    assert before <= lock["since"] <= time.time()
    since = when(lock["since"])
    for what, call in (
        ("deploy", lambda: api.deploy("shop", "main", "bob")),
        ("switch", lambda: api.switch("shop", "", "bob")),
        ("rollback", lambda: api.rollback("shop", "bob")),
    ):
        exc = fault(call)
        assert exc.code == Faults.FAILED
        assert exc.text == (
            f"FAILED: shop: {what} refused: locked by alice@host via supervisorctl since {since}: "
            "database upgrade tonight (supervisorctl bluegreen unlock shop); nothing changed"
        )
    assert queued(tmp_path) == []
    assert api.health("shop", "", "bob")["kind"] == "health"  # a probe changes nothing: never refused

    api.unlock("shop", "carol")
    assert api.status("shop")[0]["lock"] == {}
    assert api.deploy("shop", "main", "bob")["kind"] == "deploy"
    assert queued(tmp_path) == ["health", "deploy"]


def test_lock_and_unlock_are_refused_when_they_change_nothing(api: Any) -> None:
    exc = fault(lambda: api.lock("shop", "  ", "alice"))
    assert (exc.code, exc.text) == (Faults.BAD_ARGUMENTS, "BAD_ARGUMENTS: shop: reason must be some text, got nothing;"
                                                          " nothing changed")  # fmt: skip
    assert fault(lambda: api.lock("shop", 3, "alice")).code == Faults.BAD_ARGUMENTS
    assert fault(lambda: api.unlock("shop", "alice")).text == "FAILED: shop: not locked; nothing changed"
    api.lock("shop", "first", "alice")
    exc = fault(lambda: api.lock("shop", "second", "bob"))
    assert exc.code == Faults.FAILED and exc.text.startswith("FAILED: shop: already locked by alice since ")
    assert api.status("shop")[0]["lock"]["reason"] == "first"
    assert fault(lambda: api.lock("nope", "x", "alice")).code == Faults.BAD_NAME


def test_lock_unlock_and_maintenance_are_history_rows_with_who_and_when(api: Any) -> None:
    api.lock("shop", "freeze", "alice")
    api.maintenance("shop", True, "back soon", "bob")
    api.maintenance("shop", False, "", "bob")
    api.unlock("shop", "carol")
    rows = api.history("shop", 10, False)[::-1]  # newest first: in the order they happened
    assert [(r["kind"], r["who"], r["status"]) for r in rows] == [
        ("lock", "alice", "succeeded"),
        ("maintenance", "bob", "succeeded"),
        ("maintenance", "bob", "succeeded"),
        ("unlock", "carol", "succeeded"),
    ]
    assert [r["message"] for r in rows] == [
        "shop: locked: freeze",
        "shop: maintenance on: back soon",
        "shop: maintenance off",
        f"shop: unlocked (locked by alice since {when(rows[0]['created'])})",
    ]
    assert all(r["created"] and r["finished"] for r in rows)


def test_maintenance_on_writes_roots_page_and_off_removes_it(api: Any, tmp_path: Path) -> None:
    page = tmp_path / "www" / "shop.html"
    api.maintenance("shop", True, "Upgrading <db> until 10:00", "alice")
    assert "Upgrading &lt;db&gt; until 10:00" in page.read_text()
    assert os.stat(page).st_mode & 0o777 == 0o644 and os.stat(tmp_path / "www").st_mode & 0o777 == 0o755
    shown = api.status("shop")[0]["maintenance"]
    assert (shown["page"], shown["who"], shown["message"]) == (str(page), "alice", "Upgrading <db> until 10:00")
    assert shown["since"] > 0
    api.maintenance("shop", True, "", "bob")  # again: the new message, the default when none
    assert maintenance.DEFAULT_MESSAGE in page.read_text()
    api.maintenance("shop", False, "", "alice")
    assert not page.exists() and api.status("shop")[0]["maintenance"] == {}
    assert fault(lambda: api.maintenance("shop", False, "", "alice")).text == (
        "FAILED: shop: not in maintenance; nothing changed"
    )
    assert fault(lambda: api.maintenance("shop", "yes", "", "alice")).code == Faults.BAD_ARGUMENTS
    assert sorted(os.listdir(tmp_path / "www")) == []  # no temporary file left behind


def test_the_pages_folders_are_made_for_nginx_to_enter_whatever_supervisords_umask(tmp_path: Path) -> None:
    ini = tmp_path / "bluegreen.ini"
    ini.write_text(shop_config(tmp_path, maintenance_dir=f"{tmp_path}/var/www/bluegreen"))
    api = rpcinterface.make_bluegreen_rpcinterface(fake_supervisord(), config=str(ini))
    old = os.umask(0o027)  # what supervisord runs with (bluegreen.conf's [supervisord] umask)
    try:
        api.maintenance("shop", True, "down", "alice")
    finally:
        os.umask(old)
    for d in ("var", "var/www", "var/www/bluegreen"):
        assert os.stat(tmp_path / d).st_mode & 0o777 == 0o755, d
    assert os.stat(tmp_path / "var/www/bluegreen/shop.html").st_mode & 0o777 == 0o644


def test_maintenance_and_lock_need_no_listener(tmp_path: Path) -> None:
    api = make_api(tmp_path, listener=ProcessStates.FATAL)
    api.maintenance("shop", True, "down", "alice")
    api.lock("shop", "down", "alice")
    assert (tmp_path / "www" / "shop.html").exists()
    assert api.status("shop")[0]["lock"]["reason"] == "down"


def test_a_maintenance_page_planted_as_a_link_is_replaced_never_followed(api: Any, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "www" / "shop.html").symlink_to(victim)
    api.maintenance("shop", True, "down", "alice")
    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / "www" / "shop.html").is_symlink()


def test_maintenance_in_a_folder_others_can_write_is_refused(api: Any, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www").chmod(0o777)
    exc = fault(lambda: api.maintenance("shop", True, "down", "alice"))
    assert exc.code == Faults.FAILED and "writable by everyone" in exc.text and exc.text.endswith("nothing changed")
    assert os.listdir(tmp_path / "www") == [] and api.status("shop")[0]["maintenance"] == {}
    assert api.history("shop", 10, False) == []


# --------------------------------------------------------------------------------------------
# the listener's side, against fakes.py


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path, monkeypatch, watch_interval="0.05", maintenance_dir=f"{tmp_path}/www")
    w.live("green", previous="blue")
    return w


def test_the_watch_windows_rollback_is_never_refused_by_a_lock(world: World) -> None:
    world.store.enqueue("deploy", {}, "test")
    world.store.update(lock={"who": "alice", "since": time.time(), "reason": "freeze"})
    g = Guarded(world)
    world.watch.update("shop_green", "EXITED")
    g.run()
    rollback = world.store.jobs()[-1]
    assert (rollback["kind"], rollback["status"], rollback["who"]) == ("rollback", "succeeded", "bluegreen watch")
    assert world.store.read()["live"] == "blue"
    assert world.store.read()["lock"]["reason"] == "freeze"  # the lock stays


@pytest.mark.parametrize(("kind", "args"), [("deploy", {}), ("switch", {}), ("rollback", {})])
def test_a_job_queued_before_the_lock_does_not_run_while_it_holds(world: World, kind: str, args: dict) -> None:
    world.store.update(lock={"who": "alice", "since": 0, "reason": "freeze"})
    job = world.job(kind, args)
    assert job["status"] == "failed" and job["steps"] == []
    assert job["message"] == (
        f"shop: {kind} failed: locked by alice since {when(0)}: freeze (supervisorctl bluegreen unlock shop);"
        " it was queued before the lock\ngreen live, unchanged"
    )
    assert world.links() == world.color("green").socket and world.rpc.calls == []


def test_a_switch_during_maintenance_takes_the_503_page_through_nginx_for_an_answer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    maintenance.write_page(world.app, "down")

    def probe(target: str, check: Any, path: str | None = None, host: str | None = None) -> health.Probe:
        if target == world.app.public_url:
            return health.Probe(False, 503, "status 503, expected 200", 1.0, {})
        return world.probes(target, check, path, host)

    monkeypatch.setattr(health, "probe", probe)
    job = world.job("switch")
    assert job["status"] == "succeeded", job["message"]
    assert "503, the maintenance page (bluegreen maintenance on): not checked through nginx" in world.log(job)
    maintenance.remove_page(world.app)
    frozen_verify(monkeypatch)
    job = world.job("switch")  # without the page, a 503 through nginx is a failed switch, switched back
    assert job["status"] == "failed" and "public http://127.0.0.1/health answered status 503" in job["message"]
