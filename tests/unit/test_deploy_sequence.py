"""deploy(): every step of the recipe, against an in-memory supervisord, git and health checks (fakes.py).

What a user would see is asserted: the job's status and message, its steps by name, the state (live,
previous, watch), the live link, which programs supervisord was asked to start and stop, the log, the webhooks.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FakeClock
from fakes import (
    COMMIT,
    OTHER,
    FakeDump,
    World,
    contract_report,
    failed_step,
    gate_report,
    release_checkout,
    step_names,
    unsafe_report,
    with_worker,
)
from supervisor.xmlrpc import Faults

from supervisor_bluegreen.host import drain, runner
from supervisor_bluegreen.host.drain import DrainResult
from supervisor_bluegreen.listener import golive, jobs
from supervisor_bluegreen.listener.sequences import deploy

BUILD = ["deps", "collectstatic", "compress", "test", "migrate"]
# "workers" follows only when the app has workers (fakes.with_worker, with_own_workers)
AFTER = ["built", "window", "drain", "point", "start", "health gate", "switch", "verify", "record"]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """blue live at OTHER, green its warm rollback target (a window passed); green's checkout holds requirements."""
    w = World(tmp_path, monkeypatch)
    w.live("blue", previous="green")
    for color in w.app.colors:
        w.runner.heads[color.checkout] = OTHER
    w.runner.files["requirements.txt"] = b"django\n"
    return w


def frozen_verify(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """verify_public's 5 s of retries pass on a clock that moves only when it sleeps."""
    clock = FakeClock()
    monkeypatch.setattr(golive, "time", SimpleNamespace(monotonic=clock, sleep=clock.sleep, time=clock))
    return clock


def test_a_deploy_builds_the_idle_color_starts_it_switches_and_records_it(world: World) -> None:
    job = world.job("deploy")
    green = world.color("green")
    assert job["status"] == "succeeded", job["message"]
    assert job["message"].startswith(f"shop: green live at {COMMIT[:7]} in ")
    assert "watching green for 60 s" in job["message"] and "switch back to blue" in job["message"]
    names = step_names(job)  # collectstatic, compress and the tests side by side: they end in any order
    assert names[:6] == ["resolve", "reconcile", "release", "checkout", "deps", "probe"]
    assert sorted(names[6:9]) == ["collectstatic", "compress", "test"] and names[9:] == ["migrate", *AFTER]
    assert names.index("compress") > names.index("collectstatic")  # one lane: the static files, in order
    assert (job["ref"], job["commit"], job["color"]) == ("main", COMMIT, "green")
    # built in a release folder of its own; only then the idle color stopped, pointed at it, started
    src = release_checkout(world, job)
    assert world.rpc.calls == [("stop", "shop_green"), ("start", "shop_green")]
    assert os.path.realpath(green.root) == os.path.dirname(src)
    assert not os.path.islink(world.color("blue").root)  # the live color's folder is untouched
    assert world.runner.heads[src] == COMMIT
    git = [argv[1] for argv, cwd in world.runner.commands if argv[0] == "git" and cwd == src]
    assert git == ["fetch", "checkout", "clean", "rev-parse"]
    built = [argv for argv, cwd in world.runner.commands if cwd == src and argv[0] == "python3"]
    assert built[0] == ("python3", "-m", "pip", "install", "--quiet", "--requirement", "requirements.txt")
    assert built[1][:3] == ("python3", "manage.py", "shell")  # the one probe: plan and settings, no other Django
    assert sorted(built[2:4]) == [("python3", "manage.py", "collectstatic", "--noinput"),
                                  ("python3", "manage.py", "test", "--noinput")]  # fmt: skip
    assert built[4:] == [("python3", "manage.py", "migrate", "--noinput")]  # compress: the app has no such command
    assert [(r["id"], r["commit"]) for r in world.store.read()["releases"]] == [(job["release"], COMMIT)]
    # live moved, recorded with the old color as the rollback target and a watch window
    assert world.links() == green.socket
    state = world.store.read()
    assert (state["live"], state["previous"], state["switching"]) == ("green", "blue", None)
    assert state["watch"]["color"] == "green" and state["watch"]["previous"] == "blue"
    assert state["watch"]["job"] == job["id"]
    assert state["colors"]["green"] == {"version": COMMIT[:7], "commit": COMMIT, "release": job["release"]}
    assert state["last_health"]["color"] == "green" and state["last_health"]["ok"]
    assert job["watch"]["state"] == "running"
    log = world.log(job)
    for line in (
        f"main is {COMMIT}",
        "green is no longer a rollback target",
        "[compress] compress: skipped, the app has no 'compress' management command",
        "$ python3 manage.py test --noinput",
        "probe: ok status 200",
        "from green",
        "verify done",
    ):
        assert line in log, line
    assert world.events() == [
        ("start", f":rocket: shop: deploying {COMMIT[:7]} to green"),
        ("success", f":white_check_mark: {job['message'].splitlines()[0]}"),
    ]


def test_the_first_deploy_builds_the_first_color_and_opens_no_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="test")
    job = world.job("deploy", {"ref": "v2"})
    assert job["status"] == "succeeded", job["message"]
    assert "watching" not in job["message"]
    assert (job["ref"], job["commit"], job["color"]) == ("v2", OTHER, "blue")
    assert world.rpc.calls == [("start", "shop_blue")]
    assert "shop_blue is not running" in world.log(job)
    state = world.store.read()
    assert (state["live"], state["previous"], state["watch"]) == ("blue", None, None)
    assert world.links() == world.color("blue").socket


def test_a_failing_build_step_leaves_live_unchanged_and_starts_nothing(world: World) -> None:
    world.runner.fail["test"] = "FAILED (failures=1)"
    job = world.job("deploy")
    assert job["status"] == "failed"
    assert (
        job["message"] == "shop: deploy failed: test failed: exit status 1: FAILED (failures=1)\nblue live, unchanged"
    )
    assert failed_step(job) == "test" and "migrate" not in step_names(job)
    # both colors as they were: green still runs, still the rollback target; nothing recorded as built
    assert world.rpc.calls == []
    assert world.links() == world.color("blue").socket
    state = world.store.read()
    assert (state["live"], state["previous"], state.get("releases")) == ("blue", "green", None)
    assert not os.path.islink(world.color("green").root)
    assert "    | [test] FAILED (failures=1)" in world.log(job)  # tagged: it ran beside collectstatic
    assert world.events()[-1][0] == "failure"


def test_a_color_that_never_gets_healthy_is_stopped_and_live_stays(world: World) -> None:
    world.probes.sick.add("green")
    world.rpc.stderr["shop_green"] = "cut\nTraceback (most recent call last):\nRuntimeError: no DATABASE_URL\n"
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "health gate"
    assert job["message"].startswith("shop: deploy failed: green is not healthy: not healthy within 0.1 s")
    assert "RuntimeError: no DATABASE_URL" in job["message"]
    assert job["message"].endswith("blue live, unchanged")
    assert world.rpc.calls == [("stop", "shop_green"), ("start", "shop_green"), ("stop", "shop_green")]
    assert "stopping shop_green" in world.log(job)
    assert world.links() == world.color("blue").socket
    assert world.store.read()["last_health"]["ok"] is False


def test_a_color_that_crashes_on_start_fails_the_gate_at_once(world: World) -> None:
    world.rpc.crash_on_start["shop_green"] = "BACKOFF"
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "health gate"
    assert "green is not healthy: shop_green went BACKOFF" in job["message"]
    assert world.rpc.calls[-1] == ("stop", "shop_green")


def test_a_public_url_that_does_not_serve_the_new_color_switches_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_verify(monkeypatch)
    world.probes.public_down = True
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "verify"
    assert "public http://127.0.0.1/health answered status 502, expected 200; switched back to blue" in job["message"]
    assert job["message"].endswith("blue live, unchanged")
    assert world.links() == world.color("blue").socket
    assert world.store.read()["switching"] is None and world.store.read()["live"] == "blue"
    assert world.rpc.calls[-1] == ("stop", "shop_green")


def test_a_first_deploy_that_fails_verify_removes_the_links_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="test")
    frozen_verify(monkeypatch)
    world.probes.public_down = True
    job = world.job("deploy")
    assert failed_step(job) == "verify" and "links removed again" in job["message"]
    assert world.links() is None
    assert world.rpc.calls[-1] == ("stop", "shop_blue")


def test_the_workers_are_restarted_on_the_new_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = with_worker(tmp_path, monkeypatch, "blue", "green", build="test")
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    assert world.rpc.calls[-2:] == [("stop", "shop_worker"), ("start", "shop_worker")]
    assert f"worker shop_worker pid {os.getpid()} runs green's checkout" in world.log(job)
    assert world.store.read()["workers_restarting"] is None


def test_a_worker_that_does_not_come_back_fails_the_deploy_after_the_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = with_worker(tmp_path, monkeypatch, "blue", "green", build="test")
    world.rpc.crash_on_start["shop_worker"] = "FATAL"
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "workers"
    assert job["message"] == (
        "shop: deploy failed: worker shop_worker did not come back: FATAL;"
        " the watch window rolls back to blue, workers included\ngreen live"
    )
    assert world.store.read()["workers_restarting"] == "green"  # the next start restarts them
    assert ("stop", "shop_green") not in world.rpc.calls[1:]  # live: it is nobody's to stop


# --------------------------------------------------------------------------------------------
# each step's own branches


@pytest.mark.parametrize(
    ("ref", "reason"),
    [("nope", "unknown ref 'nope' in "), ("-x", "refusing ref '-x': use a branch, tag or commit")],
)
def test_a_ref_that_is_no_commit_is_refused_before_anything_changes(world: World, ref: str, reason: str) -> None:
    job = world.job("deploy", {"ref": ref})
    assert job["status"] == "failed" and step_names(job) == ["resolve"]
    assert reason in job["message"] and job["message"].endswith("blue live, unchanged")
    assert world.rpc.calls == [] and world.events() == [("failure", ":x: " + job["message"].replace("\n", "; "))]


def test_an_app_without_a_repo_cannot_deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, repo=None, build=None, webhooks=None)
    job = world.job("deploy")
    assert job["status"] == "failed" and "shop has no repo configured" in job["message"]


def test_a_user_that_does_not_exist_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, user="no-such-user-here")
    job = world.job("deploy")
    assert "the app's user 'no-such-user-here' does not exist on this machine" in job["message"]


def test_a_drain_that_times_out_stops_the_color_anyway(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "wait_drained", lambda path, timeout: DrainResult(False, 2, 0.0))
    world.rpc.refuse[("startProcess", "shop_green")] = Faults.SPAWN_ERROR
    job = world.job("deploy")
    log = world.log(job)
    assert f"nothing listens on {world.color('green').socket}" in log
    assert "green still holds 2 connection(s) after 0 s: stopping anyway" in log
    assert world.rpc.calls[0] == ("stop", "shop_green")


def test_a_refused_stop_fails_the_drain(world: World) -> None:
    world.rpc.refuse[("stopProcess", "shop_green")] = Faults.FAILED
    job = world.job("deploy")
    assert failed_step(job) == "drain" and "cannot stop shop_green: refused: shop_green" in job["message"]


def test_a_supervisord_shutting_down_interrupts_the_deploy(world: World) -> None:
    world.rpc.refuse[("startProcess", "shop_green")] = Faults.SHUTDOWN_STATE
    job = world.job("deploy")
    assert job["status"] == "interrupted" and failed_step(job) == "start"
    assert "interrupted: supervisord is shutting down" in job["message"]


def test_a_refused_start_fails_and_stops_nothing_live(world: World) -> None:
    world.rpc.refuse[("startProcess", "shop_green")] = Faults.SPAWN_ERROR
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "start"
    assert "cannot start shop_green" in job["message"]
    assert world.rpc.calls == [("stop", "shop_green"), ("start", "shop_green")]


def test_a_checkout_that_does_not_move_to_the_commit_fails(world: World) -> None:
    world.runner.stuck.add("/releases/")
    job = world.job("deploy")
    assert failed_step(job) == "checkout"
    assert (
        f"{release_checkout(world, job)} is at 0000000000000000000000000000000000000000, not {COMMIT}" in job["message"]
    )
    assert world.rpc.calls == []


def test_steps_that_run_only_on_change_or_with_a_tool_skip_and_run(world: World) -> None:
    world.runner.tools.add("compress")
    world.runner.fail["migrate"] = "stop here"  # after the build's lanes: compress ran (a failed test stops it)
    first = world.job("deploy")
    stamp = Path(world.store.dir) / "deps.shared.json"  # python3 is outside the roots: one stamp for both
    assert json.loads(stamp.read_text())["commit"] == COMMIT
    second = world.job("deploy")
    said = "deps: skipped, requirements (requirements.txt) unchanged since its virtualenv last installed them"
    assert said in world.log(second)
    assert "compress: skipped" not in world.log(first) + world.log(second)
    assert len(world.runner.ran("compress")) == 2  # run twice, asked of no other interpreter than the probe
    del world.runner.files["requirements.txt"]
    assert "deps: skipped, the checkout has no uv.lock, pyproject.toml or requirements.txt" in world.log(
        world.job("deploy")
    )


def test_deps_follow_what_the_app_declares_its_includes_and_uv(world: World) -> None:
    world.runner.fail["test"] = "stop here"
    world.runner.files["requirements.txt"] = b"-r requirements/base.txt\n"
    world.runner.files["requirements/base.txt"] = b"django==5.1\n"
    world.job("deploy")
    assert len(world.runner.ran("pip")) == 1
    world.job("deploy")
    assert len(world.runner.ran("pip")) == 1  # nothing changed
    world.runner.files["requirements/base.txt"] = b"django==5.2\n"  # only the included file
    world.job("deploy")
    assert len(world.runner.ran("pip")) == 2
    world.runner.files["pyproject.toml"] = b'[project]\nname = "shop"\n'
    world.runner.files["uv.lock"] = b"version = 1\n"
    log = world.log(world.job("deploy"))
    [uv] = [line for line in log.splitlines() if "$ " in line and "/uv sync" in line]
    assert uv.endswith("sync --frozen --inexact --quiet --python python3")
    assert len(world.runner.ran("pip")) == 2  # uv, not pip


def test_the_gate_refuses_an_unsafe_migration_and_nothing_migrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.live("blue", previous="green")
    world.runner.report = unsafe_report()
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) == "gate"
    assert "shop.0002_drop" in job["message"] and job["message"].endswith("blue live, unchanged")
    assert world.runner.ran("migrate") == []


def test_allow_unsafe_migrations_lets_them_run_and_names_who(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.live("blue", previous="green")
    world.runner.report = unsafe_report()
    job = world.job("deploy", {"allow_unsafe": True})
    assert job["status"] == "succeeded", job["message"]
    assert job["unsafe_allowed"] == "test"
    assert "migration gate: UNSAFE migrations allowed by test (--allow-unsafe-migrations)" in world.log(job)
    assert world.runner.ran("migrate") == [("python3", "manage.py", "migrate", "--noinput")]


def test_contract_migrations_are_held_back_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.live("blue", previous="green")
    world.runner.report = contract_report()
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    assert world.runner.ran("migrate") == [("python3", "manage.py", "migrate", "shop", "0002_add", "--noinput")]
    assert world.store.read()["contract"] == {"job": job["id"], "color": "green", "migrations": ["shop.0003_drop"]}


def test_a_migrate_that_fails_says_what_the_database_now_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.live("blue", previous="green")
    world.runner.report = contract_report()
    world.runner.fail["migrate"] = "django.db.utils.OperationalError: lock wait timeout"
    job = world.job("deploy")
    assert failed_step(job) == "migrate"
    # the probe still lists both: nothing was applied
    assert (
        "migrate failed: exit status 1: django.db.utils.OperationalError: lock wait timeout; no migration was applied"
        in job["message"]
    )
    assert job["uncut"] is None


def test_nothing_to_migrate_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.runner.report = gate_report()
    job = world.job("deploy")
    assert job["status"] == "succeeded" and "migrate: nothing to apply before the switch" in world.log(job)


def test_stop_unless_live_leaves_a_live_color_and_broken_links_alone(world: World) -> None:
    world.job("deploy")  # green live
    run = world.last_run
    assert run is not None
    calls = list(world.rpc.calls)
    deploy.stop_unless_live(run, world.color("green"))
    assert world.rpc.calls == calls
    os.unlink(world.app.live_socket)
    os.symlink("/nowhere", world.app.live_socket)
    deploy.stop_unless_live(run, world.color("blue"))
    assert world.rpc.calls == calls


def test_a_migrate_that_applied_part_of_the_plan_says_the_database_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.live("blue", previous="green")
    world.runner.report = contract_report()
    world.runner.report_after = gate_report(migrations=[{"app_label": "shop", "name": "0003_drop", "operations": 1}])
    world.runner.fail["migrate"] = "killed"
    job = world.job("deploy")
    assert "the DATABASE CHANGED: applied shop.0002_add; not applied: shop.0003_drop" in job["message"]
    assert job["message"].endswith("blue live, unchanged (its code; the database changed: shop.0002_add applied)")


def test_a_migrate_that_failed_where_the_probe_fails_too_says_it_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.runner.report = contract_report()
    world.runner.report_after = gate_report(ok=False, error="database is down")
    world.runner.fail["migrate"] = "killed"
    job = world.job("deploy")
    assert (
        "could not tell which migrations were applied (migration gate: the migration probe failed: database is down)"
        in job["message"]
    )


def test_a_migration_probe_that_fails_fails_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="gate migrate")
    world.runner.report = gate_report(ok=False, error="ImproperlyConfigured: no SECRET_KEY")
    job = world.job("deploy")
    assert failed_step(job) == "gate"
    assert "migration gate: the migration probe failed: ImproperlyConfigured: no SECRET_KEY" in job["message"]


def test_git_that_does_not_answer_fails_the_step(world: World) -> None:
    world.runner.git_error = subprocess.TimeoutExpired(["git"], 120)
    job = world.job("deploy")
    assert failed_step(job) == "resolve" and "unknown ref 'main'" in job["message"]
    world.runner.git_error = None
    world.runner.on_run["collectstatic"] = lambda: None
    world.runner.fail["test"] = "stop"
    real_git = world.runner.git

    def fetch_hangs(args: tuple[str, ...], cwd: str) -> tuple[int, str]:
        if args[0] == "fetch":
            raise subprocess.TimeoutExpired(["git", "fetch"], 120)
        return real_git(args, cwd)

    world.runner.git = fetch_hangs  # type: ignore[method-assign]
    job = world.job("deploy")
    assert failed_step(job) == "checkout" and "git fetch: Command '['git', 'fetch']' timed out" in job["message"]


def test_an_environment_file_that_cannot_be_read_fails_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, build="test", environment_file=f"{tmp_path}/missing.env")
    job = world.job("deploy")
    assert failed_step(job) == "test"
    assert f"test: {tmp_path}/missing.env: cannot open: No such file or directory" in job["message"]


def test_an_environment_file_sh_would_read_otherwise_fails_the_step_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "app.env"
    env.write_text("SECRET_KEY='fine'\nDATABASE_URL=postgres://u:$PASS@db/x\n")
    world = World(tmp_path, monkeypatch, build="test", environment_file=str(env))
    job = world.job("deploy")
    assert failed_step(job) == "test"
    assert f"test: {env} line 2: DATABASE_URL: a $: sh expands it" in job["message"]
    assert "write it as DATABASE_URL='value'" in job["message"]


def test_a_changed_file_that_cannot_be_read_fails_the_step(world: World) -> None:
    world.runner.files["requirements.txt"] = runner.ReadError(22, "refusing it: not a regular file")
    job = world.job("deploy")
    assert failed_step(job) == "deps" and "deps: refusing it: not a regular file" in job["message"]


def test_a_cancel_stops_the_deploy_before_its_next_step(world: World) -> None:
    run = world.new_run("deploy")
    world.runner.on_run["test"] = lambda: world.store.request_cancel(run.job.id)
    jobs.execute(run)
    job = world.store.read_job(run.job.id) or {}
    # the next step of either lane (compress may not have started) or migrate: none starts
    assert job["status"] == "cancelled" and "shop: deploy failed: cancelled before " in job["message"]
    assert "migrate" not in step_names(job) and not world.runner.ran("migrate")
    assert world.rpc.started() == [] and world.links() == world.color("blue").socket


def test_a_listener_stopping_interrupts_the_deploy_before_its_next_step(world: World) -> None:
    run = world.new_run("deploy")
    world.runner.on_run["test"] = run.stopping.set
    jobs.execute(run)
    job = world.store.read_job(run.job.id) or {}
    # the next step of the test's lane or of the one beside it (collectstatic, compress) or migrate: none starts
    assert job["status"] == "interrupted" and "the listener is stopping" in job["message"], job["message"]
    assert job["message"].startswith("shop: deploy failed: interrupted before ")
    assert "migrate" not in step_names(job) and not world.runner.ran("migrate")


def test_a_cancel_during_the_health_gate_stops_the_new_color(world: World) -> None:
    world.probes.sick.add("green")
    run = world.new_run("deploy")
    world.probes.hook = lambda: world.store.request_cancel(run.job.id)  # while the gate probes
    jobs.execute(run)
    job = world.store.read_job(run.job.id) or {}
    assert job["status"] == "cancelled" and "green is not healthy: cancelled" in job["message"]
    assert world.rpc.calls[-1] == ("stop", "shop_green")


def test_a_new_color_that_cannot_be_stopped_after_a_failure_is_logged(world: World) -> None:
    world.rpc.states["shop_green"] = "STOPPED"
    world.rpc.refuse[("stopProcess", "shop_green")] = Faults.FAILED
    world.probes.sick.add("green")
    job = world.job("deploy")
    assert failed_step(job) == "health gate"
    assert "could not stop shop_green: cannot stop shop_green: refused: shop_green" in world.log(job)


def test_a_bug_in_a_step_ends_the_job_with_an_internal_error(world: World) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    world.runner.on_run["test"] = boom
    job = world.job("deploy")
    assert job["status"] == "failed"
    assert job["message"] == "shop: deploy failed: internal error RuntimeError: a bug\nblue live, unchanged"


def test_stored_arguments_a_deploy_does_not_take_fail_the_job(world: World) -> None:
    job = world.job("deploy", {"branch": "main"})
    assert job["status"] == "failed" and job["steps"] == []
    assert "bad arguments: deploy: unknown argument(s) branch (it takes: ref, allow_unsafe)" in job["message"]


# --------------------------------------------------------------------------------------------
# the backup step: the dump itself is backup.py's (its own tests); here, where the deploy puts it


def backup_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    (tmp_path / "backups").mkdir(mode=0o700)
    world = World(tmp_path, monkeypatch, build="backup migrate", backup_dir=f"{tmp_path}/backups",
                  verify_backup="true", backup_keep="1")  # fmt: skip
    world.live("blue", previous="green")
    return world


def test_a_backup_is_taken_verified_and_recorded_before_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = backup_world(tmp_path, monkeypatch)
    world.runner.database = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{tmp_path}/db.sqlite3"}
    dump = FakeDump(monkeypatch)
    old = tmp_path / "backups" / "shop-20000101-000000-0000000.sqlite.sql.gz"
    old.write_bytes(b"old")
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    assert job["backup"].startswith(f"{tmp_path}/backups/shop-") and Path(job["backup"]).exists()
    assert ".sqlite.sql.gz" in job["backup"] and dump.databases == [world.runner.database]  # the probe's answer
    assert job["backup_verify"]["ok"] is True
    assert world.runner.ran("migrate")
    assert not old.exists() and f"backup: removed old {old}" in world.log(job)


@pytest.mark.parametrize(("ok", "fails", "reason"), [
    (False, "", "does not restore as taken: shop_order: 3 rows, the dump has 4"),
    (True, "mysqldump: access denied", "backup failed: mysqldump: access denied"),
])  # fmt: skip
def test_a_backup_that_fails_stops_the_deploy_before_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ok: bool, fails: str, reason: str
) -> None:
    world = backup_world(tmp_path, monkeypatch)
    FakeDump(monkeypatch, ok=ok, fails=fails)
    job = world.job("deploy")
    assert failed_step(job) == "backup" and reason in job["message"]
    assert world.runner.ran("migrate") == [] and world.rpc.started() == []
