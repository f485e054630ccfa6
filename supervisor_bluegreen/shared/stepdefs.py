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
    skip_unless: tuple[str, ...] = ()  # run only when this probe succeeds: optional tools such as compress
    when_changed: str = ""  # run only when this file of the checkout changed since the color last ran the step
    uncut: bool = False  # never cut in half: cancel, timeout and a listener stop or kill wait for it (migrate)


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
        "gate": BuildStep("gate", ()),
        # DDL is not transactional on MySQL/MariaDB: a migrate killed mid-way leaves a schema without its
        # django_migrations row, so nothing of ours ever kills it (but `cancel --force`)
        "migrate": BuildStep("migrate", (*manage, "migrate", "--noinput"), uncut=True),
        "collectstatic": BuildStep("collectstatic", (*manage, "collectstatic", "--noinput")),
        # django-compressor's offline compression; skipped (and said so) when the app does not use it
        "compress": BuildStep("compress", (*manage, "compress", "--force"), skip_unless=(*manage, "help", "compress")),
        "test": BuildStep("test", (*manage, "test", "--noinput")),
    }
