"""The jinja2 templates root renders (templates/): each one renders strictly for a typical app, and what init
renders from them is read by the programs that read it (bluegreen's config parser, supervisor's own)."""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import jinja2
import pytest
from supervisor.options import UnhosedConfigParser

from supervisor_bluegreen.ctl import init
from supervisor_bluegreen.ctl.init import Facts, Options
from supervisor_bluegreen.host import templating
from supervisor_bluegreen.shared import config

FACTS = Facts(
    wsgi="mysite.wsgi:application",
    static_root="staticfiles",
    media_root="/srv/mysite/media",
    health_path="/admin/login/",
    built=True,
)
OPTS = Options(
    app="mysite",
    repo="https://example.org/mysite.git",
    server_name="mysite.example.org",
    workers=("celery -A mysite worker", "celery -A mysite beat"),
    ssl_certificate="/etc/ssl/mysite.pem",
    ssl_certificate_key="/etc/ssl/mysite.key",
)
# (options, facts, the [program:...] sections init writes)
CASES = {
    # the Celery worker one per color (handed over), beat one that follows live_root (never two at once)
    "typical": (
        OPTS,
        FACTS,
        ["mysite_blue", "mysite_green", "mysite_celery_blue", "mysite_celery_green", "mysite_celery2"],
    ),
    "bare": (Options(app="t", repo="x"), Facts(), ["t_blue", "t_green"]),
    "absolute static, control socket, one worker": (
        dataclasses.replace(OPTS, workers=("/usr/bin/rqworker -q",), branch="release", listen="127.0.0.1:8080"),
        dataclasses.replace(FACTS, static_root="/srv/mysite/shared/static", control_socket=True, media_root=""),
        ["mysite_blue", "mysite_green", "mysite_rqworker"],
    ),
}


def rendered(monkeypatch: pytest.MonkeyPatch, o: Options, f: Facts) -> tuple[dict[str, dict[str, object]], list]:
    """(template name -> the values it was rendered with, the plan) of init's plan for ``o`` and ``f``."""
    seen: dict[str, dict[str, object]] = {}
    real = templating.render_file

    def spy(path: str, **values: object) -> str:
        seen[os.path.basename(path)] = values
        return real(path, **values)

    monkeypatch.setattr(templating, "render_file", spy)
    return seen, init.plan(o, f)


def test_every_template_renders_for_a_typical_app_and_uses_every_value_strictly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A template nothing renders, or a value it needs and is not given, fails here (not on a user's machine)."""
    seen, _ = rendered(monkeypatch, OPTS, FACTS)
    assert sorted(seen) == templating.package_templates() == ["app.ini.j2", "programs.conf.j2", "site.conf.j2"]
    for name, values in seen.items():
        path = os.path.join(config.TEMPLATE_DIR, name)
        assert templating.render_file(path, **values).endswith("\n")
        for key in values:  # every value is laid out, and a missing one is an error, never ""
            with pytest.raises(jinja2.UndefinedError):
                templating.render_file(path, **{k: v for k, v in values.items() if k != key})


def test_the_environment_is_sandboxed_and_strict() -> None:
    env = templating.ENVIRONMENT
    assert isinstance(env, jinja2.sandbox.SandboxedEnvironment)
    assert env.undefined is jinja2.StrictUndefined and not env.autoescape


def written(o: Options, f: Facts, path: str) -> str:
    return "\n".join(a.content for a in init.plan(o, f) if a.path == path and a.kind in ("file", "append"))


@pytest.mark.parametrize("case", list(CASES))
def test_the_app_config_init_writes_loads(case: str, tmp_path: Path) -> None:
    o, f, programs = CASES[case]
    path = tmp_path / "bluegreen.ini"
    path.write_text(written(o, f, o.config))  # the [bluegreen] section, then the app's
    app = config.load(str(path)).app(o.app)
    assert [c.program for c in app.colors] == programs[:2]
    own = [w for c in app.colors for w in c.workers]  # a Celery worker's, one per color
    assert app.deploy is not None and sorted([*own, *app.deploy.workers]) == sorted(programs[2:])
    assert app.live_root == (f"{o.app_root}/live" if app.deploy.workers else "")
    static = f.static_root if os.path.isabs(f.static_root) else f"{o.app_root}/green/src/{f.static_root}"
    assert app.color("green").static_root == (static if f.static_root else "")
    assert (app.listen, app.server_name) == (o.listen, o.server_name)


@pytest.mark.parametrize("case", list(CASES))
def test_the_programs_file_init_writes_parses_in_supervisor(case: str) -> None:
    o, f, programs = CASES[case]
    parser = UnhosedConfigParser()
    parser.read_string(written(o, f, f"{f.include_dir}/{o.app}.conf"))
    assert parser.sections() == [f"program:{p}" for p in programs]
    for p in programs:
        argv = shlex.split(parser.saneget(f"program:{p}", "command", expansions={"program_name": p}))
        assert argv[:2] == ["/bin/sh", "-c"] and argv[2].startswith(f"set -a && . {init.env_file_path(o)} && ")
        assert parser.saneget(f"program:{p}", "user") == o.user_name
        assert parser.saneget(f"program:{p}", "stdout_logfile").endswith(f"/{p}.out.log")
