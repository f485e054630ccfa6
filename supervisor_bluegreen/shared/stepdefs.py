"""What a build step is, and the built-in ones: pure data, standard library only.

config.py needs these to validate ``build`` and ``step_*``; supervisord imports config.py, so this
module must not import subprocess, ctypes or anything of the listener side (host/runner.py runs them).
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_KEYS = ("python", "color", "checkout", "static_root")
WORKER_PING_KEYS = (*STEP_KEYS, "worker", "hostname")  # worker_ping: the program asked, and this host's name
# the safe order: nothing touches the live database before the release's own tests passed (Django's test
# runner uses a test database of its own), the gate refuses what the serving code cannot survive, and the
# backup is taken right before migrate
PRESETS = {"django": ("deps", "collectstatic", "compress", "test", "gate", "backup", "migrate")}


@dataclass(frozen=True)
class BuildStep:
    name: str
    argv: tuple[str, ...]  # empty: built into the deploy (backup, gate, deps)
    needs_command: str = ""  # run only when the app has this management command (the deploy's probe of the app says)
    when_changed: str = ""  # run only when this file of the checkout changed since the color last ran the step
    uncut: bool = False  # never cut in half: cancel, timeout and a listener stop or kill wait for it (migrate)
    # steps with a lane run beside the other lanes of their stage (one after another within the lane); a step
    # without one (deps, backup, migrate, one's own) runs alone, after all before it and before all after it
    lane: str = ""
    # the tests may read what the static lane writes (a manifest storage's names, compress's offline files):
    # when the app's settings say so, this step waits for that lane
    reads_collected: bool = False


Stage = tuple[tuple[BuildStep, ...], ...]  # lanes that run side by side, each a run of steps in order
STATIC_LANE = "static"


def stages(steps: tuple[BuildStep, ...], side_by_side: bool = True, reads_collected: bool = False) -> list[Stage]:
    """The build's steps as stages run one after another, each of lanes run side by side.

    Consecutive steps with a lane form one stage, a lane's steps in their listed order; a step without a
    lane is a stage of its own, so nothing crosses it. ``reads_collected`` (the app's tests read collected
    static files): a step that reads them joins the static lane when that lane's steps come before it.
    Without ``side_by_side`` every step is a stage of its own: the listed order, one at a time.
    """
    if not side_by_side:
        return [((step,),) for step in steps]
    out: list[Stage] = []
    group: dict[str, list[BuildStep]] = {}
    for step in (*steps, None):
        if step is not None and step.lane:
            lane = STATIC_LANE if step.reads_collected and reads_collected and STATIC_LANE in group else step.lane
            group.setdefault(lane, []).append(step)
            continue
        if group:
            out.append(tuple(tuple(lane) for lane in group.values()))
            group = {}
        if step is not None:
            out.append(((step,),))
    return out


def builtin_steps() -> dict[str, BuildStep]:
    """The steps of the Django preset: the color's dependencies, then the seed's hook in order."""
    manage = ("%(python)s", "manage.py")
    return {
        # dependencies belong to the release: installed into ITS virtualenv the way the app declares them
        # (uv.lock, pyproject.toml, requirements.txt: host/deps.py), only when they changed; a step_deps of
        # one's own runs when requirements.txt changed
        "deps": BuildStep("deps", (), when_changed="requirements.txt"),
        "backup": BuildStep("backup", ()),
        # the migration gate: which unapplied migrations the serving code survives (host/migrations/gate.py)
        "gate": BuildStep("gate", (), lane="gate"),
        # DDL is not transactional on MySQL/MariaDB: a migrate killed mid-way leaves a schema without its
        # django_migrations row, so nothing of ours ever kills it (but `cancel --force`)
        "migrate": BuildStep("migrate", (*manage, "migrate", "--noinput"), uncut=True),
        # collectstatic and compress write the release's static files, the tests use a test database of their own
        # and the gate only reads: they run side by side, the tests after the static files when they read them
        "collectstatic": BuildStep("collectstatic", (*manage, "collectstatic", "--noinput"), lane=STATIC_LANE),
        # django-compressor's offline compression; skipped (and said so) when the app does not use it
        "compress": BuildStep("compress", (*manage, "compress", "--force"), needs_command="compress", lane=STATIC_LANE),
        "test": BuildStep("test", (*manage, "test", "--noinput"), lane="test", reads_collected=True),
    }
