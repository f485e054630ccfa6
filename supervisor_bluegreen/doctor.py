"""``bluegreen doctor [APP]``: check a running system end to end; print each problem with the command that fixes it.

Every check is a function returning findings; ``main`` prints them and exits 1 when any is a problem.
"""

from __future__ import annotations

import configparser
import glob
import os
import pwd
import re
import stat
import subprocess
import xmlrpc.client
from dataclasses import dataclass

from . import health, steps, switch
from .config import App, Config, ConfigError, load
from .state import private_dir_problem

SUPERVISORD_CONFS = ("/etc/supervisor/supervisord.conf", "/etc/supervisord.conf")


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def ok(what: str) -> Finding:
    return Finding(True, what)


def problem(what: str, fix: str) -> Finding:
    return Finding(False, what, fix)


def _run(argv: list[str], timeout: float = 30) -> tuple[int, str]:
    try:
        done = steps.capture(argv, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


# --------------------------------------------------------------------------------------------
# supervisord


def supervisord_proxy(conf: str) -> tuple[xmlrpc.client.ServerProxy | None, str]:
    """An XML-RPC proxy over supervisord's unix socket named in ``conf``, or (None, why)."""
    from supervisor.xmlrpc import SupervisorTransport

    if not os.path.exists(conf):
        return None, f"no supervisord config at {conf} (apt-get install supervisor, or --supervisord-conf FILE)"
    parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";",))
    try:
        parser.read(conf, encoding="utf-8")
    except configparser.Error as exc:
        return None, f"{conf}: {exc}"
    path = parser.get("unix_http_server", "file", fallback="")
    if not path:
        return None, f"{conf} has no [unix_http_server] file"
    user = parser.get("unix_http_server", "username", fallback=None)
    password = parser.get("unix_http_server", "password", fallback=None)
    transport = SupervisorTransport(user, password, f"unix://{path}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport), path


def check_supervisord(conf: str, apps: list[App]) -> list[Finding]:
    proxy, where = supervisord_proxy(conf)
    if proxy is None:
        return [problem(f"cannot talk to supervisord: {where}", f"check {conf}")]
    try:
        methods = proxy.system.listMethods()
    except (OSError, xmlrpc.client.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [problem(f"supervisord does not answer on {where}: {reason}", "systemctl start supervisor")]
    found = [ok(f"supervisord answers on {where}")]
    if "bluegreen.status" not in methods:
        found.append(
            problem(
                "the bluegreen plugin is not loaded in supervisord",
                "bluegreen example include > /etc/supervisor/conf.d/bluegreen.conf && supervisorctl reload "
                "(Debian's supervisord: `bluegreen init` writes the .pth that lets /usr/bin/python3 import it)",
            )
        )
        return found
    found.append(ok("the bluegreen plugin is loaded"))
    with open(conf, encoding="utf-8", errors="replace") as f:
        if "[ctlplugin:bluegreen]" not in f.read():
            found.append(
                problem(
                    f"{conf} has no [ctlplugin:bluegreen]: `supervisorctl bluegreen` is unknown "
                    "(supervisorctl reads only its main file)",
                    f"printf '\\n[ctlplugin:bluegreen]\\nsupervisor.ctl_factory = "
                    f"supervisor_bluegreen.controllerplugin:make_bluegreen_controllerplugin\\n' >> {conf}",
                )
            )
    try:
        infos = {
            f"{i['group']}:{i['name']}" if i["group"] != i["name"] else i["name"]: i
            for i in proxy.supervisor.getAllProcessInfo()
        }
    except (OSError, xmlrpc.client.Error) as exc:
        return [*found, problem(f"cannot list supervisord's programs: {exc}", "supervisorctl status")]
    listener = infos.get("bluegreen")
    if listener is None or listener["statename"] != "RUNNING":
        state = listener["statename"] if listener else "not defined"
        found.append(
            problem(
                f"the event listener bluegreen is {state}",
                "supervisorctl start bluegreen; its log: /var/log/supervisor/bluegreen.log",
            )
        )
    else:
        found.append(ok("the event listener bluegreen is running"))
    for app in apps:
        try:
            live = switch.live_color(app)
        except switch.LiveLinkError as exc:
            found.append(problem(str(exc), f"supervisorctl bluegreen switch {app.name}"))
            live = None
        for color in app.colors:
            info = infos.get(color.program)
            if info is None:
                found.append(
                    problem(f"{app.name}: program {color.program} is not in supervisord", "supervisorctl update")
                )
            elif color.name == live and info["statename"] != "RUNNING":
                found.append(
                    problem(
                        f"{app.name}: the live color {color.name} ({color.program}) is {info['statename']}",
                        f"supervisorctl start {color.program}; tail {info.get('stderr_logfile', '')}",
                    )
                )
            else:
                found.append(
                    ok(f"{app.name}: {color.program} {info['statename']}" + (" (live)" if color.name == live else ""))
                )
        for worker in app.deploy.workers if app.deploy else ():
            info = infos.get(worker)
            if info is None:
                found.append(
                    problem(f"{app.name}: worker program {worker} is not in supervisord", "supervisorctl update")
                )
            elif live and info["statename"] != "RUNNING":
                found.append(
                    problem(f"{app.name}: worker {worker} is {info['statename']}", f"supervisorctl start {worker}")
                )
    return found


# --------------------------------------------------------------------------------------------
# one app on disk


def check_app(app: App) -> list[Finding]:
    found: list[Finding] = []
    try:
        live = switch.live_color(app)
    except switch.LiveLinkError:
        live = None
    if live is None:
        found.append(
            problem(
                f"{app.name}: no color is live yet ({app.live_socket or 'site link'} missing)",
                f"supervisorctl bluegreen deploy {app.name}",
            )
        )
    else:
        sock = app.color(live).socket
        try:
            is_sock = stat.S_ISSOCK(os.stat(sock).st_mode)
        except OSError:
            is_sock = False
        if not is_sock:
            found.append(
                problem(
                    f"{app.name}: the live color's socket {sock} is missing",
                    f"supervisorctl start {app.color(live).program}",
                )
            )
        else:
            result = health.probe(app.live_socket or sock, app.health)
            if result.ok:
                found.append(ok(f"{app.name}: live color {live} answers {app.health.path}: {result.describe()}"))
            else:
                found.append(
                    problem(
                        f"{app.name}: live color {live} fails its health check: {result.describe()}",
                        f"supervisorctl bluegreen health {app.name}; set health_path/health_status in the config",
                    )
                )
    for key, folder in (("state_dir", app.state_dir), ("backup_dir", app.deploy.backup_dir if app.deploy else "")):
        if folder and os.path.exists(folder):
            why = private_dir_problem(folder)
            if why:
                found.append(
                    problem(
                        f"{app.name}: {key} {folder} is not private: {why}",
                        f"chown root:root {folder} && chmod 750 {folder}",
                    )
                )
        elif folder:
            found.append(
                problem(f"{app.name}: {key} {folder} is missing", f"install -d -m 750 -o root -g root {folder}")
            )
    if app.deploy is None:
        return found
    user = app.deploy.user
    try:
        uid = pwd.getpwnam(user).pw_uid if user else None
    except KeyError:
        found.append(problem(f"{app.name}: user {user} does not exist", f"useradd --system --user-group {user}"))
        uid = None
    for color in app.colors:
        if uid is not None and color.checkout:
            try:
                owner = os.stat(color.checkout).st_uid
            except OSError:
                found.append(
                    problem(
                        f"{app.name}: checkout {color.checkout} is missing",
                        f"bluegreen init (or git clone {app.deploy.repo} {color.checkout} as {user})",
                    )
                )
                owner = uid
            if owner != uid:
                found.append(
                    problem(
                        f"{app.name}: {color.checkout} is not owned by {user}", f"chown -R {user}: {color.checkout}"
                    )
                )
        if color.environment_file:
            try:
                st = os.lstat(color.environment_file)
            except OSError:
                found.append(
                    problem(
                        f"{app.name}: environment file {color.environment_file} is missing",
                        f"install -m 640 -o root -g {user} /dev/null {color.environment_file}",
                    )
                )
            else:
                if st.st_mode & stat.S_IROTH or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != 0:
                    found.append(
                        problem(
                            f"{app.name}: {color.environment_file} is readable by others or writable by non-root",
                            f"chown root:{user} {color.environment_file} && chmod 640 {color.environment_file}",
                        )
                    )
    found += check_repo(app)
    found += check_versions(app)
    return found


def check_repo(app: App) -> list[Finding]:
    assert app.deploy is not None
    repo = app.deploy.repo
    if not os.path.exists(os.path.join(repo, "HEAD")):
        return [problem(f"{app.name}: repository {repo} is missing", f"git clone --bare <your repository> {repo}")]
    found = [ok(f"{app.name}: repository {repo}")]
    hooks = os.path.join(repo, "hooks")
    pre = os.path.join(hooks, "pre-receive")
    if not os.access(pre, os.X_OK):
        found.append(
            problem(
                f"{app.name}: no executable {pre}: pushes do not deploy",
                f"bluegreen example hook > {pre} && chmod 755 {pre}",
            )
        )
    if os.path.exists(os.path.join(hooks, "post-receive")):
        with open(os.path.join(hooks, "post-receive"), encoding="utf-8", errors="replace") as f:
            if "bluegreen" in f.read():
                found.append(
                    problem(
                        f"{app.name}: an old bluegreen post-receive hook would deploy a second time",
                        f"rm {hooks}/post-receive",
                    )
                )
    _, out = _run(["git", f"--git-dir={repo}", "config", "bluegreen.app"])
    if out.strip() != app.name:
        found.append(
            problem(
                f"{app.name}: {repo} has bluegreen.app = {out.strip() or 'nothing'}",
                f"git --git-dir={repo} config bluegreen.app {app.name}",
            )
        )
    return found


def check_versions(app: App) -> list[Finding]:
    found = []
    for color in app.colors:
        exe = os.path.join(os.path.dirname(color.python), "gunicorn") if color.python else ""
        if exe and os.access(exe, os.X_OK):
            _, out = _run([exe, "--version"])
            found.append(ok(f"{app.name}: {color.name} runs {out.splitlines()[-1] if out else 'gunicorn ?'}"))
    return found


# --------------------------------------------------------------------------------------------
# nginx


def check_nginx(apps: list[App], config_path: str, nginx_dir: str = "/etc/nginx") -> list[Finding]:
    code, out = _run(["nginx", "-v"])
    if code == 127:
        return [problem("nginx is not installed", "apt-get install nginx")]
    found = [ok(out.strip())]
    version = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    if version and tuple(map(int, version.groups())) < (1, 27, 4):
        found.append(
            ok("note: nginx < 1.27.4 closes idle keep-alive clients on reload; the socket switch never reloads")
        )
    code, out = _run(["nginx", "-t"])
    if code != 0:
        found.append(
            problem(f"nginx -t fails: {out.splitlines()[-1] if out else ''}", "nginx -t; fix the file it names")
        )
    else:
        found.append(ok("nginx -t passes"))
    enabled = {}
    for path in glob.glob(os.path.join(nginx_dir, "sites-enabled", "*")) + glob.glob(
        os.path.join(nginx_dir, "conf.d", "*.conf")
    ):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                enabled[path] = f.read()
        except OSError:
            continue
    default = os.path.join(nginx_dir, "sites-enabled", "default")
    for app in apps:
        needle = f"server unix:{app.live_socket}" if app.switch_mode == "socket" else ""
        if needle and not any(needle in text for text in enabled.values()):
            found.append(
                problem(
                    f"{app.name}: no enabled nginx site proxies to the live socket {app.live_socket}",
                    f"bluegreen nginx-site {config_path} {app.name} > {nginx_dir}/sites-available/{app.name}.conf && "
                    f"ln -s ../sites-available/{app.name}.conf {nginx_dir}/sites-enabled/ && nginx -s reload",
                )
            )
        if default in enabled and app.server_name == "_":
            found.append(
                problem(
                    f"{app.name}: server_name _ conflicts with Debian's default site ({default})",
                    f"set server_name in the config, or rm {default} && nginx -s reload",
                )
            )
        elif default in enabled:
            found.append(ok(f"Debian's default site is enabled; {app.name} answers server_name {app.server_name}"))
        if app.public_url and switch.live_color(app) is not None:
            result = health.probe(app.public_url, app.health, host=app.public_host or None)
            if result.ok:
                found.append(ok(f"{app.name}: {app.public_url} through nginx: {result.describe()}"))
            else:
                found.append(
                    problem(
                        f"{app.name}: {app.public_url} (Host {app.public_host or app.health.host}) through nginx: "
                        f"{result.describe()}",
                        "check listen/server_name of the site and `nginx -s reload`",
                    )
                )
    return found


# --------------------------------------------------------------------------------------------


def run_checks(config_path: str, app_name: str = "", supervisord_conf: str = "") -> list[Finding]:
    try:
        config: Config = load(config_path)
    except ConfigError as exc:
        return [problem(f"{config_path}: {'; '.join(exc.problems)}", f"bluegreen check {config_path}")]
    try:
        apps = [config.app(app_name)] if app_name else list(config.apps.values())
    except KeyError as exc:
        return [problem(str(exc.args[0]), f"bluegreen check {config_path}")]
    conf = supervisord_conf or next((c for c in SUPERVISORD_CONFS if os.path.exists(c)), SUPERVISORD_CONFS[0])
    found = [ok(f"{config_path} is valid")]
    found += check_supervisord(conf, apps)
    for app in apps:
        found += check_app(app)
    found += check_nginx(apps, config_path)
    return found


def main(config_path: str, app_name: str = "", supervisord_conf: str = "") -> int:
    found = run_checks(config_path, app_name, supervisord_conf)
    for f in found:
        if f.ok:
            print(f"ok       {f.what}")
        else:
            print(f"PROBLEM  {f.what}\n         fix: {f.fix}")
    problems = sum(not f.ok for f in found)
    print(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "no problems found")
    return 1 if problems else 0
