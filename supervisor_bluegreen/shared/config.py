"""Parse and validate bluegreen app configs into plain frozen dataclasses.

The file is INI, like supervisord's own, so a supervisor user reads it at a glance.
Per-color values use supervisor's expansion style: ``program = abiapp_%(color)s``.
Every error names the file, the section, the key and the reason, and the whole file
is checked at once so a user fixes everything in one go.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.stepdefs import PRESETS, STEP_KEYS, WORKER_PING_KEYS, BuildStep, builtin_steps

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a variable name sh and supervisord take
SWITCH_MODES = ("socket", "nginx")
UNSAFE_PATH_RE = re.compile(r"[\s;{}\"'`$\\\x00-\x1f\x7f]")  # what could end a directive of nginx or supervisord

# default paths: each written here once, for every command and file that needs it
DEFAULT_STATE_DIR = "/var/lib/supervisor-bluegreen"
DEFAULT_CONFIG = "/etc/supervisor/bluegreen.ini"  # this file's own place
SUPERVISORD_CONFS = ("/etc/supervisor/supervisord.conf", "/etc/supervisord.conf")  # Debian's first
SUPERVISOR_LOG_DIR = "/var/log/supervisor"  # where Debian's supervisord keeps its programs' logs
# the jinja2 templates shipped in the package: the nginx site, init's programs file and app config
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")
DEFAULT_MAINTENANCE_DIR = "/var/www/bluegreen"  # root's, 0755: nginx reads <app>.html there (the state folder is 0750)


def find_supervisord_conf(given: str = "") -> str:
    """supervisord's main config: ``given``, else the first of SUPERVISORD_CONFS that exists, else Debian's."""
    return given or next((c for c in SUPERVISORD_CONFS if os.path.exists(c)), SUPERVISORD_CONFS[0])


class ConfigError(BluegreenError):
    """A config file that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True)
class HealthCheck:
    """How to decide that a color really answers: a GET over its own socket."""

    path: str = "/health"
    host: str = "localhost"
    status: int = 200
    body: str = ""
    interval: float = 0.5
    timeout: float = 2.0
    passes: int = 3
    deadline: float = 60.0
    https: bool = False  # probes say X-Forwarded-Proto: https, as nginx does for a TLS site (Django's SSL redirect)


@dataclass(frozen=True)
class Watch:
    """The window after a go-live in which a crash or K failed probes of the new color roll back by themselves."""

    seconds: float = 60.0  # 0: no window, no automatic rollback
    interval: float = 1.0
    failures: int = 3


@dataclass(frozen=True)
class Color:
    """One of the two copies of an app: its supervisor program and where it lives."""

    name: str
    program: str
    socket: str
    checkout: str = ""
    static_root: str = ""
    root: str = ""
    python: str = ""
    environment: tuple[tuple[str, str], ...] = ()
    environment_file: str = ""  # KEY='value' lines (see envfile.py), read by every build step; environment wins
    workers: tuple[str, ...] = ()  # this color's own worker programs (``workers = app_celery_%(color)s``)


@dataclass(frozen=True)
class NginxSite:
    """Settings of the seed's switch mode: one nginx site file per color."""

    sites_dir: str
    enabled_link: str
    test_cmd: tuple[str, ...]
    reload_cmd: tuple[str, ...]
    pidfile: str
    verify_timeout: float = 10.0


@dataclass(frozen=True)
class Deploy:
    """What ``deploy`` needs: where commits come from, how a color is built, what restarts after."""

    repo: str
    branch: str
    user: str
    steps: tuple[BuildStep, ...]
    step_timeout: float
    backup_dir: str
    backup_keep: int
    drain_timeout: float
    workers: tuple[str, ...]
    worker_timeout: float
    webhooks: tuple[str, ...]
    worker_settle: float = 5.0  # seconds a restarted worker must stay RUNNING (no exit) before the step passes
    verify_backup: bool = False  # restore each new backup into a scratch database and compare before migrate
    releases: str = ""  # where each deploy builds its release (host/releases.py); a color's root links to one
    keep_releases: int = 5  # built releases kept for rollback; one a color runs is never removed
    test_requirements: tuple[str, ...] = ()  # requirements files (in the checkout) only the tests need
    worker_ping: tuple[str, ...] = ()  # asks a started worker whether it consumes (celery inspect ping); exit 0: yes
    worker_quiesce: tuple[str, ...] = ()  # tells the old color's worker to stop consuming before its warm shutdown
    side_by_side: bool = True  # independent build steps (stepdefs.stages) run at once; off: one at a time
    # "auto": held-back contract migrations run once the window passed; "manual": they wait for `bluegreen contract
    # APP` (a fleet on one database runs them once every host serves the new release)
    contract: str = "auto"


@dataclass(frozen=True)
class App:
    """One app run as two colors behind nginx."""

    name: str
    colors: tuple[Color, ...]
    switch_mode: str
    live_socket: str
    live_static: str
    public_url: str
    public_host: str
    color_header: str
    health: HealthCheck
    state_dir: str
    nginx_template: str
    listen: str
    server_name: str
    nginx: NginxSite | None = None
    live_root: str = ""
    deploy: Deploy | None = None
    watch: Watch = field(default_factory=Watch)
    # the rendered nginx site: HTTPS when a certificate is given (port 80 then redirects), uploads, body size
    ssl_certificate: str = ""
    ssl_certificate_key: str = ""
    ssl_listen: str = "443"
    media_root: str = ""
    media_url: str = "/media/"
    client_max_body_size: str = "10m"
    # `bluegreen maintenance on` writes <maintenance_dir>/<app>.html; the site answers 503 with it while it exists
    maintenance_dir: str = DEFAULT_MAINTENANCE_DIR
    maintenance_retry_after: int = 60

    @property
    def maintenance_page(self) -> str:
        """The file whose existence puts the app's pages in maintenance (nginx answers 503 with it)."""
        return os.path.join(self.maintenance_dir, f"{self.name}.html")

    @property
    def user(self) -> str:
        """Who runs the app's code, git on its repository and checkouts included ('' without a deploy section:
        the listener's user); one rule, because git refuses a repository owned by someone else."""
        return self.deploy.user if self.deploy else ""

    @property
    def color_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.colors)

    def color(self, name: str) -> Color:
        """The color called ``name``; KeyError when the app has none such."""
        for c in self.colors:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def has_workers(self) -> bool:
        """Whether worker programs follow the live color: the colors' own, or ones run from live_root."""
        return any(c.workers for c in self.colors) or bool(self.deploy and self.deploy.workers)

    def other(self, name: str) -> Color:
        """The color that is not ``name``: the idle one when ``name`` is live."""
        return next(c for c in self.colors if c.name != name)


@dataclass(frozen=True)
class Config:
    path: str
    apps: dict[str, App] = field(default_factory=dict)

    def app(self, name: str = "") -> App:
        """The app called ``name``; an empty name means the only one configured."""
        if not name:
            if len(self.apps) == 1:
                return next(iter(self.apps.values()))
            raise KeyError(f"no app named and {len(self.apps)} are configured: {', '.join(sorted(self.apps))}")
        try:
            return self.apps[name]
        except KeyError:
            known = ", ".join(sorted(self.apps)) or "none"
            raise KeyError(f"unknown app {name!r} (configured: {known})") from None


def _check_keys(value: str, known: tuple[str, ...], where: str, problems: list[str]) -> bool:
    """True when ``value`` uses no %-expansion but ``%(k)s`` for ``k`` in ``known`` (else one problem)."""
    rest = value
    for key in known:
        rest = rest.replace(f"%({key})s", "")
    if "%" in rest:
        names = ", ".join(f"%({k})s" for k in known)
        message = f"{where}: cannot expand {value!r}: only {names} {'is' if len(known) == 1 else 'are'} known"
        if message not in problems:
            problems.append(message)
        return False
    return True


def _expand(value: str, color: str, where: str, problems: list[str]) -> str:
    """``value`` with %(color)s expanded; any other %-expansion is a problem (reported once per key)."""
    if not _check_keys(value, ("color",), where, problems):
        return value
    return value.replace("%(color)s", color)


def parse_environment(value: str, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """supervisor's ``KEY="value",KEY2="value2"`` syntax.

    Values may be secrets (passwords, tokens): problems name keys and positions, never a value.
    """
    pairs = []
    try:
        lexer = shlex.shlex(value, posix=True, punctuation_chars=False)
        lexer.whitespace = ","
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        problems.append(f"{where}: cannot parse it: {exc} (values not shown: they may be secrets)")
        return ()
    for n, token in enumerate(tokens, 1):
        key, sep, val = token.strip().partition("=")
        if not sep or not ENV_NAME_RE.match(key):
            name = f"{key!r}" if sep else "it"
            problems.append(
                f"{where}: entry {n} is not KEY=value ({name} is not a variable name; "
                'quote a value with commas: KEY="a,b")'
            )
            continue
        pairs.append((key, val))
    return tuple(pairs)


class _Section:
    """Typed reads from one section, collecting problems instead of raising."""

    def __init__(self, parser: configparser.RawConfigParser, name: str, problems: list[str]):
        self.parser, self.name, self.problems = parser, name, problems
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def text(self, key: str, default: str | None = None) -> str:
        self.used.add(key)
        if self.parser.has_option(self.name, key):
            return self.parser.get(self.name, key).strip()
        if self.parser.has_option("bluegreen", key):
            return self.parser.get("bluegreen", key).strip()
        if default is None:
            self.problems.append(f"{self.where(key)}: required but missing")
            return ""
        return default

    def number(self, key: str, default: float, kind: type = float, minimum: float = 0) -> float:
        raw = self.text(key, str(default))
        try:
            value = kind(raw)
        except ValueError:
            self.problems.append(f"{self.where(key)}: {raw!r} is not a {'whole ' if kind is int else ''}number")
            return default
        if not math.isfinite(value) or value < minimum:
            self.problems.append(f"{self.where(key)}: {raw!r} must be at least {minimum}")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self.text(key, "true" if default else "false").lower()
        if raw not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            self.problems.append(f"{self.where(key)}: {raw!r} is not true or false")
            return default
        return raw in ("true", "yes", "on", "1")

    def path(self, key: str, default: str | None = None) -> str:
        """An absolute path, and one that cannot end a directive of the nginx site or supervisord's programs it
        is written into (whitespace, quotes, ``; { } $`` and backslashes would let a value add directives)."""
        value = self.text(key, default)
        if value and not os.path.isabs(value):
            self.problems.append(f"{self.where(key)}: {value!r} must be an absolute path")
        elif value and UNSAFE_PATH_RE.search(value):
            self.problems.append(
                f"{self.where(key)}: {value!r} must not contain whitespace, quotes or any of ; {{ }} $ ` \\"
            )
        return value

    def argv(self, key: str, default: str) -> tuple[str, ...]:
        raw = self.text(key, default)
        try:
            argv = tuple(shlex.split(raw))
        except ValueError as exc:
            self.problems.append(f"{self.where(key)}: cannot split {raw!r}: {exc}")
            return ()
        if not argv:
            self.problems.append(f"{self.where(key)}: empty command")
        return argv

    def unknown_keys(self, known: set[str]) -> None:
        inherited = self.name != "bluegreen"  # an app may repeat a [bluegreen] default
        for key in self.parser.options(self.name):
            if key.startswith("step_") and inherited:
                continue
            if key not in known and not (inherited and self.parser.has_option("bluegreen", key)):
                self.problems.append(f"{self.where(key)}: unknown option")


APP_KEYS = {
    "colors",
    "program",
    "socket",
    "checkout",
    "static_root",
    "switch",
    "live_socket",
    "live_static",
    "public_url",
    "public_host",
    "color_header",
    "health_path",
    "health_host",
    "health_status",
    "health_https",
    "health_body",
    "health_interval",
    "health_timeout",
    "health_passes",
    "health_deadline",
    "state_dir",
    "nginx_template",
    "listen",
    "server_name",
    "nginx_sites",
    "nginx_enabled",
    "nginx_test",
    "nginx_reload",
    "nginx_pidfile",
    "nginx_verify_timeout",
    "root",
    "python",
    "environment",
    "environment_file",
    "live_root",
    "watch",
    "watch_interval",
    "watch_failures",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_listen",
    "media_root",
    "media_url",
    "client_max_body_size",
    "maintenance_dir",
    "maintenance_retry_after",
}
CONTRACT_MODES = ("auto", "manual")
DEPLOY_KEYS = {
    "repo",
    "branch",
    "user",
    "build",
    "step_timeout",
    "backup_dir",
    "backup_keep",
    "verify_backup",
    "side_by_side",
    "contract",
    "drain_timeout",
    "workers",
    "worker_timeout",
    "worker_settle",
    "worker_ping",
    "worker_quiesce",
    "webhooks",
    "releases",
    "keep_releases",
    "test_requirements",
}
APP_KEYS |= DEPLOY_KEYS
GLOBAL_KEYS = APP_KEYS - {"colors", "program", "socket", "checkout", "static_root", "root", "repo", "build"}


def default_template() -> str:
    """The nginx site template shipped in the package."""
    return os.path.join(TEMPLATE_DIR, "site.conf.j2")


def _http_url(url: str) -> bool:
    """An http(s) URL with a host and, if any, a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_app(parser: configparser.RawConfigParser, section: str, problems: list[str]) -> App | None:
    name = section.split(":", 1)[1].strip()
    s = _Section(parser, section, problems)
    if not NAME_RE.match(name):
        problems.append(f"[{section}]: app name {name!r} must be letters, digits, '_', '.', '-'")
    color_names = s.text("colors", "blue green").split()
    if len(color_names) != 2 or len(set(color_names)) != 2:
        problems.append(f"{s.where('colors')}: exactly two distinct colors are needed, got {color_names!r}")
        return None
    for c in color_names:
        if not NAME_RE.match(c):
            problems.append(f"{s.where('colors')}: color {c!r} must be letters, digits, '_', '.', '-'")
    raw = {
        "program": s.text("program"),
        "socket": s.path("socket"),
        "checkout": s.path("checkout", ""),
        "static_root": s.path("static_root", ""),
        "root": s.path("root", ""),
        "python": s.text("python", ""),
        "environment_file": s.path("environment_file", ""),
    }
    environment = s.text("environment", "")
    colors = tuple(
        Color(
            name=c,
            **{key: _expand(value, c, s.where(key), problems) for key, value in raw.items()},
            environment=parse_environment(
                _expand(environment, c, s.where("environment"), problems), s.where("environment"), problems
            ),
        )
        for c in color_names
    )
    if all(c.checkout and not c.root for c in colors):
        colors = tuple(dataclasses.replace(c, root=r) for c, r in zip(colors, default_roots(colors)))
    own_workers = [w for w in s.text("workers", "").split() if "%(color)s" in w]  # the others follow live_root
    colors = tuple(
        dataclasses.replace(c, workers=tuple(_expand(w, c.name, s.where("workers"), problems) for w in own_workers))
        for c in colors
    )
    program, sock = raw["program"], raw["socket"]
    if program and colors[0].program == colors[1].program:
        problems.append(f"{s.where('program')}: both colors map to program {colors[0].program!r}; use %(color)s")
    if sock and colors[0].socket == colors[1].socket:
        problems.append(f"{s.where('socket')}: both colors map to socket {colors[0].socket!r}; use %(color)s")
    mode = s.text("switch", "socket")
    if mode not in SWITCH_MODES:
        problems.append(f"{s.where('switch')}: {mode!r} is not one of {', '.join(SWITCH_MODES)}")
    public_url = s.text("public_url")
    if public_url and not _http_url(public_url):
        problems.append(f"{s.where('public_url')}: {public_url!r} is not an http:// URL")
    health = HealthCheck(
        path=s.text("health_path", "/health"),
        host=s.text("health_host", "localhost"),
        status=int(s.number("health_status", 200, int, 100)),
        body=s.text("health_body", ""),
        interval=s.number("health_interval", 0.5, float, 0.01),
        timeout=s.number("health_timeout", 2.0, float, 0.1),
        passes=int(s.number("health_passes", 3, int, 1)),
        deadline=s.number("health_deadline", 60.0, float, 0.1),
        https=s.flag("health_https", False),
    )
    if not health.path.startswith("/"):
        problems.append(f"{s.where('health_path')}: {health.path!r} must start with '/'")
    nginx = None
    if mode == "nginx":
        nginx = NginxSite(
            sites_dir=s.path("nginx_sites"),
            enabled_link=s.path("nginx_enabled"),
            test_cmd=s.argv("nginx_test", "nginx -t"),
            reload_cmd=s.argv("nginx_reload", "nginx -s reload"),
            pidfile=s.path("nginx_pidfile", "/run/nginx.pid"),
            verify_timeout=s.number("nginx_verify_timeout", 10.0, float, 0.1),
        )
    else:
        for key in ("nginx_sites", "nginx_enabled"):
            s.used.add(key)
    app = App(
        name=name,
        colors=colors,
        switch_mode=mode,
        live_socket=s.path("live_socket", "" if mode == "nginx" else None),
        live_static=s.path("live_static", ""),
        public_url=public_url,
        public_host=s.text("public_host", ""),
        color_header=s.text("color_header", "X-Bluegreen-Color"),
        health=health,
        state_dir=s.path("state_dir", DEFAULT_STATE_DIR),
        nginx_template=s.path("nginx_template", default_template()),
        listen=s.text("listen", "80"),
        # not "_": Debian's default site already answers "_" on port 80 (nginx: conflicting server name)
        server_name=s.text("server_name", "") or s.text("public_host", "") or "localhost",
        nginx=nginx,
        live_root=s.path("live_root", ""),
        deploy=_parse_deploy(s, colors),
        watch=Watch(
            seconds=s.number("watch", 60.0, float, 0),
            interval=s.number("watch_interval", 1.0, float, 0.05),
            failures=int(s.number("watch_failures", 3, int, 1)),
        ),
    )
    site = {
        "ssl_certificate": s.path("ssl_certificate", ""),
        "ssl_certificate_key": s.path("ssl_certificate_key", ""),
        "ssl_listen": s.text("ssl_listen", "443"),
        "media_root": s.path("media_root", "").rstrip("/"),
        "media_url": s.text("media_url", "/media/"),
        "client_max_body_size": s.text("client_max_body_size", "10m"),
        "maintenance_dir": s.path("maintenance_dir", DEFAULT_MAINTENANCE_DIR).rstrip("/") or "/",
        "maintenance_retry_after": int(s.number("maintenance_retry_after", 60, int, 1)),
    }
    if bool(site["ssl_certificate"]) != bool(site["ssl_certificate_key"]):
        problems.append(f"{s.where('ssl_certificate')}: ssl_certificate and ssl_certificate_key go together")
    if not re.match(r"^/([A-Za-z0-9_.-]+/)+$", site["media_url"]):
        problems.append(f"{s.where('media_url')}: {site['media_url']!r} must start and end with '/' (e.g. /media/)")
    if not re.match(r"^[0-9]+[kKmMgG]?$", site["client_max_body_size"]):
        problems.append(
            f"{s.where('client_max_body_size')}: {site['client_max_body_size']!r} is not an nginx size (10m, 512k, 0)"
        )
    for key in ("listen", "ssl_listen", "server_name"):
        if re.search(r"[;{}\n]", s.text(key, "")):
            problems.append(f"{s.where(key)}: must not contain ';', '{{' or '}}'")
    app = dataclasses.replace(app, **site)
    if app.live_static and not all(c.static_root for c in colors):
        problems.append(f"{s.where('live_static')}: needs static_root for every color")
    if app.live_root and not all(c.root for c in colors):
        problems.append(f"{s.where('live_root')}: needs root for every color")
    s.unknown_keys(APP_KEYS)
    return app


def _parse_deploy(s: _Section, colors: tuple[Color, ...]) -> Deploy | None:
    """The deploy settings; None when the app names no ``repo`` (switch and rollback still work)."""
    repo = s.path("repo", "")
    if not repo:
        for key in DEPLOY_KEYS:
            s.used.add(key)
        return None
    if not all(c.checkout for c in colors):
        s.problems.append(f"{s.where('repo')}: deploying needs checkout for every color")
    releases = s.path("releases", "") or release_home(colors)
    for problem in release_problems(colors, releases):
        s.problems.append(f"{s.where('root')}: {problem}")
    names = s.text("build", "").split()
    if names == ["django"] or (len(names) == 1 and names[0] in PRESETS):
        names = list(PRESETS[names[0]])
    known = builtin_steps()
    own = {
        key[len("step_") :]: s.text(key)
        for key in s.parser.options(s.name)
        if key.startswith("step_") and key != "step_timeout"
    }
    steps = []
    for name in names:
        if name in own:
            argv = s.argv(f"step_{name}", own[name])
            for word in argv:
                _check_keys(word, STEP_KEYS, s.where(f"step_{name}"), s.problems)
            # a step of one's own that takes a built-in's name keeps its conditions (deps: requirements changed)
            steps.append(dataclasses.replace(known[name], argv=argv) if name in known else BuildStep(name, argv))
        elif name in known:
            steps.append(known[name])
        else:
            s.problems.append(
                f"{s.where('build')}: unknown step {name!r}: define step_{name} or use one of "
                f"{', '.join(sorted(known))} (preset: {', '.join(PRESETS)})"
            )
    for name in own:
        if name not in names:
            s.problems.append(f"{s.where('step_' + name)}: step {name!r} is not listed in build")
    test_requirements = tuple(s.text("test_requirements", "").split())
    worker_ping, worker_quiesce = (s.argv(k, "") if s.text(k, "") else () for k in ("worker_ping", "worker_quiesce"))
    for key, argv in (("worker_ping", worker_ping), ("worker_quiesce", worker_quiesce)):
        for word in argv:
            _check_keys(word, WORKER_PING_KEYS, s.where(key), s.problems)
        if argv and not any(c.workers for c in colors):
            s.problems.append(f"{s.where(key)}: asks a color's own workers (workers = NAME_%(color)s): none set")
    contract = s.text("contract", "auto")
    if contract not in CONTRACT_MODES:
        s.problems.append(f"{s.where('contract')}: {contract!r}: expected one of {', '.join(CONTRACT_MODES)}")
    for name in test_requirements:
        if name.startswith("/") or ".." in name.split("/"):
            s.problems.append(f"{s.where('test_requirements')}: {name!r} must be a path inside the checkout")
    return Deploy(
        repo=repo,
        branch=s.text("branch", "main"),
        user=s.text("user", ""),
        steps=tuple(steps),
        step_timeout=s.number("step_timeout", 600.0, float, 1),
        backup_dir=s.path("backup_dir", ""),
        backup_keep=int(s.number("backup_keep", 10, int, 1)),
        verify_backup=s.flag("verify_backup", False),
        side_by_side=s.flag("side_by_side", True),
        contract=contract,
        drain_timeout=s.number("drain_timeout", 30.0, float, 0),
        workers=tuple(w for w in s.text("workers", "").split() if "%(color)s" not in w),
        worker_timeout=s.number("worker_timeout", 120.0, float, 1),
        worker_settle=s.number("worker_settle", 5.0, float, 0),
        worker_ping=worker_ping,
        worker_quiesce=worker_quiesce,
        webhooks=tuple(s.text("webhooks", "").split()),
        releases=releases,
        keep_releases=int(s.number("keep_releases", 5, int, 1)),
        test_requirements=test_requirements,
    )


def default_roots(colors: tuple[Color, ...]) -> list[str]:
    """Each color's root when none is configured: the folder of its own (its checkout or the nearest folder above
    it that the other color does not share) that a deploy re-points at each release."""
    roots = [c.checkout.rstrip("/") for c in colors]
    while len({os.path.dirname(r) for r in roots}) > 1 and all(r.count("/") > 1 for r in roots):
        roots = [os.path.dirname(r) for r in roots]
    return roots


def release_home(colors: tuple[Color, ...]) -> str:
    """The default releases folder: beside the colors' roots (``/srv/APP/releases`` for ``/srv/APP/blue``)."""
    parents = {os.path.dirname(c.root.rstrip("/")) for c in colors if c.root}
    return os.path.join(parents.pop(), "releases") if len(parents) == 1 else ""


def release_problems(colors: tuple[Color, ...], releases: str) -> list[str]:
    """What keeps a color from being a slot that points at a release (one problem per line, all at once).

    A deploy builds into ``releases/<id>/`` and re-points the color's root at it, so the root must be its own
    folder (a link the switch re-points) holding the checkout, and the releases folder must lie outside both.
    """
    problems = []
    if not all(c.root for c in colors):
        return ["deploying needs root for every color (a deploy builds a release and points the color's root at it)"]
    if len({os.path.dirname(c.root.rstrip("/")) for c in colors}) != 1:
        problems.append("the colors' roots must be in one folder (where the releases folder goes by default)")
    for c in colors:
        if c.checkout and not (c.checkout + "/").startswith(c.root.rstrip("/") + "/"):
            problems.append(f"{c.name}: checkout {c.checkout} must be inside its root {c.root}")
        if releases and (releases + "/").startswith(c.root.rstrip("/") + "/"):
            problems.append(f"{c.name}: releases {releases} must not be inside the root {c.root}")
    return problems


def parse(text: str, path: str = "<string>") -> Config:
    """Parse config text; raise ConfigError listing every problem found."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), strict=True)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError(path, [str(exc).replace("\n", " ")]) from None
    problems: list[str] = []
    apps: dict[str, App] = {}
    for section in parser.sections():
        if section == "bluegreen":
            _Section(parser, section, problems).unknown_keys(GLOBAL_KEYS)
        elif section.startswith("app:"):
            app = _parse_app(parser, section, problems)
            if app is not None:
                apps[app.name] = app
        else:
            problems.append(f"[{section}]: unknown section (expected [bluegreen] or [app:NAME])")
    if not apps and not problems:
        problems.append("no [app:NAME] section")
    programs: dict[str, str] = {}
    for app in apps.values():
        for c in app.colors:
            other = programs.setdefault(c.program, app.name)
            if other != app.name:
                problems.append(f"[app:{app.name}] program: {c.program!r} is already used by app {other!r}")
    if problems:
        raise ConfigError(path, problems)
    return Config(path=path, apps=apps)


def load(path: str) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text: {exc}"]) from None
    return parse(text, path)
