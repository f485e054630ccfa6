"""Tests for ``bluegreen init``: the plan is pure (options + facts -> files and commands), the executor
idempotent, and what it writes is read by the programs that will read it (config.parse, supervisor's own
option parser, nginx -t). The slow end-to-end run on a fresh Debian root is `make install-test`."""

from __future__ import annotations

import configparser
import dataclasses
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from supervisor_bluegreen.ctl import init
from supervisor_bluegreen.ctl.init import Action, Facts, Options
from supervisor_bluegreen.host import envfile
from supervisor_bluegreen.shared import config

NGINX = "/usr/sbin/nginx"
FACTS = Facts(
    bluegreen="/opt/supervisor-bluegreen/bin/bluegreen",
    package_dir="/opt/supervisor-bluegreen/lib/python3.11/site-packages/supervisor_bluegreen",
    wsgi="mysite.wsgi:application",
    static_root="staticfiles",
    media_root="/srv/mysite/media",
    health_path="/admin/login/",
    health_status=200,
    built=True,
)
OPTS = Options(
    app="mysite",
    repo="https://example.org/mysite.git",
    server_name="mysite.example.org",
    env=(("SECRET_KEY", "s3 cr'et"),),
    workers=("celery -A mysite worker -c 2",),
)


def by_path(acts: list[Action], path: str, kind: str = "") -> Action:
    found = [a for a in acts if a.path == path and (not kind or a.kind == kind)]
    assert found, f"no action for {path}"
    return found[-1]


def test_plan_is_pure_and_complete() -> None:
    acts = init.plan(OPTS, FACTS)
    assert acts == init.plan(OPTS, FACTS)
    paths = {a.path for a in acts}
    for path in (
        "/srv/mysite/run",
        "/var/lib/supervisor-bluegreen",
        "/var/backups/supervisor-bluegreen",
        "/etc/supervisor-bluegreen/mysite.env",
        "/etc/supervisor/bluegreen.ini",
        "/etc/supervisor/conf.d/mysite.conf",
        "/etc/supervisor/conf.d/bluegreen.conf",
        "/etc/supervisor/supervisord.conf",
        "/etc/nginx/sites-available/mysite.conf",
        "/etc/nginx/sites-enabled/mysite.conf",
        "/srv/mysite/app.git/hooks/pre-receive",
        "/etc/sudoers.d/bluegreen-mysite",
        "/srv/mysite/media",
    ):
        assert path in paths
    commands = [shlex.join(a.argv) for a in acts if a.kind == "run"]
    assert "git clone --quiet --bare https://example.org/mysite.git /srv/mysite/app.git" in commands
    for color in ("blue", "green"):
        assert f"/usr/bin/python3 -m venv /srv/mysite/{color}/venv" in commands
        assert f"/srv/mysite/{color}/venv/bin/python -m pip install --quiet --requirement requirements.txt" in commands
        assert f"/srv/mysite/{color}/venv/bin/python manage.py collectstatic --noinput" in commands
    assert sum("manage.py migrate" in c for c in commands) == 1  # once: both colors share the database
    assert [a.argv[0] for a in acts if a.kind == "user"] == ["useradd"]
    assert not [a for a in init.plan(OPTS, Facts(user_exists=True)) if a.kind == "user"]  # reused


def test_state_and_secrets_are_private_and_owned_right() -> None:
    acts = init.plan(OPTS, FACTS)
    env = by_path(acts, "/etc/supervisor-bluegreen/mysite.env")
    assert (env.owner, env.group, env.mode) == ("root", "mysite", 0o640)
    assert envfile.parse(env.content) == {"SECRET_KEY": "s3 cr'et"}
    for path in ("/var/lib/supervisor-bluegreen", "/var/backups/supervisor-bluegreen"):
        assert (by_path(acts, path).owner, by_path(acts, path).mode) == ("root", 0o750)
    assert by_path(acts, "/etc/sudoers.d/bluegreen-mysite").mode == 0o440
    rule = by_path(acts, "/etc/sudoers.d/bluegreen-mysite").content.splitlines()[-1]
    assert rule == (
        "mysite ALL=(root) NOPASSWD: /opt/supervisor-bluegreen/bin/bluegreen push "
        "-c /etc/supervisor/supervisord.conf mysite *"
    )
    builds = [a for a in acts if a.kind == "run" and "manage.py" in a.argv]
    assert builds and all(a.run_as == "mysite" and a.env_file.endswith("mysite.env") for a in builds)


def test_written_app_config_loads_and_needs_no_app_code() -> None:
    acts = init.plan(OPTS, FACTS)
    text = "".join(a.content for a in acts if a.path == "/etc/supervisor/bluegreen.ini")
    app = config.parse(text, "/etc/supervisor/bluegreen.ini").app("mysite")
    assert app.color_header == ""  # verify needs no header the app would have to send
    assert (app.health.path, app.health.status, app.health.host) == ("/admin/login/", 200, "mysite.example.org")
    assert app.color("green").static_root == "/srv/mysite/green/src/staticfiles"
    assert app.color("blue").environment_file == "/etc/supervisor-bluegreen/mysite.env"
    assert app.deploy is not None and app.deploy.workers == ()  # a Celery worker: one per color, handed over
    assert app.color("green").workers == ("mysite_celery_green",) and app.deploy.worker_ping[-1] == (
        "%(worker)s@%(hostname)s"
    )
    assert app.deploy.worker_ping[:5] == ("%(python)s", "-m", "celery", "-A", "mysite")
    assert app.live_root == ""  # nothing follows the live_root link
    assert app.server_name == "mysite.example.org"


def supervisor_sections(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


@pytest.mark.parametrize("control_socket", [True, False])
def test_programs_match_what_the_apps_gunicorn_supports(control_socket: bool) -> None:
    import dataclasses

    facts = dataclasses.replace(FACTS, control_socket=control_socket)
    text = by_path(init.plan(OPTS, facts), "/etc/supervisor/conf.d/mysite.conf").content
    programs = supervisor_sections(text)
    blue = programs["program:mysite_blue"]
    argv = shlex.split(blue["command"])
    assert argv[:2] == ["/bin/sh", "-c"]
    inner = argv[2]
    assert inner.startswith("set -a && . /etc/supervisor-bluegreen/mysite.env && set +a && exec ")
    assert ("--control-socket /srv/mysite/run/gunicorn.blue.ctl" in inner) == control_socket
    assert "unix:/srv/mysite/run/mysite.blue.sock" in inner and inner.endswith("mysite.wsgi:application")
    assert (blue["stopwaitsecs"], blue["stopasgroup"], blue["user"]) == ("40", "true", "mysite")
    for color in ("blue", "green"):  # each color's own worker, on its release, named for its program
        celery = programs[f"program:mysite_celery_{color}"]
        inner = shlex.split(celery["command"])[2]
        assert f"exec /srv/mysite/{color}/venv/bin/celery -A mysite worker -c 2 -n '%(program_name)s@%%h'" in inner
        assert (celery["stopasgroup"], celery["killasgroup"], celery["autostart"], celery["directory"]) == (
            "false",
            "true",
            "false",
            f"/srv/mysite/{color}/src",
        )


def test_programs_parse_in_supervisor(tmp_path: Path) -> None:
    from supervisor.options import ServerOptions

    text = by_path(init.plan(dataclasses_replace(OPTS, user="nobody"), FACTS), "/etc/supervisor/conf.d/mysite.conf")
    (tmp_path / "programs.conf").write_text(text.content.replace("/var/log/supervisor/", f"{tmp_path}/"))
    (tmp_path / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={tmp_path}/s.log\npidfile={tmp_path}/s.pid\n"
        f"[include]\nfiles = {tmp_path}/programs.conf\n"
    )
    opts = ServerOptions()
    opts.realize(args=["-c", str(tmp_path / "supervisord.conf")])
    names = sorted(g.name for g in opts.process_group_configs)
    assert names == ["mysite_blue", "mysite_celery_blue", "mysite_celery_green", "mysite_green"]


def test_include_points_at_the_installed_executable_and_config() -> None:
    acts = init.plan(dataclasses_replace(OPTS, config="/etc/supervisor/bg.ini"), FACTS)
    include = by_path(acts, "/etc/supervisor/conf.d/bluegreen.conf").content
    assert "command = /opt/supervisor-bluegreen/bin/bluegreen listener --config /etc/supervisor/bg.ini" in include
    assert "/usr/local/bin/bluegreen" not in include
    hook = by_path(acts, "/srv/mysite/app.git/hooks/pre-receive")
    assert hook.owner == "root" and hook.mode == 0o755


def dataclasses_replace(o: Options, **kw: str) -> Options:
    import dataclasses

    return dataclasses.replace(o, **kw)


def test_debian_supervisord_gets_a_pth_outside_apts_files() -> None:
    import dataclasses

    facts = dataclasses.replace(FACTS, plugin_site_dir="/usr/local/lib/python3.11/dist-packages")
    acts = init.plan(OPTS, facts)
    pth = by_path(acts, "/usr/local/lib/python3.11/dist-packages/supervisor-bluegreen.pth")
    assert pth.content == "/opt/supervisor-bluegreen/share/supervisor-bluegreen/plugin\n"
    link = by_path(acts, "/opt/supervisor-bluegreen/share/supervisor-bluegreen/plugin/supervisor_bluegreen")
    assert link.kind == "link" and link.content == FACTS.package_dir
    assert not [a for a in init.plan(OPTS, FACTS) if a.path.endswith(".pth")]  # supervisord imports it already


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
def test_written_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    from conftest import write_nginx_conf

    site = by_path(
        init.plan(dataclasses_replace(OPTS, listen="127.0.0.1:8080"), FACTS), "/etc/nginx/sites-available/mysite.conf"
    )
    assert "server unix:/srv/mysite/run/mysite.live.sock" in site.content
    conf = write_nginx_conf(tmp_path, site.content)
    done = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
def test_apply_is_idempotent(tmp_path: Path) -> None:
    o = Options(app="t", repo="x", root=str(tmp_path / "app"))
    (tmp_path / "app").mkdir(mode=0o755)
    owner = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
    stamp = tmp_path / "state" / "stamp"  # root's, outside the app's tree
    stamp.parent.mkdir()
    acts = [
        Action("dir", str(tmp_path / "app" / "d"), owner=owner, mode=0o750),
        Action("file", str(tmp_path / "app" / "d" / "f"), content="one\n", owner=owner, mode=0o640),
        Action("append", str(tmp_path / "ini"), content="[a]\nx = 1\n", owner=owner),
        Action("append", str(tmp_path / "ini"), content="[b]\ny = 2\n", owner=owner),
        Action("link", str(tmp_path / "app" / "l"), content=str(tmp_path / "app" / "d" / "f")),
        Action("run", argv=("touch", str(tmp_path / "ran")), creates=str(stamp), stamp=True),
        Action("own", str(tmp_path / "app" / "d"), owner=owner),
        Action(
            "run",
            argv=("sh", "-c", f"echo set > {tmp_path}/value"),
            done_when=("cat", str(tmp_path / "value")),
            done_output="set",
        ),
    ]
    first = [init.apply(a, o) for a in acts]
    assert first == ["created", "created", "created", "added", "created", "ran", "exists", "ran"]
    before = {p: (p.read_bytes() if p.is_file() else None, p.lstat().st_mode) for p in tmp_path.rglob("*")}
    again = ["exists", "exists", "exists", "exists", "exists", "done before", "exists", "done before"]
    assert [init.apply(a, o) for a in acts] == again
    assert {p: (p.read_bytes() if p.is_file() else None, p.lstat().st_mode) for p in tmp_path.rglob("*")} == before
    assert (tmp_path / "ini").read_text() == "[a]\nx = 1\n\n[b]\ny = 2\n"
    assert stat.S_IMODE((tmp_path / "app" / "d" / "f").stat().st_mode) == 0o640
    # a file the user changed is kept, and said so
    (tmp_path / "app" / "d" / "f").write_text("mine\n")
    assert init.apply(acts[1], o).startswith("kept")
    assert (tmp_path / "app" / "d" / "f").read_text() == "mine\n"


@pytest.mark.integration
def test_envfile_round_trip_and_sh_agree(tmp_path: Path) -> None:
    env = {"A": "plain", "B": "with space", "C": 'it\'s $HOME `x` "q"', "D": ""}
    path = tmp_path / "app.env"
    path.write_text(envfile.render(env))
    assert envfile.read(str(path)) == env
    out = subprocess.run(
        ["/bin/sh", "-c", f'set -a && . {path} && printf "%s\\n" "$A" "$B" "$C" "$D"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["plain", "with space", 'it\'s $HOME `x` "q"', ""]
    with pytest.raises(envfile.EnvFileError, match="line 1"):
        envfile.parse("not a pair\n")
    os.symlink(path, tmp_path / "link.env")
    with pytest.raises(envfile.EnvFileError):
        envfile.read(str(tmp_path / "link.env"))


def test_an_environment_file_sh_would_read_otherwise_stops_init_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text(envfile.render({"SECRET_KEY": "s3 cr'et $x"}) + "DB_PASSWORD=abc#def\n")
    o = Options(app="t", repo="x", root=str(tmp_path / "app"))
    with pytest.raises(init.InitError, match=f"^{path} line 2: DB_PASSWORD: a #.*single quotes"):
        init._user_env(o, str(path))


@pytest.mark.integration
def test_dry_run_on_an_unmodified_django_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """django-admin startproject, a requirements.txt pinning gunicorn 22: the plan, and nothing done."""
    import sys

    repo = tmp_path / "site"
    repo.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(repo)], check=True, capture_output=True
    )
    (repo / "requirements.txt").write_text("Django\ngunicorn==22.0.0\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "trunk"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)
    o = Options(app="mysite", repo=str(repo), root=str(tmp_path / "srv"), nginx_dir=str(tmp_path / "nginx"))
    facts = init.discover(o)
    assert (facts.branch, facts.wsgi, facts.control_socket, facts.built) == (
        "trunk",
        "mysite.wsgi:application",
        False,
        False,
    )
    assert init.main(o, dry_run=True) == 0
    out = capsys.readouterr().out
    assert f"git clone --quiet --bare {repo} {tmp_path}/srv/app.git" in out
    assert "--branch trunk" in out
    assert not (tmp_path / "srv").exists()  # a dry run changes nothing


def test_https_options_reach_the_site() -> None:
    o = dataclasses_replace(OPTS, ssl_certificate="/etc/ssl/m.crt", ssl_certificate_key="/etc/ssl/m.key")
    site = by_path(init.plan(o, FACTS), "/etc/nginx/sites-available/mysite.conf").content
    assert "listen 443 ssl;" in site and "ssl_certificate_key /etc/ssl/m.key;" in site
    assert "return 301 https://$host$request_uri;" in site


def probe(**changes: object) -> dict:
    """What DJANGO_PROBE prints for a startproject app whose login page answers, changed by ``changes``."""
    info = {"static_root": "/srv/mysite/blue/src/staticfiles", "static_url": "/static/", "media_root": "",
            "media_url": "/", "wsgi": "mysite.wsgi.application", "answers": {"/": 404, "/admin/login/": 200},
            "db_engine": "django.db.backends.mysql", "db_name": "mysite"}  # fmt: skip
    return {**info, **changes}


SRC = "/srv/mysite/blue/src"


def test_facts_from_the_built_app() -> None:
    facts = init.facts_from_probe(OPTS, SRC, probe())
    assert facts == {"built": True, "wsgi": "mysite.wsgi:application", "static_root": "staticfiles",
                     "health_path": "/admin/login/", "health_status": 200,
                     "db_engine": "django.db.backends.mysql"}  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [{"wsgi": "mysite.wsgi\n[program:pwn]\ncommand = /usr/bin/id\n[x]\ny = .application"},
     {"static_root": "/srv/mysite/static;\n    error_log /etc/cron.d/pwn"},
     {"media_root": "/srv/mysite/media {", "media_url": "/media/"},
     {"media_url": "/media/;error_log/x/"}, {"wsgi": ["not", "a", "name"]}],
)  # fmt: skip
def test_settings_that_would_add_lines_to_roots_config_files_are_refused(changes: dict) -> None:
    """The probe's answer is the app's code talking: a newline or ';' in it would become a program supervisord
    runs as root, or a directive nginx's master obeys, in files init writes."""
    with pytest.raises(init.InitError, match="must be a plain dotted name or path"):
        init.facts_from_probe(OPTS, SRC, probe(**changes))


@pytest.mark.parametrize(
    ("name", "inside"),
    [(f"{SRC}/db.sqlite3", True), ("db.sqlite3", True), ("/srv/mysite/home/db.sqlite3", False),
     (f"{SRC}-old/db.sqlite3", False), (":memory:", False)],
)  # fmt: skip
def test_a_sqlite_file_inside_the_checkout_is_a_note_with_the_fix(name: str, inside: bool) -> None:
    facts = init.facts_from_probe(OPTS, SRC, probe(db_engine="django.db.backends.sqlite3", db_name=name))
    notes = [n for n in facts.get("notes", ()) if "SQLite" in n]
    assert len(notes) == inside
    for note in notes:
        assert f"inside the checkout ({name})" in note and "each color has its own copy" in note
        assert f"DB_PATH={OPTS.app_root}/home/db.sqlite3" in note and init.env_file_path(OPTS) in note


def test_no_answering_url_is_a_note_naming_allowed_hosts() -> None:
    facts = init.facts_from_probe(OPTS, SRC, probe(answers={"/": 400, "/admin/login/": 400}))
    assert "health_path" not in facts
    (note,) = facts["notes"]
    assert "is mysite.example.org in ALLOWED_HOSTS?" in note


def test_root_keeps_its_stamps_and_the_app_its_home_and_database() -> None:
    """Stamps root writes live in root's state folder; the home is 0750; a SQLite file in the tree is 0600."""
    facts = init.facts_from_probe(OPTS, SRC, probe(db_engine="django.db.backends.sqlite3",
                                                   db_name="/srv/mysite/home/db.sqlite3"))  # fmt: skip
    assert facts["sqlite_path"] == "/srv/mysite/home/db.sqlite3"
    acts = init.plan(OPTS, dataclasses_replace(FACTS, **facts))
    stamps = [a.creates for a in acts if a.stamp]
    assert len(stamps) == 5 and all(s.startswith("/var/lib/supervisor-bluegreen/mysite/init/") for s in stamps)
    home = by_path(acts, "/srv/mysite/home", "dir")
    assert (home.owner, home.mode) == ("mysite", 0o750)
    db = by_path(acts, "/srv/mysite/home/db.sqlite3")
    assert (db.kind, db.owner, db.mode) == ("private", "mysite", 0o600)
    for name in ("/srv/mysite/blue/src/db.sqlite3", "/var/lib/mysite/db.sqlite3", "db.sqlite3"):
        other = init.facts_from_probe(OPTS, SRC, probe(db_engine="django.db.backends.sqlite3", db_name=name))
        assert "sqlite_path" not in other


def test_programs_keep_umask_022_for_nginx() -> None:
    """supervisord's own umask is 027; its programs make static and media files nginx (another user) reads."""
    text = by_path(init.plan(OPTS, FACTS), "/etc/supervisor/conf.d/mysite.conf").content
    programs = supervisor_sections(text)
    assert {programs[s]["umask"] for s in programs.sections()} == {"022"}
    include = supervisor_sections(by_path(init.plan(OPTS, FACTS), "/etc/supervisor/conf.d/bluegreen.conf").content)
    assert include["supervisord"]["umask"] == "027" and include["eventlistener:bluegreen"]["umask"] == "022"


def test_apply_follows_roots_own_links_outside_the_app_tree(tmp_path: Path) -> None:
    """An admin's supervisord.conf that is a link to the real file: appended there, the link kept."""
    (tmp_path / "app").mkdir(mode=0o755)
    o = Options(app="t", repo="x", root=str(tmp_path / "app"))
    real = tmp_path / "real.conf"
    real.write_text("[supervisord]\n")
    (tmp_path / "supervisord.conf").symlink_to(real)
    assert init.apply(Action("append", str(tmp_path / "supervisord.conf"), content=init.CTLPLUGIN), o) == "added"
    assert (tmp_path / "supervisord.conf").is_symlink() and "[ctlplugin:bluegreen]" in real.read_text()
    with pytest.raises(init.InitError, match="outside the app's folder"):
        init.apply(Action("dir", str(tmp_path / "elsewhere"), owner="nobody"), o)


def test_requirements_are_read_through_their_includes_and_pyproject_as_declared() -> None:
    files = {
        "requirements.txt": "# production\n-r requirements/production.txt\n",
        "requirements/production.txt": "-r base.txt\ngunicorn==23.0.0  # https://github.com/benoitc/gunicorn\n",
        "requirements/base.txt": "django==5.1\n--requirement=../extra.txt\n",
        "extra.txt": "celery==5.4\n",
    }
    text = init.requirement_text(lambda name: files.get(name, ""), "requirements.txt")
    assert [line for line in text.splitlines() if line and not line.startswith("#")] == [
        "django==5.1",
        "celery==5.4",
        "gunicorn==23.0.0  # https://github.com/benoitc/gunicorn",
    ]
    loop = init.requirement_text(lambda name: "-r requirements.txt\n", "requirements.txt")  # includes itself
    assert loop.strip() == "-r requirements.txt"
    pyproject = '[project]\nname = "shop"\ndependencies = [\n  "django>=5.1",\n  "gunicorn[gevent]==23.0.0",\n]\n'
    assert init.pyproject_requirements(pyproject).splitlines() == ["shop", "django>=5.1", "gunicorn[gevent]==23.0.0"]


def test_a_later_init_merges_new_env_keys_and_changes_a_value_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "shop.env"

    def run(**env: str) -> str:
        replace = env.pop("replace", "")
        o = Options(app="shop", repo="r", root=str(tmp_path / "srv"), env=tuple(env.items()), replace_env=bool(replace))
        [action] = [a for a in init.plan(o, FACTS) if a.kind == "env"]
        return init.apply(Action("env", str(path), content=action.content, mode=0o640), o)

    assert run(SECRET_KEY="s1") == "created"
    path.chmod(0o600)  # what someone gave it is kept
    assert run(SECRET_KEY="s1", SENTRY_DSN="https://x@y/1") == "merged (added SENTRY_DSN)"
    assert envfile.parse(path.read_text()) == {"SECRET_KEY": "s1", "SENTRY_DSN": "https://x@y/1"}
    before = path.read_text()
    said = run(SECRET_KEY="other")
    assert said == "exists (kept SECRET_KEY: the file has another value (--replace-env changes it))"
    assert path.read_text() == before
    assert run(SECRET_KEY="other", replace="1") == "merged (changed SECRET_KEY)"
    assert envfile.parse(path.read_text()) == {"SECRET_KEY": "other", "SENTRY_DSN": "https://x@y/1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run(SECRET_KEY="other") == "exists"


def test_a_second_app_on_a_server_with_the_plugin_loaded_is_told_update_not_reload() -> None:
    unit = "/lib/systemd/system/supervisor.service"
    first = init.go_live(OPTS, dataclasses.replace(FACTS, supervisor_unit=unit))
    assert any(line.startswith("systemctl daemon-reload && systemctl restart supervisor.service") for line in first)
    second = init.go_live(OPTS, dataclasses.replace(FACTS, supervisor_unit=unit, plugin_loaded=True))
    assert "supervisorctl reread && supervisorctl update" in second[1]
    assert not any("supervisorctl reload" in line or "systemctl restart" in line for line in second), second
    assert second[1:3] == [second[1], "supervisorctl bluegreen deploy mysite    # the first go-live"]


@pytest.mark.integration
def test_plugin_loaded_asks_the_running_supervisord(tmp_path: Path) -> None:
    assert init.plugin_loaded(str(tmp_path / "missing.conf")) is False
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile = {tmp_path}/none.sock\n")
    assert init.plugin_loaded(str(conf)) is False  # no supervisord answers there


HTTPS_REDIRECT = {p: [301, f"https://mysite.example.org{p}"] for p in ("/", "/admin/login/", "/health/", "/healthz/")}


def test_a_redirect_is_never_health_and_a_later_url_that_answers_is_taken() -> None:
    answers = {"/": [302, "/accounts/login/?next=/"], "/admin/login/": [200, ""], "/health/": [404, ""]}
    facts = init.facts_from_probe(OPTS, SRC, probe(answers=answers))
    assert (facts["health_path"], facts["health_status"]) == ("/admin/login/", 200)
    only_redirects = {"/": [302, "/accounts/login/"], "/admin/login/": [302, "/sso/"]}
    facts = init.facts_from_probe(OPTS, SRC, probe(answers=only_redirects))
    assert "health_path" not in facts and "stop" not in facts
    assert "answered Host mysite.example.org with a 2xx (/ 302, /admin/login/ 302)" in facts["notes"][0]


def test_an_app_that_redirects_to_https_stops_init_with_both_fixes() -> None:
    https = {p: [200, ""] for p in HTTPS_REDIRECT}
    facts = init.facts_from_probe(OPTS, SRC, probe(answers=HTTPS_REDIRECT, https_answers=https))
    assert "health_path" not in facts
    stop = facts["stop"]
    assert stop.startswith("/ redirects Host mysite.example.org to https://mysite.example.org/")
    assert "--ssl-certificate FILE --ssl-certificate-key FILE" in stop and "SECURE_SSL_REDIRECT = False" in stop


def test_with_tls_on_the_site_the_probes_say_https_and_the_config_says_so() -> None:
    tls = dataclasses.replace(OPTS, ssl_certificate="/etc/ssl/c.pem", ssl_certificate_key="/etc/ssl/k.pem")
    https = {**{p: [301, "https://x/"] for p in HTTPS_REDIRECT}, "/admin/login/": [200, ""]}
    facts = init.facts_from_probe(tls, SRC, probe(answers=HTTPS_REDIRECT, https_answers=https))
    assert (facts["health_path"], facts["health_https"]) == ("/admin/login/", True)
    ini = "\n".join(a.content for a in init.plan(tls, dataclasses.replace(FACTS, **facts)) if a.path == tls.config)
    app = config.parse(ini).app("mysite")
    assert app.health.https is True and app.health.path == "/admin/login/"
    # TLS, and the app still redirects what nginx marks https: its proxy header setting is missing
    facts = init.facts_from_probe(tls, SRC, probe(answers=HTTPS_REDIRECT, https_answers=HTTPS_REDIRECT))
    assert "SECURE_PROXY_SSL_HEADER" in facts["stop"] and "--ssl-certificate FILE" not in facts["stop"]


def test_a_uv_app_tested_with_pytest_django_gets_uv_sync_and_a_fresh_test_database() -> None:
    facts = dataclasses.replace(
        FACTS, declared=("uv.lock", "pyproject.toml"), pytest="pytest-django", test_requirements=()
    )
    acts = init.plan(OPTS, facts)
    commands = [a.argv for a in acts if a.kind == "run" and "sync" in a.argv]
    assert len(commands) == 2  # both colors
    blue = commands[0]
    assert blue[:3] == ("/usr/bin/env", "UV_PROJECT_ENVIRONMENT=/srv/mysite/blue/venv", "UV_PYTHON_DOWNLOADS=never")
    assert blue[3] == "UV_SYSTEM_CERTS=1" and blue[4].endswith("/uv") and blue[5:7] == ("sync", "--frozen")
    ini = "\n".join(a.content for a in acts if a.path == OPTS.config)
    app = config.parse(ini).app("mysite")
    [test] = [s for s in app.deploy.steps if s.name == "test"]  # type: ignore[union-attr]
    assert test.argv == ("%(python)s", "-m", "pytest", "-p", "no:cacheprovider", "--create-db")


def test_pytest_and_test_requirements_are_found_in_the_repository() -> None:
    files = {
        "requirements.txt": "-r requirements/production.txt\n",
        "requirements/production.txt": "-r base.txt\ngunicorn==23.0.0\n",
        "requirements/base.txt": "django==5.1\n",
        "requirements/local.txt": "-r base.txt\npytest==8.3\npytest-django==4.9\nfactory-boy\n",
        "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '--ds=config.settings.test --reuse-db'\n",
    }
    show = lambda name: files.get(name, "")  # noqa: E731
    tree = list(files)
    assert init.pytest_kind(tree, show, init.requirement_text(show, "requirements/local.txt")) == "pytest-django"
    assert init.pytest_kind(tree, show, "pytest\n") == "pytest"
    assert init.pytest_kind(["manage.py"], lambda name: "", "pytest\n") == ""
    facts = dataclasses.replace(FACTS, pytest="pytest-django", test_requirements=("requirements/local.txt",))
    ini = "\n".join(a.content for a in init.plan(OPTS, facts) if a.path == OPTS.config)
    app = config.parse(ini).app("mysite")
    assert app.deploy.test_requirements == ("requirements/local.txt",)  # type: ignore[union-attr]
    [first] = [a.argv for a in init.plan(OPTS, facts) if a.kind == "run" and "pip" in a.argv][:1]
    assert first[-2:] == ("--requirement", "requirements/local.txt")


@pytest.mark.parametrize(
    ("engine", "verified"),
    [("django.db.backends.sqlite3", True), ("django.db.backends.postgresql", False), ("", False)],
)
def test_init_proves_backups_by_default_where_it_can_and_says_why_not(engine: str, verified: bool) -> None:
    acts = init.plan(OPTS, dataclasses.replace(FACTS, db_engine=engine))
    ini = "\n".join(a.content for a in acts if a.path == OPTS.config)
    assert config.parse(ini).app("mysite").deploy.verify_backup is verified  # type: ignore[union-attr]
    assert ("; backups are not verified: " in ini) is not verified


@pytest.mark.parametrize(
    ("listen", "url"), [("80", "http://localhost/"), ("127.0.0.1:18090", "http://localhost:18090/")]
)
def test_the_next_steps_name_the_apps_address_with_its_port(listen: str, url: str) -> None:
    """A new user's run: `--listen 127.0.0.1:18090` was told the app is http://localhost/, without its port."""
    options = dataclasses_replace(OPTS, server_name="localhost", listen=listen)
    facts = dataclasses_replace(FACTS, debian_default_site=True)
    said = "\n".join(init.go_live(options, facts))
    assert f"the app is {url} (--server-name sets its real name)" in said
