"""The build's stages: which steps run side by side (stepdefs.stages, pure), and what the deploy does with them
(against fakes.py): a failure stops the lanes beside it, outputs stay apart, one probe answers every question."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import COMMIT, OTHER, FakeDump, World, failed_step, step_names

from supervisor_bluegreen.shared.stepdefs import PRESETS, BuildStep, builtin_steps, stages

STEPS = builtin_steps()


def names(plan: list) -> list[list[list[str]]]:
    return [[[step.name for step in lane] for lane in stage] for stage in plan]


def preset() -> tuple[BuildStep, ...]:
    return tuple(STEPS[name] for name in PRESETS["django"])


def test_the_preset_runs_static_files_tests_and_gate_side_by_side_between_deps_and_backup() -> None:
    assert names(stages(preset())) == [
        [["deps"]],
        [["collectstatic", "compress"], ["test"], ["gate"]],
        [["backup"]],
        [["migrate"]],
    ]


def test_tests_that_read_collected_files_join_the_static_lane_after_it() -> None:
    assert names(stages(preset(), reads_collected=True))[1] == [["collectstatic", "compress", "test"], ["gate"]]
    # listed before the static files, the tests have nothing of theirs to wait for
    first = tuple(STEPS[n] for n in ("test", "collectstatic", "compress"))
    assert names(stages(first, reads_collected=True)) == [[["test"], ["collectstatic", "compress"]]]


def test_a_step_of_ones_own_runs_alone_and_nothing_crosses_it() -> None:
    lessc = BuildStep("lessc", ("lessc", "x.less"))
    steps = (STEPS["deps"], STEPS["test"], lessc, STEPS["collectstatic"], STEPS["compress"], STEPS["gate"])
    assert names(stages(steps)) == [[["deps"]], [["test"]], [["lessc"]], [["collectstatic", "compress"], ["gate"]]]


def test_side_by_side_off_runs_the_listed_order_one_at_a_time() -> None:
    assert names(stages(preset(), side_by_side=False)) == [[[n]] for n in PRESETS["django"]]


# -- the deploy --------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path, monkeypatch, build="django", backup_dir=f"{tmp_path}/backups")
    (tmp_path / "backups").mkdir(mode=0o700)
    w.live("blue", previous="green")
    for color in w.app.colors:
        w.runner.heads[color.checkout] = OTHER
    w.runner.files["requirements.txt"] = b"django\n"
    w.runner.database = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{tmp_path}/db.sqlite3"}
    FakeDump(monkeypatch)
    return w


def probes(world: World) -> list[tuple[str, ...]]:
    """Every Django interpreter started only to ask something (the probe, a settings shell, `help`)."""
    return [argv for argv, _ in world.runner.commands if argv[1:3] in (("manage.py", "shell"), ("manage.py", "help"))]


def test_one_probe_answers_the_gate_the_optional_steps_and_the_backup(world: World) -> None:
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    assert len(probes(world)) == 1
    assert step_names(job).count("probe") == 1 and job["backup"].endswith(f"-{COMMIT[:7]}.sqlite.sql.gz")
    log = world.log(job)
    assert "[compress] compress: skipped, the app has no 'compress' management command" in log
    assert "[gate] migration gate: no unapplied migrations" in log


def test_a_failing_step_stops_the_lanes_beside_it_and_fails_the_deploy_with_its_reason(world: World) -> None:
    world.runner.hang.add("test")  # the tests run on...
    world.runner.fail["collectstatic"] = "ImproperlyConfigured: STATIC_ROOT"  # ...until the static files fail
    job = world.job("deploy")
    assert job["status"] == "failed" and failed_step(job) in ("collectstatic", "test")
    assert job["message"].startswith("shop: deploy failed: collectstatic failed: exit status 1: ImproperlyConfigured")
    assert job["message"].endswith("blue live, unchanged")
    log = world.log(job)
    assert "    | [collectstatic] ImproperlyConfigured: STATIC_ROOT" in log  # outputs apart: each line tagged
    assert "[test] stopped: collectstatic failed" in log
    assert not world.runner.ran("compress") and not world.runner.ran("migrate") and world.rpc.calls == []
    assert "backup" not in step_names(job)


def test_tests_wait_for_the_static_files_when_the_apps_storage_reads_them(world: World) -> None:
    world.runner.reads_collected = True
    world.runner.tools.add("compress")
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    order = [argv[2] for argv, _ in world.runner.commands if argv[1:2] == ("manage.py",) and argv[2] != "shell"]
    assert order[:3] == ["collectstatic", "compress", "test"], order
    assert "the tests read collected static files" in world.log(job)


def test_side_by_side_off_runs_each_step_alone_untagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, build="deps collectstatic compress test migrate", side_by_side="no")
    world.runner.files["requirements.txt"] = b"django\n"
    job = world.job("deploy")
    assert job["status"] == "succeeded", job["message"]
    assert step_names(job)[4:10] == ["deps", "collectstatic", "probe", "compress", "test", "migrate"]
    assert "[" + "test]" not in world.log(job)


def probe_lines(log: str) -> list[str]:
    """The probe's start lines, past their timestamps: a lane's tag shows it ran beside other steps."""
    return [line.split("] ", 1)[1] for line in log.splitlines() if line.endswith("probe ...")]


def test_the_apps_last_answer_lets_the_tests_start_at_once(world: World) -> None:
    first = world.log(world.job("deploy"))
    assert probe_lines(first) == ["probe ..."]  # asked first, alone: no lane around it
    assert world.store.read()["reads_collected"] is False
    world.store.update(watch=None)  # its window passed
    second = world.job("deploy")
    assert second["status"] == "succeeded", second["message"]
    (line,) = probe_lines(world.log(second))
    assert line in ("[compress] probe ...", "[gate] probe ..."), line  # inside a lane now, beside the tests
    assert len(probes(world)) == 2  # still one per deploy


def test_tests_that_failed_beside_static_files_they_now_read_say_the_next_deploy_waits(world: World) -> None:
    world.store.update(reads_collected=False)  # as the last deploy found
    world.runner.reads_collected = True  # this release's storage reads the manifest
    world.runner.fail["test"] = "ValueError: Missing staticfiles manifest entry for 'site.css'"
    job = world.job("deploy")
    assert job["status"] == "failed" and "Missing staticfiles manifest entry" in job["message"]
    assert "the next deploy runs them after it" in job["message"]
    assert world.store.read()["reads_collected"] is True
    world.runner.fail.clear()
    again = world.job("deploy")  # the failed deploy opened no window
    assert again["status"] == "succeeded", again["message"]
    assert "the tests read collected static files" in world.log(again)
