"""``bluegreen doctor [APP]``: check a running system end to end; print each problem with the command that fixes it.

Every check is a function returning findings; ``main`` prints them and exits 1 when any is a problem.

Doctor runs as root over folders the app user owns, so (issue 13) it never runs or follows what that
user can change: a program of the app's tree (its gunicorn, git on its repository) runs as the app
user through the one runner (``runner.capture``), from ``/``, Python isolated (``-I``); a file of the
app is read by a child running as that user (``runner.read_as_user``), root's own files only as regular
files with a bounded read (``state.read_bounded``); and every command, RPC and probe has a timeout, so
a FIFO or a hung server is a problem line, never a hang. It also checks that the app's data is not
open to every local user: the app user's home, a SQLite database, supervisord's umask, the listener's log.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import socket
import stat
import time
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Callable

from supervisor_bluegreen.ctl.supervisordconf import CTLPLUGIN, SupervisordConfError, has_ctlplugin, read_conf
from supervisor_bluegreen.ctl.supervisordconf import read as read_supervisord_conf
from supervisor_bluegreen.host import envfile, health, links, nginx, runner
from supervisor_bluegreen.shared.config import SUPERVISOR_LOG_DIR, App, Config, ConfigError, find_supervisord_conf, load
from supervisor_bluegreen.shared.store import private_dir_problem, read_bounded

TIMEOUT = 20.0  # seconds any one command, RPC or read of doctor may take
SETTLE = 10.0  # seconds doctor waits for a program supervisord is STARTING (its startsecs) to settle
SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")  # an environment value naming one of these is a database file


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def ok(what: str) -> Finding:
    return Finding(True, what)


def problem(what: str, fix: str) -> Finding:
    return Finding(False, what, fix)


def _run(argv: list[str], user: str = "") -> tuple[int, str]:
    """(status, output) of ``argv`` run by the one runner from ``/`` with a plain environment, as ``user`` when
    given (the app's programs and files), within TIMEOUT (``runner.status_and_output``)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", **(runner.user_env(user) if user else {})}
    return runner.status_and_output(argv, cwd="/", env=env, user=user, timeout=TIMEOUT)


def _open_to_others(path: str) -> int | None:
    """The mode of ``path`` when every local user may read, write or enter it (mode & 0o007), else None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & 0o007 else None


# --------------------------------------------------------------------------------------------
# supervisord


def supervisord_proxy(conf: str, timeout: float = TIMEOUT) -> tuple[xmlrpc.client.ServerProxy | None, str]:
    """An XML-RPC proxy over supervisord's unix socket named in ``conf``, or (None, why).

    Every call gives up after ``timeout`` seconds (an OSError): a supervisord that accepts and never
    answers does not hang doctor.
    """
    from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

    class TimedConnection(UnixStreamHTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(self.socketfile)

    if not os.path.exists(conf):
        return None, f"no supervisord config at {conf} (apt-get install supervisor, or --supervisord-conf FILE)"
    try:
        parsed = read_supervisord_conf(conf)
        path = parsed.get("unix_http_server", "file", "") or ""
        user = parsed.get("unix_http_server", "username")
        password = parsed.get("unix_http_server", "password")
    except SupervisordConfError as exc:
        return None, str(exc)
    if not path:
        return None, f"{conf} has no [unix_http_server] file"
    transport = SupervisorTransport(user, password, f"unix://{path}")

    def connection() -> TimedConnection:
        conn = TimedConnection("localhost")
        conn.socketfile = path
        return conn

    transport._get_connection = connection  # supervisor's own opens a socket without a timeout
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport), path


def foreground(pid: int, conf: str) -> bool:
    """Whether supervisord runs in the foreground (``-n``, as Debian's systemd unit starts it, or ``nodaemon``).

    Then it never applies the ``umask`` of its config (only its daemonizing does): its umask is its starter's.
    """
    try:
        argv = read_bounded(f"/proc/{pid}/cmdline", 1 << 16).decode("utf-8", "replace").split("\0")
    except OSError:
        argv = []
    if "-n" in argv or "--nodaemon" in argv:
        return True
    try:
        nodaemon = read_supervisord_conf(conf).get("supervisord", "nodaemon", "false") or "false"
    except SupervisordConfError:
        return False
    return nodaemon.strip().lower() in ("true", "yes", "on", "1")


def check_umask(pid: int, conf: str) -> list[Finding]:
    """supervisord's umask, read from the running process: it sets the mode of every log it writes."""
    try:
        status = read_bounded(f"/proc/{pid}/status", 1 << 16).decode("ascii", "replace")
    except OSError as exc:
        return [problem(f"cannot read supervisord's umask (pid {pid}): {exc}", "check that supervisord runs")]
    found = re.search(r"^Umask:\s*([0-7]+)$", status, re.MULTILINE)
    if found is None:  # kernels before 4.7 do not show it
        return [ok("supervisord's umask is not shown by this kernel")]
    umask = int(found.group(1), 8)
    if umask & 0o027 == 0o027:
        return [ok(f"supervisord's umask is {umask:04o}")]
    if foreground(pid, conf):
        dropin = "/etc/systemd/system/supervisor.service.d"
        fix = (
            f"mkdir -p {dropin} && printf '[Service]\\nUMask=0027\\n' > {dropin}/bluegreen-umask.conf && "
            "systemctl daemon-reload && systemctl restart supervisor (supervisord -n ignores the umask of its config)"
        )
    else:
        fix = f"add `umask = 027` to [supervisord] in {conf}, then systemctl restart supervisor"
    what = (
        f"supervisord's umask is {umask:04o}: the logs it writes (the listener's, the colors') are readable by "
        "every user, with whatever the app prints"
    )
    return [problem(what, fix)]


def check_logs(info: dict[str, Any]) -> list[Finding]:
    """The listener's logs (deploy output, errors) are for root and its group, not every user."""
    found = []
    for key in ("stdout_logfile", "stderr_logfile"):
        path = info.get(key) or ""
        mode = _open_to_others(path) if path and os.path.isabs(path) else None
        if mode is not None:
            found.append(
                problem(
                    f"the listener's log {path} is open to every user (mode {mode:04o})",
                    f"chmod 640 {path} (and set supervisord's umask to 027 so new logs are made so)",
                )
            )
    return found


def settled_programs(proxy: Any, patience: float = SETTLE, pause: float = 0.25) -> dict[str, dict[str, Any]]:
    """supervisord's programs by name, once none is STARTING (or ``patience`` has passed).

    A color a deploy just started answers its health gate before supervisord's ``startsecs`` pass and
    calls it RUNNING: doctor run right after the first deploy is no reason to call the live color down.
    """
    deadline = time.monotonic() + patience
    while True:
        infos = {
            f"{i['group']}:{i['name']}" if i["group"] != i["name"] else i["name"]: i
            for i in proxy.supervisor.getAllProcessInfo()
        }
        if time.monotonic() >= deadline or all(i["statename"] != "STARTING" for i in infos.values()):
            return infos
        time.sleep(pause)


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
    try:
        found += check_umask(proxy.supervisor.getPID(), conf)
        infos = settled_programs(proxy)
    except (OSError, xmlrpc.client.Error) as exc:
        return [*found, problem(f"cannot list supervisord's programs: {exc}", "supervisorctl status")]
    listener = infos.get("bluegreen")
    found += check_logs(listener) if listener else []
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
    try:
        ctlplugin = has_ctlplugin(conf)
    except SupervisordConfError as exc:
        ctlplugin = True  # said as a problem of its own
        found.append(problem(f"cannot look for [ctlplugin:bluegreen] in {exc}", f"ls -l {conf}"))
    if not ctlplugin:
        found.append(
            problem(
                f"{conf} has no [ctlplugin:bluegreen]: `supervisorctl bluegreen` is unknown "
                "(supervisorctl reads only its main file)",
                "printf '\\n" + CTLPLUGIN.replace("\n", "\\n") + f"' >> {conf}",
            )
        )
    if listener is None or listener["statename"] != "RUNNING":
        state = listener["statename"] if listener else "not defined"
        found.append(
            problem(
                f"the event listener bluegreen is {state}",
                f"supervisorctl start bluegreen; its log: {SUPERVISOR_LOG_DIR}/bluegreen.log",
            )
        )
    else:
        found.append(ok("the event listener bluegreen is running"))
    for app in apps:
        try:
            live = links.live_color(app)
        except links.LiveLinkError as exc:
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
        found += check_workers(app, live, infos, proxy.supervisor.getProcessInfo)
    return found


def check_workers(
    app: App, live: str | None, infos: dict[str, dict[str, Any]], reread: Callable[[str], dict[str, Any]]
) -> list[Finding]:
    """Every worker program with its state, pid, uptime and directory; one up for less than its settle time is
    looked at again once that has passed: a new pid meanwhile is a worker supervisor keeps restarting. The idle
    color's own workers must be stopped (the handover stopped them)."""
    found: list[Finding] = []
    settle = app.deploy.worker_settle if app.deploy else 0.0
    idle = [w for c in app.colors if c.name != live for w in c.workers] if live else []
    for worker in idle:  # the color traffic left: its workers got their warm shutdown at the handover
        info = infos.get(worker)
        if info is None:
            found.append(problem(f"{app.name}: worker program {worker} is not in supervisord", "supervisorctl update"))
        elif info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
            found.append(
                problem(
                    f"{app.name}: worker {worker} of the idle color is {info['statename']}: it consumes with code "
                    "traffic left (unless a handover is under way)",
                    f"supervisorctl bluegreen status {app.name}; supervisorctl stop {worker}",
                )
            )
        else:
            found.append(ok(f"{app.name}: worker {worker} {info['statename']} (idle color)"))
    serving = list(app.color(live).workers) if live else []
    for worker in [*serving, *(app.deploy.workers if app.deploy else ())]:
        info = infos.get(worker)
        if info is None:
            found.append(problem(f"{app.name}: worker program {worker} is not in supervisord", "supervisorctl update"))
            continue
        if info["statename"] == "RUNNING" and info["now"] - info["start"] < settle:
            time.sleep(settle - (info["now"] - info["start"]))
            again = reread(worker)
            if again["pid"] != info["pid"] or again["statename"] != "RUNNING":
                found.append(
                    problem(
                        f"{app.name}: worker {worker} exits after it starts (pid {info['pid']}, now "
                        f"{again['statename']} pid {again['pid']}): supervisor keeps restarting it",
                        f"tail {info.get('stderr_logfile') or info.get('stdout_logfile') or 'its log'}",
                    )
                )
                continue
            info = again
        if info["statename"] != "RUNNING":
            fix = f"supervisorctl start {worker}; tail {info.get('stderr_logfile', '')}"
            found.append((problem if live else ok)(f"{app.name}: worker {worker} is {info['statename']}", fix))
            continue
        found.append(worker_running(app, live, worker, info))
    return found


def worker_running(app: App, live: str | None, worker: str, info: dict[str, Any]) -> Finding:
    """A running worker, and whether it runs the live color's release: its /proc cwd (the kernel's answer)
    within what the live color's root link names (read, never followed)."""
    pid, uptime = info["pid"], info["now"] - info["start"]
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "?"
    said = f"{app.name}: worker {worker} RUNNING pid {pid} for {uptime:.0f} s in {cwd}"
    root = app.color(live).root if live else ""
    if not root:
        return ok(said)
    try:
        release = os.readlink(root) if os.path.islink(root) else root
    except OSError:
        release = root
    release = os.path.join(os.path.dirname(root), release) if not os.path.isabs(release) else release
    if cwd == release or cwd.startswith(release.rstrip("/") + "/"):
        return ok(said + f" (the live color {live}'s release)")
    return problem(said + f", not in the live color {live}'s {release}", f"supervisorctl restart {worker}")


# --------------------------------------------------------------------------------------------
# one app on disk


def backups_unproven(app: App) -> list[Finding]:
    """A deploy that backs up without verifying has a dump nobody restored: said (a note, not a problem)."""
    config = app.deploy
    if not config or config.verify_backup or not any(s.name == "backup" for s in config.steps):
        return []
    return [
        ok(
            f"note: {app.name}: its backups are not verified (verify_backup = false): a dump that does not restore "
            "is found only when it is needed; grant the app's database user CREATE/DROP on <name>_bgverify_* "
            "and set verify_backup = true"
        )
    ]


def check_app(app: App) -> list[Finding]:
    found: list[Finding] = backups_unproven(app)
    try:
        live = links.live_color(app)
    except links.LiveLinkError:
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
    found += check_live_static(app)
    if app.deploy is None:
        return found
    user = app.deploy.user
    try:
        entry = pwd.getpwnam(user) if user else None
    except KeyError:
        found.append(problem(f"{app.name}: user {user} does not exist", f"useradd --system --user-group {user}"))
        entry = None
    uid = entry.pw_uid if entry else None
    if entry is not None and entry.pw_uid != 0:
        found += check_home(app, entry.pw_dir, user)
    read_env_files: set[str] = set()
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
                if color.environment_file not in read_env_files:  # the colors mostly share one
                    read_env_files.add(color.environment_file)
                    found += check_environment_file(app, color.environment_file)
    found += check_sqlite(app)
    if user and entry is None:  # nothing of the app's is run or read as root instead of its missing user
        return found
    found += check_repo(app)
    found += check_versions(app)
    return found


def check_live_static(app: App) -> list[Finding]:
    """nginx follows the live static link only when it belongs to the static root's owner (``links.link_owner``).

    A link to no color's static root is check_supervisord's LiveLinkError, not a question of owners here.
    """
    target = links.resolved(app.live_static) if app.live_static else None
    color = next((c for c in app.colors if target and os.path.realpath(c.static_root) == target), None)
    want = links.link_owner(app, app.live_static, color.static_root) if color else None
    try:
        link = os.lstat(app.live_static)
    except OSError:
        return []
    if color is None or want is None or (link.st_uid, link.st_gid) == want:
        return []
    return [
        problem(
            f"{app.name}: nginx does not follow {app.live_static}: it belongs to uid {link.st_uid}, the static "
            f"root {color.static_root} to uid {want[0]} (a link made before disable_symlinks)",
            f"chown -h {want[0]}:{want[1]} {app.live_static}",
        )
    ]


def check_home(app: App, home: str, user: str) -> list[Finding]:
    """The app user's home holds its data (a SQLite database, dotfiles with credentials): not for every user."""
    mode = _open_to_others(home)
    if mode is None:
        return []
    return [
        problem(
            f"{app.name}: {user}'s home {home} is open to every user (mode {mode:04o}): the app's files there "
            "(a SQLite database, ~/.my.cnf, ~/.pgpass) can be read by anyone",
            f"chmod 750 {home}",
        )
    ]


def check_environment_file(app: App, path: str) -> list[Finding]:
    """The build reads the file only where /bin/sh (the programs) reads the same: a line it refuses is a problem."""
    try:
        envfile.read(path)
    except envfile.EnvFileError as exc:
        return [problem(f"{app.name}: environment file: {exc}", exc.fix or f"fix {path}")]
    return []


def sqlite_paths(app: App) -> list[str]:
    """The SQLite database files the app's environment (its file and the colors' values) names, in order."""
    paths: dict[str, None] = {}
    for color in app.colors:
        try:
            env = envfile.read(color.environment_file) if color.environment_file else {}
        except envfile.EnvFileError:
            env = {}  # check_app reports the file itself (check_environment_file)
        for value in [*env.values(), *dict(color.environment).values()]:
            if os.path.isabs(value) and value.endswith(SQLITE_SUFFIXES):
                paths[value] = None
    return list(paths)


def check_sqlite(app: App) -> list[Finding]:
    """A SQLite database (and its -wal, -shm, -journal) holds all the app's data: 0600 or 0640, never for everyone."""
    found = []
    for path in sqlite_paths(app):
        for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
            mode = _open_to_others(name)
            if mode is not None:
                found.append(
                    problem(
                        f"{app.name}: the SQLite database file {name} is open to every user (mode {mode:04o})",
                        f"chmod 600 {name}",
                    )
                )
    return found


def check_repo(app: App) -> list[Finding]:
    """The bare repository: the hook that deploys, no old one that deploys twice, the app it names.

    Its files are the app user's: read and run as that user, never by root.
    """
    assert app.deploy is not None
    user = app.deploy.user
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
    post = os.path.join(hooks, "post-receive")
    try:
        text = runner.read_as_user(post, user, timeout=TIMEOUT)
    except runner.ReadError as exc:
        found.append(problem(f"{app.name}: cannot check {post}: {exc}", f"rm {post}"))
    else:
        if text is not None and b"bluegreen" in text:
            found.append(
                problem(f"{app.name}: an old bluegreen post-receive hook would deploy a second time", f"rm {post}")
            )
    _, out = _run(["git", f"--git-dir={repo}", "config", "bluegreen.app"], user)
    if out.strip() != app.name:
        found.append(
            problem(
                f"{app.name}: {repo} has bluegreen.app = {out.strip() or 'nothing'}",
                f"git --git-dir={repo} config bluegreen.app {app.name}",
            )
        )
    return found


def check_versions(app: App) -> list[Finding]:
    """Which gunicorn each color runs: asked of the color's own Python, as the app user (its venv is theirs)."""
    assert app.deploy is not None
    found = []
    for color in app.colors:
        exe = os.path.join(os.path.dirname(color.python), "gunicorn") if color.python else ""
        if exe and os.access(exe, os.X_OK):
            code, out = _run([color.python, "-I", "-m", "gunicorn", "--version"], app.user)
            said = out.splitlines()[-1] if out else "gunicorn ?"
            if code == 0:
                found.append(ok(f"{app.name}: {color.name} runs {said}"))
            else:
                found.append(
                    problem(
                        f"{app.name}: {color.name}: gunicorn --version fails: {said}", f"ls -l {exe} {color.python}"
                    )
                )
    return found


# --------------------------------------------------------------------------------------------
# nginx


def check_site_links(app: App, enabled: dict[str, str], config_path: str) -> list[Finding]:
    """An enabled site of the app rendered before issue 13 (``root /``, no ``disable_symlinks``) lets nginx
    follow a link the app user makes in a static or media folder to any file on the machine."""
    marker = f"upstream {nginx.upstream_name(app)} {{"
    found = []
    for path, text in enabled.items():
        if marker in text and ("/static/" in text or "alias " in text) and "disable_symlinks" not in text:
            color = re.search(r"^# nginx site for app .*, color (\S+):", text, re.MULTILINE)
            found.append(
                problem(
                    f"{app.name}: the nginx site {path} follows symlinks the app user makes in its static and "
                    "media folders (to /etc/passwd, to the database): it predates disable_symlinks",
                    f"bluegreen nginx-site {config_path} {app.name}{' ' + color.group(1) if color else ''} > "
                    f"{os.path.realpath(path)} && nginx -t && nginx -s reload",
                )
            )
    return found


def check_site_maintenance(app: App, enabled: dict[str, str], config_path: str) -> list[Finding]:
    """An enabled site of the app rendered before ``bluegreen maintenance`` never looks for the page: maintenance
    on would change nothing nginx answers."""
    marker = f"upstream {nginx.upstream_name(app)} {{"
    found = []
    for path, text in enabled.items():
        if marker in text and app.maintenance_page not in text:
            color = re.search(r"^# nginx site for app .*, color (\S+):", text, re.MULTILINE)
            found.append(
                problem(
                    f"{app.name}: the nginx site {path} does not look for {app.maintenance_page}: `bluegreen "
                    "maintenance on` would not show the 503 page (the site predates it, or maintenance_dir changed)",
                    f"bluegreen nginx-site {config_path} {app.name}{' ' + color.group(1) if color else ''} > "
                    f"{os.path.realpath(path)} && nginx -t && nginx -s reload",
                )
            )
    return found


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
            enabled[path] = read_conf(path)
        except OSError:
            continue
    default = os.path.join(nginx_dir, "sites-enabled", "default")
    for app in apps:
        found += check_site_links(app, enabled, config_path)
        found += check_site_maintenance(app, enabled, config_path)
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
        if app.public_url and links.live_color(app) is not None:
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
    conf = find_supervisord_conf(supervisord_conf)
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
