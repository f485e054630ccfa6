"""What a build step is, and the built-in ones: pure data, standard library only.

config.py needs these to validate ``build`` and ``step_*``; supervisord imports config.py, so this
module must not import subprocess, ctypes or anything of the listener side (steps.py runs them).
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_KEYS = ("python", "color", "checkout", "static_root")
PRESETS = {"django": ("deps", "backup", "migrate", "collectstatic", "compress", "test")}


@dataclass(frozen=True)
class BuildStep:
    name: str
    argv: tuple[str, ...]  # empty: built into the deploy (backup)
    skip_unless: tuple[str, ...] = ()  # run only when this probe succeeds: optional tools such as compress
    when_changed: str = ""  # run only when this file of the checkout changed since the color last ran the step


def builtin_steps() -> dict[str, BuildStep]:
    """The steps of the Django preset: the color's dependencies, then the seed's hook in order."""
    manage = ("%(python)s", "manage.py")
    return {
        # dependencies belong to the color: installed into ITS virtualenv, and only when they changed
        "deps": BuildStep(
            "deps",
            ("%(python)s", "-m", "pip", "install", "--requirement", "requirements.txt"),
            when_changed="requirements.txt",
        ),
        "backup": BuildStep("backup", ()),
        "migrate": BuildStep("migrate", (*manage, "migrate", "--noinput")),
        "collectstatic": BuildStep("collectstatic", (*manage, "collectstatic", "--noinput")),
        # django-compressor's offline compression; skipped (and said so) when the app does not use it
        "compress": BuildStep("compress", (*manage, "compress", "--force"), skip_unless=(*manage, "help", "compress")),
        "test": BuildStep("test", (*manage, "test", "--noinput")),
    }
