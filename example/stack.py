"""A whole stack in one folder: supervisord with the bluegreen plugin, two colors of the example app, nginx.

It is built from the shipped examples in ``conf/`` with their ``/srv/abiapp`` paths rewritten into
the folder, so the demo, the tests and the benchmark run exactly what a user copies. Every
process runs under the one supervisord this module starts (nginx included), and ``stop()`` ends
them all by pid, even those that outlive supervisord.
"""

from __future__ import annotations

import configparser
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport

from example import services
from supervisor_bluegreen.host import releases

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_APP = REPO / "example" / "app"
NGINX = "/usr/sbin/nginx"
APP = "abiapp"
COLORS = ("blue", "green")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@dataclass
class Stack:
    """Lay out, start and stop one stack under ``root``."""

    root: Path
    mode: str = "socket"
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    program_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    celery: bool = True  # each color's Celery worker, handed over after every go-live
    ini_overrides: dict[str, str] = field(default_factory=dict)
    watch: str = "0"  # the watch window: off unless a test or the demo is about it (deploys wait it out)
    own_venvs: bool = False  # each color a virtualenv of its own under its root (a hard-link copy of ``venv``)
    env_file: bool = False  # the colors read <root>/etc/app.env at start (as init's programs do): `restart` applies it
    pid: int | None = None
    name: str = field(default_factory=lambda: f"bg_{secrets.token_hex(4)}")  # database and Celery queue
    shared_database: str = ""  # a database other stacks use too (a fleet's hosts); default: the stack's own

    @property
    def database(self) -> str:
        return self.shared_database or self.name

    # -- paths -------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "supervisord.conf"

    @property
    def ini(self) -> Path:
        return self.root / "etc" / "bluegreen.ini"

    def checkout(self, color: str) -> Path:
        return self.root / color / "src"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- layout ------------------------------------------------------------------------------
    def rewrite(self, text: str) -> str:
        """An example from conf/ with its system paths pointed into this stack."""
        nginx_args = f"{NGINX} -p {self.root}/nginx/ -c nginx.conf -e {self.root}/log/nginx.error.log"
        venvs = [] if self.own_venvs else [
            ("/srv/abiapp/blue/venv/bin/", f"{self.venv}/bin/"),
            ("/srv/abiapp/green/venv/bin/", f"{self.venv}/bin/"),
            ("/srv/abiapp/live/venv/bin/", f"{self.venv}/bin/"),
            ("/srv/abiapp/%(color)s/venv/bin/", f"{self.venv}/bin/"),
        ]  # fmt: skip
        for old, new in [
            *venvs,
            ('EXAMPLE_DB_NAME="abiapp"', f'EXAMPLE_DB_NAME="{self.database}"'),
            ('EXAMPLE_CELERY_QUEUE="abiapp"', f'EXAMPLE_CELERY_QUEUE="{self.name}"'),
            ("/usr/local/bin/bluegreen", f"{self.venv}/bin/bluegreen"),
            ("/etc/supervisor/bluegreen.ini", str(self.ini)),
            ("/var/log/supervisor/", f"{self.root}/log/"),
            ("/etc/nginx/sites-available", f"{self.root}/nginx/sites-available"),
            ("/etc/nginx/sites-enabled", f"{self.root}/nginx/sites-enabled"),
            ("/usr/sbin/nginx -t", f"{nginx_args} -t -q"),
            ("/usr/sbin/nginx -s reload", f"{nginx_args} -s reload"),
            ("/run/nginx.pid", f"{self.root}/nginx/nginx.pid"),
            ("http://127.0.0.1:80/", f"http://127.0.0.1:{self.port}/"),
            ("listen = 80", f"listen = 127.0.0.1:{self.port}"),
            ("/var/lib/supervisor-bluegreen", f"{self.root}/state"),
            ("/var/www/bluegreen", f"{self.root}/www"),
            ("/var/backups/supervisor-bluegreen", f"{self.root}/backups"),
            ("/srv/abiapp", str(self.root)),
            ("\nuser = abiapp\n", "\n"),
            ("\nworkers = abiapp_celery_%(color)s\n", "\n" if self.celery else "\nworkers =\n"),
            ("\nworker_ping = ", "\nworkers = abiapp_celery_%(color)s\nworker_ping = " if self.celery else "\n; "),
            # node names of their own: two stacks' workers on one RabbitMQ would fight over one pidbox
            ("-n %(program_name)s@", f"-n {self.name}.%(program_name)s@"),
            ("--destination %(worker)s@", f"--destination {self.name}.%(worker)s@"),
            ("\nworker_quiesce = ", "\nworker_quiesce = " if self.celery else "\n; "),
            ("cancel_consumer abiapp ", f"cancel_consumer {self.name} "),
        ]:
            text = text.replace(old, new)
        return text

    def layout(self) -> Stack:
        """Write every file of the stack: checkouts, configs, nginx; nothing is started."""
        for d in (
            "etc/supervisor.d",
            "run",
            "log",
            "state",
            "nginx/sites-available",
            "nginx/sites-enabled",
            "nginx/tmp",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        services.require()
        services.create_database(self.database)
        self.make_checkouts()
        if self.own_venvs:
            for color in COLORS:
                for argv in releases.copy_venv_argvs(str(self.venv), str(self.root / color / "venv")):
                    subprocess.run(argv, check=True)
        self.manage_all(  # at once: each Django start-up is a second or two, and they share nothing
            *((color, "collectstatic", "--noinput", "-v0") for color in COLORS),
            ("blue", "migrate", "--noinput", "-v0"),  # the initial install
        )
        (self.root / "live").symlink_to(self.root / "blue")  # where the workers run until the first switch
        self.write_supervisor_conf()
        self.write_ini()
        self.write_nginx_conf()
        return self

    def make_checkouts(self) -> None:
        """A bare repository of the example app and one clone per color, as in the seed."""
        bare = self.root / "app.git"
        work = self.root / "import"
        shutil.copytree(EXAMPLE_APP, work, ignore=shutil.ignore_patterns("staticroot", "*.sqlite3", "__pycache__"))
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git(
            "-c",
            "user.name=example",
            "-c",
            "user.email=example@localhost",
            "commit",
            "-q",
            "-m",
            "example app",
            cwd=work,
        )
        git("clone", "-q", "--bare", str(work), str(bare), cwd=self.root)
        shutil.rmtree(work)
        for color in COLORS:
            (self.root / color).mkdir(exist_ok=True)
            git("clone", "-q", str(bare), str(self.checkout(color)), cwd=self.root)

    def env(self, color: str) -> dict[str, str]:
        """The environment the color's programs get: its static root, this stack's database and queue."""
        return dict(
            os.environ,
            BLUEGREEN_COLOR=color,
            STATIC_ROOT=str(self.root / color / "static"),
            EXAMPLE_DB_NAME=self.database,
            EXAMPLE_CELERY_QUEUE=self.name,
        )

    def manage_all(self, *commands: tuple[str, ...]) -> None:
        """``manage.py`` commands, each ``(color, *args)`` in that color's checkout as the stack's programs see the
        app, run side by side; every one is waited for, then the first that failed raises CalledProcessError."""
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for color, *args in commands:
                venv = self.root / color / "venv" if self.own_venvs else self.venv
                argv = [f"{venv}/bin/python", "manage.py", *args]
                procs.append(subprocess.Popen(argv, cwd=self.checkout(color), env=self.env(color)))
        finally:
            for proc in procs:
                proc.wait()
        for proc in procs:
            if proc.returncode:
                raise subprocess.CalledProcessError(proc.returncode, proc.args)

    def write_supervisor_conf(self) -> None:
        plugin = configparser.RawConfigParser()
        plugin.read_string(self.rewrite((REPO / "conf/supervisor/bluegreen.conf").read_text()))
        ctl_factory = plugin.get("ctlplugin:bluegreen", "supervisor.ctl_factory")
        (self.root / "etc/supervisor.d/bluegreen.conf").write_text(
            self.rewrite((REPO / "conf/supervisor/bluegreen.conf").read_text())
        )
        programs = configparser.RawConfigParser()
        programs.read_string(self.rewrite((REPO / "conf/supervisor/abiapp.conf").read_text()))
        if self.env_file:
            (self.root / "etc" / "app.env").touch()
            for color in COLORS:
                section = f"program:{APP}_{color}"
                command = programs.get(section, "command")
                programs.set(section, "command", f"/bin/sh -c 'set -a; . {self.root}/etc/app.env; exec {command}'")
        for section, values in self.program_overrides.items():
            for key, value in values.items():
                programs.set(section, key, value)
        out = io.StringIO()
        programs.write(out)
        (self.root / "etc/supervisor.d/abiapp.conf").write_text(out.getvalue())
        r = self.root
        self.conf.write_text(f"""\
[unix_http_server]
file = {r}/run/supervisor.sock
chmod = 0700

[inet_http_server]
port = 127.0.0.1:{self.rpc_port}
username = bluegreen
password = {self.password}

[supervisord]
logfile = {r}/log/supervisord.log
pidfile = {r}/run/supervisord.pid
childlogdir = {r}/log
environment = EXAMPLE_DATA_DIR="{r}/state",BLUEGREEN_FAILPOINTS="1"

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{r}/run/supervisor.sock

[ctlplugin:bluegreen]
supervisor.ctl_factory = {ctl_factory}

[program:nginx]
command = {NGINX} -p {r}/nginx/ -c nginx.conf -e {r}/log/nginx.error.log -g "daemon off;"
startsecs = 1
stopsignal = QUIT
stopwaitsecs = 10
stdout_logfile = {r}/log/nginx.out.log
stderr_logfile = {r}/log/nginx.err.log

[include]
files = {r}/etc/supervisor.d/*.conf
""")

    def write_ini(self) -> None:
        example = "conf/bluegreen-nginx-mode.ini" if self.mode == "nginx" else "conf/bluegreen.ini"
        text = self.rewrite((REPO / example).read_text())
        overrides = {"watch": self.watch, **self.ini_overrides}
        if self.env_file:
            overrides["environment_file"] = str(self.root / "etc" / "app.env")
        for key, value in overrides.items():
            lines = text.splitlines()
            hits = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
            if hits:
                lines[hits[0]] = f"{key} = {value}"
            else:
                lines.append(f"{key} = {value}")  # the app section is the file's last
            text = "\n".join(lines) + "\n"
        self.ini.write_text(text)
        if self.mode == "socket":
            out = subprocess.run(
                [f"{self.venv}/bin/bluegreen", "nginx-site", str(self.ini), APP],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (self.root / "nginx/sites-enabled/abiapp.conf").write_text(out)

    def write_nginx_conf(self) -> None:
        r = self.root / "nginx"
        user = "user root;" if os.geteuid() == 0 else ""
        (r / "nginx.conf").write_text(f"""\
{user}
worker_processes 2;
pid {r}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
    keepalive_timeout 65s;
    include {r}/sites-enabled/*.conf;
}}
""")

    # -- run ---------------------------------------------------------------------------------
    def rpc(self) -> xmlrpc.client.ServerProxy:
        """XML-RPC to this stack's supervisord over its unix socket."""
        transport = SupervisorTransport(None, None, f"unix://{self.root}/run/supervisor.sock")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def start(self, timeout: float = 60) -> Stack:
        """Start supervisord and wait until every program is RUNNING."""
        log = open(self.root / "log" / "supervisord.console.log", "ab")
        proc = subprocess.Popen(
            [f"{self.venv}/bin/supervisord", "-n", "-c", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = proc.pid
        (self.root / "run" / "stack.pid").write_text(str(proc.pid))
        (self.root / "run" / "stack.name").write_text(self.name)
        self.wait_running(timeout)
        return self

    def wait_running(self, timeout: float = 60, programs: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                infos = self.rpc().supervisor.getAllProcessInfo()
                states = {
                    f"{i['group']}:{i['name']}" if i["group"] != i["name"] else i["name"]: i["statename"] for i in infos
                }
                # autostart = false (the colors' own Celery workers): the listener starts the live color's
                manual = {c["name"] for c in self.rpc().supervisor.getAllConfigInfo() if not c["autostart"]}
                wanted = {k: v for k, v in states.items() if k in programs or (not programs and k not in manual)}
                if wanted and all(v == "RUNNING" for v in wanted.values()):
                    return
            except (OSError, xmlrpc.client.Fault):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"programs not RUNNING within {timeout} s: {states}")

    def ctl(self, *args: str, inet: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run supervisorctl against this stack (unix socket, or the authenticated inet server)."""
        server = ["-s", f"http://127.0.0.1:{self.rpc_port}", "-u", "bluegreen", "-p", self.password] if inet else []
        return subprocess.run(
            [f"{self.venv}/bin/supervisorctl", "-c", str(self.conf), *server, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def descendants(self) -> list[psutil.Process]:
        if self.pid is None:
            return []
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30) -> None:
        """Stop supervisord (it stops its programs), then end any survivor by its pid."""
        if self.pid is None:
            return
        children = self.descendants()
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _gone, alive = psutil.wait_procs([p for p in [self._proc(self.pid)] if p] + children, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.pid = None

    def kill(self) -> None:
        """End supervisord and every process under it at once, by pid (SIGKILL): a test's teardown, where nothing
        is checked any more, need not wait out each program's graceful stop (ten seconds a stack).

        The tree is frozen (SIGSTOP) from the top down first: a stopped process forks no more, so none escapes."""
        if self.pid is None:
            return
        frozen: dict[int, psutil.Process] = {}
        todo = [p for p in [self._proc(self.pid)] if p]
        while todo:
            for p in todo:
                try:
                    p.suspend()
                except psutil.NoSuchProcess:
                    continue
                frozen[p.pid] = p
            todo = [c for p in todo for c in self._children(p) if c.pid not in frozen]
        for p in frozen.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(frozen.values()), timeout=10)
        self.pid = None

    def push(self, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Commit ``files`` on top of main, as a developer would, and push them to ``branch``; the commit."""
        work = self.root / "work"
        if not work.exists():
            git("clone", "-q", str(self.root / "app.git"), str(work), cwd=self.root)
        git("fetch", "-q", "origin", cwd=work)
        git("checkout", "-q", "-B", branch, "origin/main", cwd=work)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git("add", "-A", cwd=work)
        git("-c", "user.name=Abi Team", "-c", "user.email=team@abiapp.example", "commit", "-q", "-m", message, cwd=work)
        git("push", "-q", "-f", "origin", f"{branch}:{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    def drop(self) -> None:
        """Remove this stack's database and Celery queue (the tests' teardown)."""
        services.drop_database(self.database)
        services.delete_queue(self.name)

    @staticmethod
    def _children(proc: psutil.Process) -> list[psutil.Process]:
        try:
            return proc.children()
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _proc(pid: int) -> psutil.Process | None:
        try:
            return psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None
