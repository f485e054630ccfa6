"""``bluegreen init APP REPO``: set up an existing, unmodified Django app for blue/green deploys.

Decide, then act: ``discover`` looks at the machine and the app (read only), ``plan`` turns options and
facts into a list of actions (pure: files with their content, owner and mode, commands with the user they
run as), and ``execute`` applies them one by one, each idempotent (a file that exists is kept, a command
with ``creates`` is skipped when that path exists), so running init twice changes nothing. ``--dry-run``
prints the plan and stops.

Some values are known only once the app is built (its STATIC_ROOT and MEDIA_ROOT, WSGI_APPLICATION, which
URL answers, whether its gunicorn has ``--control-socket``): the first pass does the layout and the build,
then the facts are read again from the built color and the files that depend on them are written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import grp
import json
import os
import posixpath
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from supervisor_bluegreen.ctl import supervisordconf
from supervisor_bluegreen.ctl.example_files import PLACEHOLDER_EXE, bluegreen_executable, example_text
from supervisor_bluegreen.ctl.supervisordconf import CTLPLUGIN
from supervisor_bluegreen.host import apptree, deps, envfile, runner, templating
from supervisor_bluegreen.shared import store as state
from supervisor_bluegreen.shared.config import (
    DEFAULT_CONFIG,
    DEFAULT_STATE_DIR,
    ENV_NAME_RE,
    SUPERVISOR_LOG_DIR,
    SUPERVISORD_CONFS,
    find_supervisord_conf,
)
from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.textsafe import escape_controls

STATE_DIR = DEFAULT_STATE_DIR  # the config init writes names it (tests point it elsewhere)
BACKUP_DIR = "/var/backups/supervisor-bluegreen"
ENV_DIR = "/etc/supervisor-bluegreen"
COLORS = ("blue", "green")
SYSTEMD_UNITS = tuple(
    f"{d}/{n}.service" for d in ("/etc/systemd/system", "/lib/systemd/system") for n in ("supervisor", "supervisord")
)
SUPERVISORD_UMASK = "027"  # what supervisord creates (its own and its programs' logs) is not for every local user


@dataclass(frozen=True)
class Options:
    app: str
    repo: str
    user: str = ""  # default: the app's name
    root: str = ""  # default: /srv/APP
    branch: str = ""  # default: the repository's HEAD branch
    server_name: str = "localhost"
    listen: str = "80"
    workers: tuple[str, ...] = ()  # e.g. "celery -A proj worker"
    env: tuple[tuple[str, str], ...] = ()
    replace_env: bool = False  # a --env key the environment file has with another value: changed, not kept
    pusher: str = ""  # who pushes to the bare repository (default: the app user)
    python: str = "/usr/bin/python3"
    supervisord_conf: str = ""
    config: str = DEFAULT_CONFIG
    nginx_dir: str = "/etc/nginx"
    build: str = "django"
    gunicorn_workers: int = 2
    ssl_certificate: str = ""  # HTTPS: the site listens on 443 with these, port `listen` redirects
    ssl_certificate_key: str = ""

    @property
    def user_name(self) -> str:
        return self.user or self.app

    @property
    def app_root(self) -> str:
        return self.root or f"/srv/{self.app}"


@dataclass(frozen=True)
class Facts:
    """What the machine and the app are like; everything ``plan`` needs beyond the options."""

    user_exists: bool = False
    bluegreen: str = PLACEHOLDER_EXE  # the installed executable
    package_dir: str = ""  # where supervisor_bluegreen is installed
    supervisord_conf: str = SUPERVISORD_CONFS[0]
    include_dir: str = "/etc/supervisor/conf.d"
    ctlplugin_present: bool = False
    plugin_site_dir: str = ""  # set when supervisord's python cannot import supervisor_bluegreen: put a .pth here
    branch: str = "main"
    wsgi: str = ""  # gunicorn's APP_MODULE, e.g. mysite.wsgi:application
    has_requirements: bool = True
    declared: tuple[str, ...] = ("requirements.txt",)  # of uv.lock, pyproject.toml, requirements.txt: what it has
    test_requirements: tuple[str, ...] = ()  # requirements files only its tests need (requirements/local.txt)
    pytest: str = ""  # the app's tests run with pytest: "pytest", or "pytest-django" (a fresh test database)
    db_engine: str = ""  # the built app's database ENGINE: whether init can prove its backups by default
    gunicorn_in_requirements: bool = True
    control_socket: bool = False  # the app's gunicorn has --control-socket
    static_root: str = ""  # relative to the checkout when inside it, else absolute; '' when nginx serves none
    media_root: str = ""
    media_url: str = "/media/"
    sqlite_path: str = ""  # the app's SQLite database file when it lives in the app's tree (made 0600)
    health_path: str = "/"
    health_status: int = 200
    health_https: bool = False  # the app answers 2xx only to HTTPS (its SSL redirect): the site has TLS
    stop: str = ""  # why init cannot write a config that would work (said with the fixes; nothing after the build)
    built: bool = False  # the facts below "wsgi" come from the built app, not from guesses
    debian_default_site: bool = False
    has_sudo: bool = True
    supervisor_unit: str = ""  # systemd's unit for supervisord (it runs it with -n: umask comes from the unit)
    plugin_loaded: bool = False  # the running supervisord answers bluegreen.*: another app is set up already
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    kind: str  # user, dir, file, append, link, own, private, run
    path: str = ""
    content: str = ""  # file/append text; link target
    owner: str = "root"
    group: str = ""
    mode: int = 0o644
    argv: tuple[str, ...] = ()
    run_as: str = ""  # run: as this user ('' = root)
    cwd: str = ""
    creates: str = ""  # run: skipped when this path exists; touched afterwards when stamp is set
    stamp: bool = False
    env_file: str = ""  # run: with the app's environment file
    done_when: tuple[str, ...] = ()  # run: skipped when this command prints done_output (e.g. git config --get)
    done_output: str = ""
    after_build: bool = False  # depends on facts only the built app tells
    why: str = ""

    def describe(self) -> str:
        own = f"{self.owner}:{self.group or self.owner} {self.mode:04o}"
        if self.kind == "user":
            return f"user  {self.path}: " + shlex.join(self.argv)
        if self.kind == "dir":
            return f"dir   {self.path} ({own})"
        if self.kind == "file":
            return f"file  {self.path} ({own}, kept if it exists)"
        if self.kind == "env":
            return f"file  {self.path} ({own}; each --env key it lacks is added to it)"
        if self.kind == "append":
            return f"add   to {self.path}, unless it has {self.content.splitlines()[0]!r}"
        if self.kind == "link":
            return f"link  {self.path} -> {self.content}"
        if self.kind == "own":
            return f"owner {self.path} and all in it: {self.owner}:{self.group or self.owner}"
        if self.kind == "private":
            return f"file  {self.path} ({own}: the app user's alone; made empty if absent)"
        who = f"as {self.run_as}" if self.run_as else "as root"
        where = f" in {self.cwd}" if self.cwd else ""
        unless = f" (unless {self.creates} exists)" if self.creates else ""
        return f"run   {who}{where}: {shlex.join(self.argv)}{unless}"


# --------------------------------------------------------------------------------------------
# the plan: pure


def _color_paths(o: Options, c: str) -> dict[str, str]:
    root = f"{o.app_root}/{c}"
    return {"root": root, "src": f"{root}/src", "venv": f"{root}/venv", "socket": f"{o.app_root}/run/{o.app}.{c}.sock"}


def env_file_path(o: Options) -> str:
    return f"{ENV_DIR}/{o.app}.env"


def stamp_path(o: Options, name: str) -> str:
    """Where init notes that a build step ran: root's state folder, never the app's tree (root writes it)."""
    return f"{STATE_DIR}/{o.app}/init/{name}"


def systemd_dropin(unit: str) -> str:
    return f"/etc/systemd/system/{os.path.basename(unit)}.d/bluegreen-umask.conf"


def _sh_with_env(o: Options, argv: list[str]) -> str:
    """A supervisord command that reads the environment file, then becomes ``argv`` (same pid: signals work)."""
    inner = f"set -a && . {env_file_path(o)} && set +a && exec {shlex.join(argv)}"
    return "/bin/sh -c " + shlex.quote(inner)


@dataclass(frozen=True)
class WorkerProgram:
    """One supervisord program of a ``--worker``: a Celery worker gets one per color (handed over at each switch,
    never a moment without a consumer); anything else (beat: never two at once) runs from the live_root link."""

    name: str  # the program; a color's own is NAME_<color>
    template: str  # how the app config names it: NAME_%(color)s for a color's own
    argv: tuple[str, ...]
    directory: str
    color: str = ""  # '' for one that follows live_root
    celery_app: str = ""  # the -A of a Celery worker: its worker_ping asks that app


def celery_worker_app(argv: list[str]) -> str | None:
    """The ``-A``/``--app`` of a ``celery ... worker`` command ('' when it names none), None for anything else."""
    if os.path.basename(argv[0]) != "celery" or "worker" not in argv[1:]:
        return None
    for i, word in enumerate(argv):
        if word in ("-A", "--app") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--app="):
            return word.split("=", 1)[1]
    return ""


def worker_programs(o: Options) -> list[WorkerProgram]:
    """Every ``--worker`` as supervisord programs: a Celery worker's two (one per color, its node named after its
    program), the others' one, run from the live color's virtualenv."""
    out: list[WorkerProgram] = []
    for command in o.workers:
        argv = shlex.split(command)
        base = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(argv[0]))
        name, n = f"{o.app}_{base}", 2
        while name in [p.template.replace("_%(color)s", "") for p in out]:
            name, n = f"{o.app}_{base}{n}", n + 1
        celery_app = celery_worker_app(argv)
        if celery_app is None:
            exe = argv[0] if os.path.isabs(argv[0]) else f"{o.app_root}/live/venv/bin/{argv[0]}"
            out.append(WorkerProgram(name, name, (exe, *argv[1:]), f"{o.app_root}/live/src"))
            continue
        named = {"-n", "--hostname"} & set(argv) or any(w.startswith("--hostname=") for w in argv)
        rest = argv[1:] if named else [*argv[1:], "-n", "%(program_name)s@%%h"]
        for c in COLORS:
            p = _color_paths(o, c)
            exe = argv[0] if os.path.isabs(argv[0]) else f"{p['venv']}/bin/{argv[0]}"
            out.append(WorkerProgram(f"{name}_{c}", f"{name}_%(color)s", (exe, *rest), p["src"], c, celery_app))
    return out


def worker_ping(o: Options) -> str:
    """The app config's worker_ping: Celery's ping of exactly the node a color's own worker names ('' without one)."""
    app = next((p.celery_app for p in worker_programs(o) if p.color), None)
    if app is None:
        return ""
    return (
        "%(python)s -m celery "
        + (f"-A {app} " if app else "")
        + ("inspect ping --timeout 1 --destination %(worker)s@%(hostname)s")
    )


def programs_conf(o: Options, f: Facts) -> str:
    """supervisord's programs file: both colors' gunicorn, then every worker (templates/programs.conf.j2)."""
    colors = []
    for c in COLORS:
        p = _color_paths(o, c)
        argv = [f"{p['venv']}/bin/gunicorn", "--bind", f"unix:{p['socket']}", "--workers", str(o.gunicorn_workers)]
        argv += ["--graceful-timeout", "30"]
        if f.control_socket:
            argv += ["--control-socket", f"{o.app_root}/run/gunicorn.{c}.ctl"]
        argv.append(f.wsgi or "CHANGE_ME.wsgi:application")
        colors.append({"name": f"{o.app}_{c}", "color": c, "command": _sh_with_env(o, argv), "directory": p["src"]})
    workers = [
        {"name": p.name, "command": _sh_with_env(o, list(p.argv)), "directory": p.directory, "color": p.color}
        for p in worker_programs(o)
    ]
    return templating.render(
        "programs.conf.j2",
        app=o.app,
        env_file=env_file_path(o),
        supervisord_umask=SUPERVISORD_UMASK,
        control_socket=f.control_socket,
        colors=colors,
        workers=workers,
        user=o.user_name,
        home=f"{o.app_root}/home",
        log_dir=SUPERVISOR_LOG_DIR,
    )


def _public_url(o: Options, path: str) -> str:
    listen = o.listen.split()[0]
    host, _, port = listen.rpartition(":") if ":" in listen else ("", "", listen)
    host = host.strip("[]") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "*") else host
    return f"http://{host}:{port}{path}"


def app_config(o: Options, f: Facts) -> str:
    """The app's bluegreen config (templates/app.ini.j2); an optional setting left empty is not written."""
    c = "%(color)s"
    static = f.static_root
    if static and not os.path.isabs(static):
        static = f"{o.app_root}/{c}/src/{static}"  # relative: in each color's checkout
    return templating.render(
        "app.ini.j2",
        app=o.app,
        program=f"{o.app}_{c}",
        socket=f"{o.app_root}/run/{o.app}.{c}.sock",
        root=f"{o.app_root}/{c}",
        checkout=f"{o.app_root}/{c}/src",
        static_root=static,
        live_static=f"{o.app_root}/run/{o.app}.live-static",
        live_socket=f"{o.app_root}/run/{o.app}.live.sock",
        live_root=f"{o.app_root}/live" if any(not p.color for p in worker_programs(o)) else "",
        public_url=_public_url(o, f.health_path),
        server_name=o.server_name,
        health_path=f.health_path,
        health_status=f.health_status,
        health_https=f.health_https,
        listen=o.listen,
        media_root=f.media_root,
        media_url=f.media_url,
        ssl_certificate=o.ssl_certificate,
        ssl_certificate_key=o.ssl_certificate_key,
        repo=f"{o.app_root}/app.git",
        branch=o.branch or f.branch,
        user=o.user_name,
        python=f"{o.app_root}/{c}/venv/bin/python",
        environment_file=env_file_path(o),
        color=c,
        build=o.build,
        step_test=test_command(f) if o.build == "django" else "",
        test_requirements=" ".join(f.test_requirements),
        backup_dir=BACKUP_DIR,
        verify_backup=verify_reason(f)[0],
        verify_backup_why=verify_reason(f)[1],
        workers=list(dict.fromkeys(p.template for p in worker_programs(o))),
        worker_ping=worker_ping(o),
    )


def include_conf(o: Options, f: Facts) -> str:
    text = example_text("include", f.bluegreen)
    return text.replace(DEFAULT_CONFIG, o.config)  # the shipped include names the default config


def nginx_site_text(o: Options, f: Facts) -> str:
    """The nginx site, rendered from the app config this plan writes."""
    from supervisor_bluegreen.host import nginx
    from supervisor_bluegreen.shared import config as configmod

    text = f"[bluegreen]\nstate_dir = {STATE_DIR}\n\n" + app_config(o, f)
    return nginx.render_site(configmod.parse(text, o.config).app(o.app))


def _build_step(user: str, src: str, env_file: str, argv: tuple[str, ...], stamp: str, why: str = "") -> Action:
    """A build command run once in a color's checkout, as the app user with the app's environment."""
    return Action("run", argv=argv, run_as=user, cwd=src, env_file=env_file, creates=stamp, stamp=True, why=why)


def plan(o: Options, f: Facts) -> list[Action]:
    """Every file and command of the setup, in order. Pure: the same options and facts, the same plan."""
    user, root, app = o.user_name, o.app_root, o.app
    env_file = env_file_path(o)
    acts = [Action("dir", root, mode=0o755, why="the app's folder (root's: the app user cannot re-point its links)")]
    if not f.user_exists:
        argv = ("useradd", "--system", "--user-group", "--create-home", "--home-dir", f"{root}/home")
        acts.append(Action("user", user, argv=(*argv, "--shell", "/bin/bash", user), why="the app's user"))
    acts += [
        Action("dir", f"{root}/home", owner=user, mode=0o750, why="the app's home (a SQLite file, dotfiles): its own"),
        Action("dir", f"{root}/run", owner=user, mode=0o755, why="sockets (nginx connects to them)"),
        Action("dir", STATE_DIR, mode=0o750, why="state, deploy logs, locks: root only"),
        Action("dir", f"{STATE_DIR}/{app}", mode=0o750),
        Action("dir", f"{STATE_DIR}/{app}/init", mode=0o750, why="which build steps init ran"),
        Action("dir", BACKUP_DIR, mode=0o750, why="database backups: root only"),
        Action("dir", ENV_DIR, mode=0o755),
        Action(
            "env",
            env_file,
            content="# the app's environment: read by its programs (sh) and by every build step\n"
            + envfile.render(dict(o.env)),
            group=user,
            mode=0o640,
            why="settings and secrets: a later --env key is added, a changed value only with --replace-env",
        ),
        Action(
            "run",
            argv=("git", "clone", "--quiet", "--bare", o.repo, f"{root}/app.git"),
            creates=f"{root}/app.git",  # root clones only where nothing is: app.git is the app user's afterwards
            why="the bare repository you push to",
        ),
        Action("own", f"{root}/app.git", owner=user, why="the app user owns it"),
    ]
    for c in COLORS:
        p = _color_paths(o, c)
        branch = o.branch or f.branch
        if not os.path.islink(p["root"]):  # a link: deploys point it at a release (host/releases.py)
            acts.append(Action("dir", p["root"], owner=user, mode=0o755))
        acts += [
            Action(
                "run",
                argv=("git", "clone", "--quiet", "--branch", branch, f"{root}/app.git", p["src"]),
                run_as=user,
                creates=f"{p['src']}/.git",
            ),
            Action("run", argv=(o.python, "-m", "venv", p["venv"]), run_as=user, creates=f"{p['venv']}/bin/python"),
        ]
        pip, py = f"{p['venv']}/bin/pip", (f"{p['venv']}/bin/python", "manage.py")
        step = functools.partial(_build_step, user, p["src"], env_file)
        install = deps.plan(
            lambda name: b"" if name in (*f.declared, *f.test_requirements) else None,
            py[0],
            p["venv"],
            f.test_requirements,
        )  # the deps step's own rule (host/deps.py): the first build installs as every deploy will
        if install is not None:
            why = f"first build: dependencies ({install.kind}) into this color's own virtualenv"
            env = tuple(f"{key}={value}" for key, value in install.env)
            acts.append(
                step(("/usr/bin/env", *env, *install.argv) if env else install.argv, stamp_path(o, f"{c}-deps"), why)
            )
        if not f.gunicorn_in_requirements:
            why = "the app does not require gunicorn"
            argv = (pip, "install", "--quiet", "gunicorn")
            acts.append(Action("run", argv=argv, run_as=user, creates=f"{p['venv']}/bin/gunicorn", why=why))
        if c == COLORS[0]:
            why = "migrate once (both colors share the database)"
            acts.append(step((*py, "migrate", "--noinput"), stamp_path(o, "migrated"), why))
        acts.append(step((*py, "collectstatic", "--noinput"), stamp_path(o, f"{c}-static")))
    if f.media_root:
        acts.append(Action("dir", f.media_root, owner=user, mode=0o755, after_build=True, why="uploads"))
    if f.sqlite_path:
        why = "the database: the app user's alone"
        acts.append(Action("private", f.sqlite_path, owner=user, mode=0o600, after_build=True, why=why))
    # files that need the built app's facts
    acts += [
        Action("append", o.config, content=f"[bluegreen]\nstate_dir = {STATE_DIR}\n", mode=0o640, after_build=True),
        Action("append", o.config, content=app_config(o, f), mode=0o640, after_build=True, why="the app config"),
        Action("file", f"{f.include_dir}/{app}.conf", content=programs_conf(o, f), after_build=True),
        Action("file", f"{f.include_dir}/bluegreen.conf", content=include_conf(o, f), why="the plugin include"),
        Action("append", f.supervisord_conf, content=CTLPLUGIN, why="supervisorctl reads only its main file"),
    ]
    if f.supervisor_unit:
        acts.append(
            Action(
                "file",
                systemd_dropin(f.supervisor_unit),
                content=f"# written by `bluegreen init`: supervisord -n ignores its own umask setting\n"
                f"[Service]\nUMask=0{SUPERVISORD_UMASK}\n",
                why="systemd starts supervisord in the foreground: the umask comes from here",
            )
        )
    if f.plugin_site_dir:
        link_dir = f"{os.path.dirname(f.package_dir)}/../../../share/supervisor-bluegreen/plugin"
        link_dir = os.path.normpath(link_dir)
        acts += [
            Action("dir", link_dir, mode=0o755),
            Action("link", f"{link_dir}/supervisor_bluegreen", content=f.package_dir),
            Action(
                "file",
                f"{f.plugin_site_dir}/supervisor-bluegreen.pth",
                content=link_dir + "\n",
                why="supervisord's python imports the plugin from here (outside apt's files)",
            ),
        ]
    site = f"{o.nginx_dir}/sites-available/{app}.conf"
    acts += [
        Action("file", site, content=nginx_site_text(o, f), after_build=True, why="the nginx site"),
        Action("link", f"{o.nginx_dir}/sites-enabled/{app}.conf", content=site),
    ]
    hook = example_text("hook", f.bluegreen)
    git_dir = f"{root}/app.git"
    acts += [
        Action("file", f"{git_dir}/hooks/pre-receive", content=hook, mode=0o755, why="pushes deploy (root's file)"),
    ]
    push = f"sudo -n {f.bluegreen} push -c {f.supervisord_conf}"
    for key, value in (("bluegreen.app", app), ("bluegreen.branch", o.branch or f.branch), ("bluegreen.push", push)):
        get = ("git", f"--git-dir={git_dir}", "config", "--get", key)
        acts.append(
            Action(
                "run",
                argv=("git", f"--git-dir={git_dir}", "config", key, value),
                run_as=user,
                done_when=get,
                done_output=value,
            )
        )
    pusher = o.pusher or user
    acts.append(
        Action(
            "file",
            f"/etc/sudoers.d/bluegreen-{app}",
            content=f"# {pusher} may ask for deploys of {app} and nothing else\n"
            f"{pusher} ALL=(root) NOPASSWD: {f.bluegreen} push -c {f.supervisord_conf} {app} *\n",
            mode=0o440,
            why="the pusher's narrow path to a deploy",
        )
    )
    return acts


def plugin_loaded(conf: str) -> bool:
    """Whether the supervisord of ``conf`` runs now with the bluegreen plugin (it answers ``bluegreen.*``)."""
    from supervisor_bluegreen.ctl.doctor import supervisord_proxy

    proxy, _why = supervisord_proxy(conf, timeout=5)
    try:
        return proxy is not None and "bluegreen.status" in proxy.system.listMethods()
    except (OSError, xmlrpc.client.Error):
        return False


def site_url(o: Options) -> str:
    """The app's address as a browser names it: its server name and the port ``--listen`` gives (none for 80)."""
    listen = o.listen.split()[0]
    port = listen.rpartition(":")[2] if ":" in listen else listen
    return f"http://{o.server_name}{'' if port == '80' else ':' + port}/"


def go_live(o: Options, f: Facts) -> list[str]:
    """What to type once init is done: a reload of supervisord (it restarts every program) only when the
    plugin is not loaded yet; on a server that runs apps already, reread and update add this one's."""
    steps = []
    if f.debian_default_site and o.server_name in ("_", "localhost"):
        steps.append(
            f"# Debian's default nginx site answers every other name: the app is {site_url(o)} "
            "(--server-name sets its real name)"
        )
    steps.append("nginx -t && nginx -s reload")
    if f.plugin_loaded:
        steps.append(
            f"supervisorctl reread && supervisorctl update    # adds {o.app}'s programs; the plugin is loaded "
            "already, so the apps running here are not restarted"
        )
    elif f.supervisor_unit:
        unit = os.path.basename(f.supervisor_unit)
        steps.append(
            f"systemctl daemon-reload && systemctl restart {unit}    # once: loads the bluegreen plugin and "
            f"supervisord's umask {SUPERVISORD_UMASK} (restarts its programs)"
        )
    else:
        steps.append(
            "supervisorctl reload    # once: loads the bluegreen plugin (restarts this supervisord's programs: their"
            f" sites are down for seconds); its umask {SUPERVISORD_UMASK} takes effect when supervisord next starts"
        )
    steps += [
        f"supervisorctl bluegreen deploy {o.app}    # the first go-live",
        f"bluegreen doctor {o.app}",
        f"git remote add live ssh://{o.pusher or o.user_name}@HOST{o.app_root}/app.git   # then: git push live",
    ]
    return steps


# --------------------------------------------------------------------------------------------
# discovery: reads the machine and the app, changes nothing (a dry run clones into a temporary folder)


def _run(
    argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None, user: str = ""
) -> subprocess.CompletedProcess[str]:
    """Every command init runs goes through the one runner (runner.capture), as ``user`` when given.

    In ``/`` unless told: root's current folder may be /tmp or the app's checkout, and a program started
    there may pick up what is in it (python puts it first on sys.path).
    """
    return runner.capture(argv, cwd=cwd or "/", env=env, user=user, timeout=300)


def _supervisord_python(conf_exe: str) -> str:
    try:
        with open(conf_exe, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return ""
    return first[2:].strip().split()[0] if first.startswith("#!") else ""


def _site_dir(python: str) -> str:
    done = _run([python, "-I", "-c", "import site; print(site.getsitepackages()[0])"])
    return done.stdout.strip() if done.returncode == 0 else ""


def _include_dir(conf: str) -> str:
    """The folder of the first ``*.conf`` pattern supervisord's ``[include]`` names, else ``conf.d`` beside it."""
    try:
        files = (supervisordconf.read(conf, includes=False).get("include", "files", "") or "").split()
    except supervisordconf.SupervisordConfError:
        files = []
    for pattern in files:
        if pattern.endswith(".conf"):
            folder = os.path.dirname(pattern)
            return folder if os.path.isabs(folder) else os.path.join(os.path.dirname(conf), folder)
    return os.path.join(os.path.dirname(conf), "conf.d")


def _repo_facts(o: Options, git_dir: str, user: str = "") -> dict[str, object]:
    def git(*args: str) -> str:
        return _run(["git", f"--git-dir={git_dir}", *args], user=user, env=_user_env(o, "") if user else None).stdout

    branch = o.branch or git("symbolic-ref", "--short", "HEAD").strip() or "main"
    tree = git("ls-tree", "-r", "--name-only", branch).split()
    wsgi = ""
    for name in sorted(tree, key=lambda n: n.count("/")):
        if name.endswith("/wsgi.py") and name.count("/") == 1:
            wsgi = name[: -len(".py")].replace("/", ".") + ":application"
            break

    def show(name: str) -> str:
        return git("show", f"{branch}:{name}") if name in tree else ""

    reqs = requirement_text(show, "requirements.txt") + pyproject_requirements(show("pyproject.toml"))
    tests = tuple(
        name
        for name in TEST_REQUIREMENTS
        if name in tree and re.search(r"^pytest\b", requirement_text(show, name), re.M)
    )
    pin = re.search(r"^gunicorn\s*(?:\[[^]]*\])?\s*[=~>]=\s*(\d+)", reqs, re.M | re.I)
    return {
        "branch": branch,
        "wsgi": wsgi,
        "has_requirements": "requirements.txt" in tree,
        "declared": tuple(name for name in ("uv.lock", "pyproject.toml", "requirements.txt") if name in tree),
        "test_requirements": tests,
        "pytest": pytest_kind(tree, show, reqs + "".join(requirement_text(show, t) for t in tests)),
        "gunicorn_in_requirements": bool(re.search(r"^gunicorn\b", reqs, re.M | re.I)),
        "control_socket": bool(pin and int(pin.group(1)) >= 25),
    }


TEST_REQUIREMENTS = ("requirements/local.txt", "requirements/test.txt", "requirements/dev.txt", "requirements-dev.txt",
                     "requirements-test.txt", "requirements_dev.txt")  # fmt: skip


def pytest_kind(tree: list[str], show: Callable[[str], str], requirements: str) -> str:
    """Whether the app's tests run with pytest (its config, or a conftest.py at the top) and with pytest-django."""
    configured = (
        "pytest.ini" in tree
        or "conftest.py" in tree
        or "[tool.pytest.ini_options]" in show("pyproject.toml")
        or "[tool:pytest]" in show("setup.cfg")
    )
    if not configured:
        return ""
    return "pytest-django" if re.search(r"^pytest[-_]django\b", requirements, re.M | re.I) else "pytest"


def verify_reason(f: Facts) -> tuple[str, str]:
    """(why backups are verified, '') or ('', why not): a SQLite backup restores into a scratch file, always
    possible; a server database needs CREATE/DROP for the app's user, which init does not grant."""
    if f.db_engine.endswith("sqlite3"):
        return "a SQLite dump restores into a scratch file", ""
    if not f.db_engine:
        return "", "init did not see the app's database"
    return "", (
        "the app's database user needs CREATE and DROP on <name>_bgverify_* scratch databases; grant them, "
        "then set verify_backup = true"
    )


def test_command(f: Facts) -> str:
    """step_test for an app tested with pytest; with pytest-django a fresh test database each deploy
    (``--create-db`` beats a ``--reuse-db`` in its options: a rejected release may have migrated the old one)."""
    if not f.pytest:
        return ""
    return "%(python)s -m pytest -p no:cacheprovider" + (" --create-db" if f.pytest == "pytest-django" else "")


def requirement_text(show: Callable[[str], str], name: str, depth: int = 5) -> str:
    """A requirements file with the files it includes (``-r base.txt``, ``--requirement=...``, relative to it)
    put in their place: cookiecutter-django's requirements.txt is ``-r requirements/production.txt``."""
    lines = []
    for line in show(name).splitlines():
        include = re.match(r"^\s*(?:-r|--requirement)(?:\s*=\s*|\s+)(\S+)", line)
        if include and depth > 0:
            lines.append(
                requirement_text(
                    show, posixpath.normpath(posixpath.join(posixpath.dirname(name), include.group(1))), depth - 1
                )
            )
        else:
            lines.append(line.strip())
    return "\n".join(lines) + "\n"


def pyproject_requirements(text: str) -> str:
    """The quoted requirement strings of a pyproject.toml (``dependencies``, groups, extras: "gunicorn>=23"),
    a line each, for the app that declares its dependencies there (uv, PEP 621); read as text, since
    tomllib is not in every Python the tool runs on."""
    return "".join(
        f"{m.group(1)}\n"
        for m in re.finditer(
            r"""["']([A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^]"']*\])?\s*(?:[=~<>!]=?[^"']*)?)["']""", text
        )
    )


DJANGO_PROBE = r"""
import json, os, sys
from django.conf import settings
from django.test import Client
host = sys.argv[1]
def answer(path, https):
    extra = {"HTTP_X_FORWARDED_PROTO": "https"} if https else {}
    try:
        r = Client(raise_request_exception=False, HTTP_HOST=host, **extra).get(path)
        return [r.status_code, r.get("Location", "")]
    except Exception:
        return [599, ""]
paths = ("/", "/admin/login/", "/health/", "/healthz/")
answers = {p: answer(p, False) for p in paths}
https_answers = {p: answer(p, True) for p in paths}
db = settings.DATABASES.get("default", {})
print(json.dumps({
    "static_root": str(settings.STATIC_ROOT or ""), "static_url": str(settings.STATIC_URL or ""),
    "media_root": str(getattr(settings, "MEDIA_ROOT", "") or ""), "media_url": str(settings.MEDIA_URL or ""),
    "wsgi": str(getattr(settings, "WSGI_APPLICATION", "") or ""), "answers": answers,
    "https_answers": https_answers,
    "db_engine": str(db.get("ENGINE", "")), "db_name": str(db.get("NAME", "")),
}))
"""


def _django_facts(o: Options, src: str, venv: str) -> dict[str, object]:
    """Settings and which URL answers, from the built app (run as the app user with its environment)."""
    code = "import django; django.setup(); " + "exec(" + repr(DJANGO_PROBE) + ")"
    argv = [f"{venv}/bin/python", "-c", code, o.server_name]
    env = _user_env(o, env_file_path(o))
    env.setdefault("DJANGO_SETTINGS_MODULE", _settings_module(src, o.user_name))
    done = _run(argv, user=o.user_name, cwd=src, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return facts_from_probe(o, src, json.loads(done.stdout.strip().splitlines()[-1]))


def _answers(raw: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """DJANGO_PROBE's answers as (status, Location) by path."""
    return {path: (int(a[0]), str(a[1])) if isinstance(a, list) else (int(a), "") for path, a in raw.items()}


def _statuses(raw: dict[str, Any]) -> str:
    return ", ".join(f"{path} {status}" for path, (status, _) in _answers(raw).items())


def health_facts(o: Options, info: dict[str, Any]) -> dict[str, object]:
    """The health URL: the first one that answers a 2xx (a redirect is never health: the site init publishes
    would be that redirect and nothing else). An app that answers only HTTPS needs TLS on the site (then the
    probes say ``X-Forwarded-Proto: https``) or its redirect off; init stops and says both."""
    plain, https = _answers(info["answers"]), _answers(info.get("https_answers") or {})
    for path, (status, _) in plain.items():
        if 200 <= status < 300:
            return {"health_path": path, "health_status": status}
    if o.ssl_certificate:
        for path, (status, _) in https.items():
            if 200 <= status < 300:
                return {"health_path": path, "health_status": status, "health_https": True}
    redirects = [(path, where) for path, (status, where) in plain.items() if 300 <= status < 400]
    to_https = [(path, where) for path, where in redirects if where.startswith("https://")]
    if not to_https:
        return {}
    path, where = to_https[0]
    if o.ssl_certificate:
        fix = (
            "the site has TLS, but the app still redirects a request nginx marks X-Forwarded-Proto: https: set "
            "SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https') in its settings"
        )
    else:
        fix = (
            "either (1) TLS on the site: run init again with --ssl-certificate FILE --ssl-certificate-key FILE "
            "(nginx serves HTTPS, and the health probes say X-Forwarded-Proto: https, which the app needs "
            "SECURE_PROXY_SSL_HEADER for), or (2) turn the redirect off where TLS ends before this server: "
            "SECURE_SSL_REDIRECT = False in the settings (through the environment, e.g. cookiecutter-django's "
            "--env DJANGO_SECURE_SSL_REDIRECT=False)"
        )
    return {
        "stop": f"{path} redirects Host {o.server_name} to {where}, and no URL init tried answers a 2xx "
        f"({_statuses(info['answers'])}): a redirect is no health check, and the site init would publish over HTTP "
        f"would be nothing but that redirect. Fix it, then run init again: {fix}"
    }


def facts_from_probe(o: Options, src: str, info: dict[str, Any]) -> dict[str, object]:
    """What the plan needs from the app's settings as DJANGO_PROBE printed them, and what to tell the user."""
    out: dict[str, object] = {"built": True}
    notes: list[str] = []
    _plain_values(info)
    if info["wsgi"]:
        module, _, attr = info["wsgi"].rpartition(".")
        out["wsgi"] = f"{module}:{attr}"
    static_root = os.path.normpath(info["static_root"]) if info["static_root"] else ""
    if static_root and info["static_url"] in ("/static/", "static/"):
        _inside_app_tree(o, "STATIC_ROOT", static_root, "staticfiles")
        out["static_root"] = os.path.relpath(static_root, src) if static_root.startswith(src + "/") else static_root
    else:
        out["static_root"] = ""
    media = os.path.normpath(info["media_root"]) if info["media_root"] else ""
    if media and info["media_url"].startswith("/") and info["media_url"].endswith("/"):
        _inside_app_tree(o, "MEDIA_ROOT", media, "media")
        out["media_root"] = media if not media.startswith(src + "/") else ""
        out["media_url"] = info["media_url"]
    out.update(health_facts(o, info))
    if not out.get("health_path") and not out.get("stop"):
        notes.append(
            f"none of {', '.join(info['answers'])} answered Host {o.server_name} with a 2xx "
            f"({_statuses(info['answers'])}): is {o.server_name} in ALLOWED_HOSTS? health_path in {o.config} "
            "needs a URL that answers"
        )
    engine, name = info.get("db_engine", ""), info.get("db_name", "")
    out["db_engine"] = engine
    parts = apptree.parts_below(o.app_root, name) if engine.endswith("sqlite3") else None
    if parts and len(parts) > 1 and parts[0] not in COLORS:  # e.g. /srv/APP/home/db.sqlite3, as the note says
        out["sqlite_path"] = os.path.normpath(name)
    if _sqlite_in_checkout(engine, name, src):
        notes.append(
            f"the database is a SQLite file inside the checkout ({info['db_name']}): each color has its own copy, "
            "so every switch shows the other copy's data and loses what was written since. Read its path from "
            'the environment in settings (e.g. os.environ.get("DB_PATH", BASE_DIR / "db.sqlite3")) and add '
            f"DB_PATH={o.app_root}/home/db.sqlite3 (a folder the app user can write) to {env_file_path(o)}"
        )
    if notes:
        out["notes"] = tuple(notes)
    return out


# what the app's settings may say for what init writes into supervisord's programs and nginx's site: the
# app's code printed it (as the app user), and root writes it into files whose every line it trusts
PLAIN = {
    "wsgi": re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"),
    "static_root": re.compile(r"^(/[\w.@+-]+)+/?$|^$"),
    "media_root": re.compile(r"^(/[\w.@+-]+)+/?$|^$"),
    "static_url": re.compile(r"^[\w./@+-]*$"),
    "media_url": re.compile(r"^[\w./@+-]*$"),
}


def _plain_values(info: dict[str, Any]) -> None:
    """Refuse settings init would write into root's config files unless they are plain names and paths.

    A WSGI_APPLICATION with a newline and ``[program:x]`` in it, or a STATIC_ROOT with ``;`` and an nginx
    directive, would otherwise become a program supervisord runs as root or a directive nginx's master obeys.
    """
    for key, pattern in PLAIN.items():
        value = info.get(key) or ""
        if not isinstance(value, str) or not pattern.match(value):
            setting = {"wsgi": "WSGI_APPLICATION"}.get(key, key.upper())
            raise InitError(
                f"the app's {setting} is {escape_controls(repr(value))}: init writes it into supervisord's and "
                "nginx's files, so it must be a plain dotted name or path (letters, digits, _ . - / @ +)"
            )


def _inside_app_tree(o: Options, setting: str, path: str, example: str) -> None:
    """Refuse a folder root would make the app user's (MEDIA_ROOT) or serve (STATIC_ROOT) outside its tree."""
    if not apptree.parts_below(o.app_root, path):
        raise InitError(
            f"the app's {setting} is {path}, outside {o.app_root}/: init makes it the app user's and nginx serves "
            f"it, so it must be in the app's own tree. Set {setting} under {o.app_root}/, e.g. "
            f"{o.app_root}/{example}, in the environment file {env_file_path(o)} (or in the settings), then run "
            "init again"
        )


def _sqlite_in_checkout(engine: str, name: str, src: str) -> bool:
    """A SQLite database file inside a color's checkout (a relative name is opened from the checkout too)."""
    if not engine.endswith("sqlite3") or not name or name == ":memory:" or name.startswith("file:"):
        return False
    return os.path.abspath(os.path.join(src, name)).startswith(src + "/")


def _settings_module(src: str, user: str) -> str:
    """From manage.py, read as the app user (root opens nothing in the checkout: a link, a FIFO)."""
    try:
        text = (runner.read_as_user(f"{src}/manage.py", user) or b"").decode("utf-8", "replace")
    except OSError:
        text = ""
    found = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", text)
    return found.group(1) if found else ""


def _user_env(o: Options, env_file: str) -> dict[str, str]:
    try:
        home = pwd.getpwnam(o.user_name).pw_dir
    except KeyError:
        home = f"{o.app_root}/home"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}
    env["USER"] = env["LOGNAME"] = o.user_name
    if env_file and os.path.exists(env_file):
        try:
            env.update(envfile.read(env_file))
        except envfile.EnvFileError as exc:  # a line sh would read otherwise: said, not a traceback
            raise InitError(str(exc)) from None
    return env


def discover(o: Options) -> Facts:
    facts: dict[str, object] = {}
    notes: list[str] = []
    try:
        pwd.getpwnam(o.user_name)
        facts["user_exists"] = True
    except KeyError:
        facts["user_exists"] = False
    facts["bluegreen"] = bluegreen_executable()
    facts["package_dir"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # above ctl/
    conf = find_supervisord_conf(o.supervisord_conf)
    facts["supervisord_conf"] = conf
    facts["include_dir"] = _include_dir(conf)
    facts["plugin_loaded"] = plugin_loaded(conf)
    try:
        facts["ctlplugin_present"] = supervisordconf.has_ctlplugin(conf)
    except supervisordconf.SupervisordConfError as exc:
        if os.path.exists(conf):
            notes.append(f"{exc}: fix it, or pass --supervisord-conf")
        else:
            notes.append(
                f"{conf} not found: install supervisor (apt-get install supervisor) or pass --supervisord-conf"
            )
    exe = shutil.which("supervisord") or ""
    python = _supervisord_python(exe) if exe else ""
    # -I: isolated (no PYTHON* variables, no user site, no current folder on sys.path) since it runs as root
    if python and _run([python, "-I", "-c", "import supervisor_bluegreen.rpcinterface"]).returncode != 0:
        facts["plugin_site_dir"] = _site_dir(python)
    facts["debian_default_site"] = os.path.exists(f"{o.nginx_dir}/sites-enabled/default")
    facts["has_sudo"] = bool(shutil.which("sudo"))
    facts["supervisor_unit"] = next((u for u in SYSTEMD_UNITS if os.path.exists(u)), "")
    if not facts["has_sudo"]:
        notes.append("sudo is not installed: pushes need it (apt-get install sudo)")
    git_dir = f"{o.app_root}/app.git"
    if facts["user_exists"] and os.path.exists(f"{git_dir}/HEAD"):
        facts.update(_repo_facts(o, git_dir, o.user_name))  # the app user's repository: read as that user
    else:
        with tempfile.TemporaryDirectory(prefix="bluegreen-init-") as tmp:
            clone = _run(["git", "clone", "--quiet", "--bare", o.repo, f"{tmp}/probe.git"])
            if clone.returncode != 0:
                raise InitError(f"cannot clone {o.repo}: {clone.stderr.strip()}")
            facts.update(_repo_facts(o, f"{tmp}/probe.git"))
    blue = _color_paths(o, COLORS[0])
    if os.path.exists(f"{blue['venv']}/bin/gunicorn") and os.path.exists(stamp_path(o, "migrated")):
        helptext = _run([f"{blue['venv']}/bin/gunicorn", "--help"], user=o.user_name, cwd=blue["src"]).stdout
        facts["control_socket"] = "--control-socket" in helptext
        django = _django_facts(o, blue["src"], blue["venv"])
        if "error" in django:
            notes.append(f"could not read the app's settings: {django['error']}")
        else:
            notes += list(django.pop("notes", ()))  # type: ignore[call-overload]
            facts.update(django)
    if not facts.get("wsgi"):
        notes.append("no <project>/wsgi.py found: set the module in the programs' gunicorn command")
    if not facts.get("built"):
        # before the build: Django's default layout (STATIC_ROOT inside the checkout is not known yet)
        facts.setdefault("static_root", "")
    facts["notes"] = tuple(notes)
    return Facts(**facts)  # type: ignore[arg-type]


class InitError(BluegreenError):
    pass


# --------------------------------------------------------------------------------------------
# execute: one thin loop, each action idempotent


def _owner_ids(a: Action) -> tuple[int, int]:
    uid = pwd.getpwnam(a.owner).pw_uid
    gid = grp.getgrnam(a.group).gr_gid if a.group else pwd.getpwnam(a.owner).pw_gid
    return uid, gid


def apply(a: Action, o: Options) -> str:
    """Do one action unless done already; what happened, in a word.

    Inside the app's tree (below ``o.app_root``, where the app user owns folders and can plant links at
    any moment) every path is reached by ``apptree``'s walk, never by following a link; a folder or file
    given to the app user anywhere else is refused. Stamps are root's files in root's state folder.
    """
    if a.kind == "user":
        try:
            pwd.getpwnam(a.path)
            return "exists"
        except KeyError:
            pass
        _check(_run(list(a.argv)), a)
        return "created"
    try:
        return _apply_path(a, o) if a.kind != "run" else _apply_run(a, o)
    except state.UnsafePath as exc:
        raise InitError(f"{exc}; nothing was done through it") from None
    except OSError as exc:  # e.g. a folder the app user removed or swapped while init walked to it
        raise InitError(f"{a.describe()}: {exc.strerror or exc}") from None


def _apply_path(a: Action, o: Options) -> str:
    inside = apptree.parts_below(o.app_root, a.path)
    uid, gid = _owner_ids(a)
    if uid != 0 and not inside:
        raise InitError(f"refusing to give {a.path} to {a.owner}: it is outside the app's folder {o.app_root}/")
    if a.kind == "dir" and inside:
        return apptree.make_dir(o.app_root, a.path, uid, gid, a.mode)
    if a.kind == "dir":
        return _root_dir(a.path, uid, gid, a.mode)
    if a.kind == "private":
        return apptree.private_file(o.app_root, a.path, uid, gid, a.mode)
    if a.kind == "own":
        st = os.lstat(a.path)
        if (st.st_uid, st.st_gid) == (uid, gid):
            return "exists"
        apptree.chown_tree(o.app_root, a.path, uid, gid)
        return "fixed"
    path = a.path
    if not inside:  # root's own folders: links root made there are followed (at the target too, but for a link)
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        path = os.path.realpath(path) if a.kind != "link" else path
    name = os.path.basename(path)
    with _parent(o, path, inside) as dirfd:
        if a.kind == "link":
            try:
                current = os.readlink(name, dir_fd=dirfd)
            except FileNotFoundError:
                os.symlink(a.content, name, dir_fd=dirfd)
                return "created"
            except OSError:  # EINVAL: not a link
                current = None
            return (
                "exists"
                if current == a.content
                else f"kept (it points to {current})"
                if current
                else "kept (not a link)"
            )
        found = apptree.read_in(dirfd, name, a.path)
        current = found[0] if found else ""
        if a.kind == "file" and found:
            return "exists" if current == a.content else "kept (differs; remove it to have init write it)"
        if a.kind == "env" and found:
            return _merge_env(a, o, dirfd, name, found)
        if a.kind == "append" and a.content.splitlines()[0] in current.splitlines():
            return "exists"
        text = current.rstrip("\n") + "\n\n" + a.content if current else a.content
        if found:  # keep the owner and mode someone gave it
            uid, gid, mode = found[1].st_uid, found[1].st_gid, stat.S_IMODE(found[1].st_mode)
        apptree.replace_in(dirfd, name, text, uid, gid, mode if found else a.mode)
        return "added" if found else "created"


def _merge_env(a: Action, o: Options, dirfd: int, name: str, found: tuple[str, os.stat_result]) -> str:
    """The environment file init wrote before, with this run's --env merged in (owner and mode kept)."""
    current, st = found
    try:
        text, said = envfile.merge(current, envfile.parse(a.content), o.replace_env, a.path)
    except envfile.EnvFileError as exc:
        return f"kept (--env not merged: {exc})"
    if text != current:
        apptree.replace_in(dirfd, name, text, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return ("merged" if text != current else "exists") + (f" ({'; '.join(said)})" if said else "")


@contextlib.contextmanager
def _parent(o: Options, path: str, inside: list[str] | None) -> Iterator[int]:
    """The folder ``path`` goes in, open: walked to without links in the app's tree, else root's own."""
    if inside:
        with apptree.walk_to(o.app_root, inside[:-1], make=(0, 0, 0o755)) as fd:
            yield fd
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _root_dir(path: str, uid: int, gid: int, mode: int) -> str:
    """A folder of root's outside the app's tree (root's own parents: a link there is root's)."""
    made = not os.path.isdir(path)
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        changed = apptree.fix(fd, uid, gid, mode)
    finally:
        os.close(fd)
    return "created" if made else "fixed" if changed else "exists"


def _apply_run(a: Action, o: Options) -> str:
    if a.creates and os.path.lexists(a.creates):
        return "done before"
    if a.done_when:
        env = _user_env(o, "") if a.run_as else None
        if _run(list(a.done_when), user=a.run_as, env=env).stdout.strip() == a.done_output:
            return "done before"
    env = _user_env(o, a.env_file) if a.run_as else None
    _check(_run(list(a.argv), user=a.run_as, cwd=a.cwd or None, env=env), a)
    if a.stamp and a.creates:
        if apptree.parts_below(o.app_root, a.creates):
            raise InitError(f"refusing the stamp {a.creates}: root keeps its stamps in {STATE_DIR}, not the app's tree")
        os.close(state.open_file(a.creates, os.O_WRONLY | os.O_CREAT))
    return "ran"


def _check(done: subprocess.CompletedProcess[str], a: Action) -> None:
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise InitError(f"{shlex.join(a.argv)} failed (exit status {done.returncode}):\n{tail}")


def print_plan(acts: list[Action], f: Facts) -> None:
    for a in acts:
        mark = " [values checked after the build]" if a.after_build and not f.built else ""
        print(f"  {a.describe()}{mark}" + (f"  # {a.why}" if a.why else ""))


def main(o: Options, dry_run: bool = False, show_files: bool = False) -> int:
    if os.geteuid() != 0 and not dry_run:
        print("error: bluegreen init sets up users, /etc and /srv: run it as root (or try --dry-run)", file=sys.stderr)
        return 1
    try:
        facts = discover(o)
        acts = plan(o, facts)
        if dry_run:
            print(f"bluegreen init {o.app}: the plan (nothing done yet)")
            print_plan(acts, facts)
            if show_files:
                for a in acts:
                    if a.kind in ("file", "append", "env"):
                        print(f"\n==> {a.path} <==\n{a.content}", end="")
            for note in (*facts.notes, *([facts.stop] if facts.stop else [])):
                print(f"note: {note}")
            return 0
        for attempt in range(2):
            done_after = attempt == 1
            ready = facts.built and not facts.stop  # a stop found before: the build (and this --env) first
            for a in acts:
                if a.after_build and not ready and not done_after:
                    continue
                result = apply(a, o)
                print(f"  {result:<12} {a.describe()}", flush=True)
            if ready:
                break
            facts = discover(o)  # now from the built app: its settings, its gunicorn, which URL answers
            if facts.stop:  # nothing written that would not work: the config, the site, the programs
                raise InitError(facts.stop)
            acts = plan(o, facts)
        for note in facts.notes:
            print(f"note: {note}")
        print(f"\n{o.app} is set up. To go live:")
        for line in go_live(o, facts):
            print(f"  {line}")
        return 0
    except InitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def options_from_args(args: object) -> Options:
    """Options from ``bluegreen init``'s arguments: what is not given keeps Options' own default (the one place)."""
    env = []
    for pair in getattr(args, "env", None) or []:
        key, sep, value = pair.partition("=")
        if not sep or not ENV_NAME_RE.match(key):
            raise SystemExit(f"error: --env {pair!r} is not KEY=value")
        env.append((key, value))
    fields = {f.name for f in dataclasses.fields(Options)}
    values = {k: v for k, v in vars(args).items() if k in fields and v not in (None, "")}
    values["env"] = tuple(env)
    values["workers"] = tuple(getattr(args, "worker", None) or ())
    return Options(**values)
