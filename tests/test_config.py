"""Tests for supervisor_bluegreen.shared.config, and for every example config shipped in conf/.

The shipped examples are checked by the programs that will really read them: conf/*.ini by
config.load, conf/supervisor/*.conf by supervisor's own option parser, and the nginx site
template rendered for each example app by a real ``nginx -t``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import shlex
from pathlib import Path

import pytest
from conftest import nginx_test, shop_config
from supervisor import events
from supervisor.options import ClientOptions, EventListenerPoolConfig, ServerOptions

from supervisor_bluegreen.host import nginx
from supervisor_bluegreen.shared import config
from supervisor_bluegreen.shared.config import DEFAULT_STATE_DIR, ConfigError, HealthCheck

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
APP_INIS = sorted(glob.glob(str(CONF / "*.ini")))
SUPERVISOR_CONFS = sorted(glob.glob(str(CONF / "supervisor" / "*.conf")))
NGINX = "/usr/sbin/nginx"

MINIMAL = """\
[app:shop]
program = shop_%(color)s
socket = /srv/shop/run/shop.%(color)s.sock
live_socket = /srv/shop/run/shop.live.sock
public_url = http://127.0.0.1/health
"""


def app_section(name: str, **options: str) -> str:
    """An [app:NAME] section that is valid unless ``options`` override or break it."""
    values = {
        "program": f"{name}_%(color)s",
        "socket": f"/srv/{name}/%(color)s.sock",
        "live_socket": f"/srv/{name}/live.sock",
        "public_url": "http://127.0.0.1/health",
    }
    values.update(options)
    body = "".join(f"{k} = {v}\n" for k, v in values.items() if v is not None)
    return f"[app:{name}]\n{body}\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.parse(text, "/etc/supervisor/bluegreen.ini")
    assert str(err.value).startswith("/etc/supervisor/bluegreen.ini: ")
    return err.value.problems


# --------------------------------------------------------------------------------------------
# a valid config and its defaults


def test_minimal_config_and_defaults() -> None:
    cfg = config.parse(MINIMAL, "/etc/bg.ini")
    assert cfg.path == "/etc/bg.ini"
    app = cfg.app("shop")
    assert app.color_names == ("blue", "green")
    assert app.color("blue").program == "shop_blue"
    assert app.color("green").program == "shop_green"
    assert app.color("green").socket == "/srv/shop/run/shop.green.sock"
    assert app.color("blue").checkout == "" and app.color("blue").static_root == ""
    assert app.switch_mode == "socket"
    assert app.live_socket == "/srv/shop/run/shop.live.sock"
    assert app.live_static == ""
    assert app.health == HealthCheck()
    assert app.health == HealthCheck(
        path="/health", host="localhost", status=200, body="", interval=0.5, timeout=2.0, passes=3, deadline=60.0
    )
    assert app.color_header == "X-Bluegreen-Color"
    assert app.state_dir == DEFAULT_STATE_DIR
    assert app.nginx_template == config.default_template()
    assert os.path.isfile(app.nginx_template)
    assert (app.listen, app.server_name) == ("80", "localhost")  # not "_": Debian's default site has it
    assert app.nginx is None
    assert app.other("blue").name == "green"


def test_color_expansion_of_every_per_color_path() -> None:
    text = (
        MINIMAL + "colors = left right\ncheckout = /srv/shop/%(color)s/src\nstatic_root = /srv/shop/%(color)s/static\n"
    )
    app = config.parse(text).app()
    assert app.color_names == ("left", "right")
    right = app.color("right")
    assert right == config.Color(
        name="right",
        program="shop_right",
        socket="/srv/shop/run/shop.right.sock",
        checkout="/srv/shop/right/src",
        static_root="/srv/shop/right/static",
        root="/srv/shop/right",  # none configured: the folder of its own above the checkout
    )


def test_bluegreen_section_gives_defaults_to_every_app() -> None:
    text = "[bluegreen]\nstate_dir = /var/lib/bg\nhealth_passes = 5\n\n" + app_section("a") + app_section("b")
    cfg = config.parse(text)
    assert {a.state_dir for a in cfg.apps.values()} == {"/var/lib/bg"}
    assert {a.health.passes for a in cfg.apps.values()} == {5}


def test_nginx_mode_defaults() -> None:
    text = app_section(
        "shop", switch="nginx", live_socket=None, nginx_sites="/etc/nginx/sa", nginx_enabled="/etc/nginx/se/shop.conf"
    )
    app = config.parse(text).app()
    assert app.switch_mode == "nginx"
    assert app.live_socket == ""
    assert app.nginx == config.NginxSite(
        sites_dir="/etc/nginx/sa",
        enabled_link="/etc/nginx/se/shop.conf",
        test_cmd=("nginx", "-t"),
        reload_cmd=("nginx", "-s", "reload"),
        pidfile="/run/nginx.pid",
        verify_timeout=10.0,
    )


# --------------------------------------------------------------------------------------------
# Config.app


def test_app_without_name_is_the_only_one() -> None:
    cfg = config.parse(app_section("solo"))
    assert cfg.app("").name == "solo"
    assert cfg.app().name == "solo"


def test_app_without_name_when_several_lists_them() -> None:
    cfg = config.parse(app_section("b") + app_section("a"))
    with pytest.raises(KeyError) as err:
        cfg.app("")
    assert err.value.args[0] == "no app named and 2 are configured: a, b"


def test_unknown_app_lists_configured_apps() -> None:
    cfg = config.parse(app_section("b") + app_section("a"))
    with pytest.raises(KeyError) as err:
        cfg.app("shop")
    assert err.value.args[0] == "unknown app 'shop' (configured: a, b)"


# --------------------------------------------------------------------------------------------
# broken configs: every problem at once, each naming section and key


def test_every_problem_in_a_broken_file_is_reported_at_once() -> None:
    """One load reports every broken key of every section, each as '[section] key: reason'."""
    text = (
        "[bluegreen]\npublic_url = http://127.0.0.1/health\n\n"
        "[app:nothing]\nlive_socket = /srv/nothing/live.sock\n\n"
        + app_section(
            "rel",
            socket="run/rel.%(color)s.sock",
            health_passes="many",
            health_interval="-1",
            frobnicate="yes",
            switch="dns",
        )
        + app_section("same", program="same")
        + app_section("badcolor", colors="blue gr@en")
        + app_section("three", colors="red green blue")
        + app_section("badkey", program="badkey_%(colour)s")
        + app_section("ngx", switch="nginx", live_socket=None)
        + app_section("dup", program="rel_%(color)s")
        + "[weird]\nx = 1\n"
    )
    problems = problems_of(text)
    expected = [
        "[app:nothing] program: required but missing",
        "[app:nothing] socket: required but missing",
        "[app:rel] socket: 'run/rel.%(color)s.sock' must be an absolute path",
        "[app:rel] health_passes: 'many' is not a whole number",
        "[app:rel] health_interval: '-1' must be at least 0.01",
        "[app:rel] frobnicate: unknown option",
        "[app:rel] switch: 'dns' is not one of socket, nginx",
        "[app:same] program: both colors map to program 'same'; use %(color)s",
        "[app:badcolor] colors: color 'gr@en' must be letters, digits, '_', '.', '-'",
        "[app:three] colors: exactly two distinct colors are needed, got ['red', 'green', 'blue']",
        "[app:badkey] program: cannot expand 'badkey_%(colour)s': only %(color)s is known",
        "[app:ngx] nginx_sites: required but missing",
        "[app:ngx] nginx_enabled: required but missing",
        "[app:dup] program: 'rel_blue' is already used by app 'rel'",
        "[app:dup] program: 'rel_green' is already used by app 'rel'",
        "[weird]: unknown section (expected [bluegreen] or [app:NAME])",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), f"{fragment!r} not in {problems}"
    # nothing else is blamed: every problem is about one of the broken sections and keys above
    where = re.compile(r"^(\[[^\]]+\](?: \w+)?):")
    assert {where.match(p).group(1) for p in problems} == {where.match(e).group(1) for e in expected}


def test_unknown_option_in_bluegreen_section_is_reported() -> None:
    """A typo in the defaults section (health_pases) would otherwise be silently ignored."""
    problems = problems_of("[bluegreen]\nhealth_pases = 5\n\n" + app_section("a"))
    assert problems == ["[bluegreen] health_pases: unknown option"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"program": None}, "[app:a] program: required but missing"),
        ({"socket": None}, "[app:a] socket: required but missing"),
        ({"live_socket": None}, "[app:a] live_socket: required but missing"),
        ({"socket": "a.%(color)s.sock"}, "[app:a] socket: 'a.%(color)s.sock' must be an absolute path"),
        ({"checkout": "src/%(color)s"}, "[app:a] checkout: 'src/%(color)s' must be an absolute path"),
        ({"state_dir": "state"}, "[app:a] state_dir: 'state' must be an absolute path"),
        (
            {"media_root": "/srv/a/media;\n    error_log /etc/cron.d/x"},
            "[app:a] media_root: '/srv/a/media;\\nerror_log /etc/cron.d/x' must not contain whitespace, quotes",
        ),
        ({"static_root": '/srv/a/s"%(color)s'}, "[app:a] static_root: '/srv/a/s\"%(color)s' must not contain"),
        ({"health_timeout": "soon"}, "[app:a] health_timeout: 'soon' is not a number"),
        ({"health_status": "2OO"}, "[app:a] health_status: '2OO' is not a whole number"),
        ({"health_passes": "2.5"}, "[app:a] health_passes: '2.5' is not a whole number"),
        ({"health_deadline": "-5"}, "[app:a] health_deadline: '-5' must be at least 0.1"),
        ({"health_passes": "0"}, "[app:a] health_passes: '0' must be at least 1"),
        ({"health_interval": "nan"}, "[app:a] health_interval: 'nan' must be at least 0.01"),
        ({"health_path": "health"}, "[app:a] health_path: 'health' must start with '/'"),
        ({"colour": "blue"}, "[app:a] colour: unknown option"),
        ({"socket": "/run/a.sock"}, "[app:a] socket: both colors map to socket '/run/a.sock'; use %(color)s"),
        ({"switch": "symlink"}, "[app:a] switch: 'symlink' is not one of socket, nginx"),
        ({"colors": "blue"}, "[app:a] colors: exactly two distinct colors are needed, got ['blue']"),
        ({"colors": "blue blue"}, "[app:a] colors: exactly two distinct colors are needed, got ['blue', 'blue']"),
        ({"colors": "blue gr/een"}, "[app:a] colors: color 'gr/een' must be letters"),
        ({"program": "a_%(name)s"}, "[app:a] program: cannot expand 'a_%(name)s': only %(color)s is known"),
        ({"program": "a_100%"}, "[app:a] program: cannot expand 'a_100%'"),
        ({"public_url": "127.0.0.1:80/health"}, "[app:a] public_url: '127.0.0.1:80/health' is not an http:// URL"),
        ({"live_static": "/srv/a/static"}, "[app:a] live_static: needs static_root for every color"),
        ({"switch": "nginx", "nginx_sites": "/etc/nginx/sa"}, "[app:a] nginx_enabled: required but missing"),
        ({"switch": "nginx", "nginx_enabled": "/etc/nginx/se/a"}, "[app:a] nginx_sites: required but missing"),
        (
            {"switch": "nginx", "nginx_sites": "sa", "nginx_enabled": "/e/a", "nginx_test": "'nginx -t"},
            "[app:a] nginx_sites: 'sa' must be an absolute path",
        ),
        (
            {"switch": "nginx", "nginx_sites": "/sa", "nginx_enabled": "/e/a", "nginx_test": "'nginx -t"},
            '[app:a] nginx_test: cannot split "\'nginx -t"',
        ),
    ],
)
def test_single_problem_names_section_and_key(options: dict[str, str | None], message: str) -> None:
    problems = problems_of(app_section("a", **options))
    assert any(p.startswith(message) for p in problems), problems


def test_bad_app_name() -> None:
    problems = problems_of(app_section("shop/1"))
    assert problems == ["[app:shop/1]: app name 'shop/1' must be letters, digits, '_', '.', '-'"]


def test_no_app_section() -> None:
    assert problems_of("[bluegreen]\nstate_dir = /srv/state\n") == ["no [app:NAME] section"]


def test_duplicate_program_across_two_apps() -> None:
    problems = problems_of(app_section("one", program="web_%(color)s") + app_section("two", program="web_%(color)s"))
    assert problems == [
        "[app:two] program: 'web_blue' is already used by app 'one'",
        "[app:two] program: 'web_green' is already used by app 'one'",
    ]


def test_load_of_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert err.value.path == str(path)
    assert err.value.problems == ["cannot read: No such file or directory"]
    assert str(err.value) == f"{path}: cannot read: No such file or directory"


def test_load_reports_the_file_path_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "bg.ini"
    path.write_text(app_section("a", health_passes="x"))
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert str(err.value) == f"{path}: [app:a] health_passes: 'x' is not a whole number"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[app:a]\nprogram = a_%(color)s\nthis line has no equals sign\n", "'this line has no equals sign"),
        ("program = a\n[app:a]\n", "no section headers"),
        (
            "[app:a]\nprogram = a_%(color)s\nprogram = b_%(color)s\n",
            "option 'program' in section 'app:a' already exists",
        ),
        ("[app:a]\nprogram = a\n[app:a]\n", "section 'app:a' already exists"),
    ],
)
def test_ini_syntax_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bg.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert len(err.value.problems) == 1
    assert fragment in err.value.problems[0]
    assert str(path) in str(err.value)


def test_bare_percent_s_is_not_a_color_expansion() -> None:
    problems = problems_of(app_section("a", program="a_%s"))
    assert any(p.startswith("[app:a] program: cannot expand 'a_%s'") for p in problems), problems


def test_infinite_timeout_is_refused() -> None:
    problems = problems_of(app_section("a", health_timeout="inf"))
    assert any(p.startswith("[app:a] health_timeout: 'inf'") for p in problems), problems


# --------------------------------------------------------------------------------------------
# the shipped example configs


@pytest.mark.parametrize("path", APP_INIS, ids=os.path.basename)
def test_shipped_app_config_loads(path: str) -> None:
    cfg = config.load(path)
    assert cfg.apps
    for app in cfg.apps.values():
        assert len(app.colors) == 2


def test_shipped_configs_exist() -> None:
    assert len(APP_INIS) >= 2
    assert len(SUPERVISOR_CONFS) >= 2


def relocate(conf: str, root: Path) -> str:
    """The supervisor conf with its host-specific bits moved under ``root``.

    supervisor checks at parse time that ``user`` exists and that log directories exist;
    the shipped example names the deployment's user and paths, so those (and only those)
    are moved to this machine. Every other setting is parsed as shipped.
    """
    text = Path(conf).read_text()
    for prefix in ("/srv/abiapp", "/var/log/supervisor"):
        (root / prefix.lstrip("/") / "log").mkdir(parents=True, exist_ok=True)
        text = text.replace(prefix, str(root / prefix.lstrip("/")))
    return text.replace("user = abiapp", f"user = {pwd.getpwuid(os.geteuid()).pw_name}")


def supervisord_options(tmp_path: Path, confs: list[str]) -> ServerOptions:
    """supervisord's own parse of a main config that [include]s ``confs``."""
    incdir = tmp_path / "conf.d"
    incdir.mkdir(exist_ok=True)
    for conf in confs:
        (incdir / os.path.basename(conf)).write_text(relocate(conf, tmp_path / "root"))
    main = tmp_path / "supervisord.conf"
    main.write_text(
        "[supervisord]\n"
        f"logfile = {tmp_path}/supervisord.log\n"
        f"pidfile = {tmp_path}/supervisord.pid\n"
        f"childlogdir = {tmp_path}\n\n"
        "[include]\n"
        f"files = {incdir}/*.conf\n"
    )
    opts = ServerOptions()
    opts.configfile = str(main)
    opts.process_config(do_usage=False)
    assert not opts.parse_warnings
    return opts


@pytest.mark.parametrize("conf", SUPERVISOR_CONFS, ids=os.path.basename)
def test_shipped_supervisor_conf_parses_with_deliberate_settings(tmp_path: Path, conf: str) -> None:
    opts = supervisord_options(tmp_path, [conf])
    section = opts.configroot.supervisord
    groups = opts.process_group_configs
    assert groups or section.rpcinterface_factories, f"{conf} defines nothing supervisord uses"
    for group in groups:
        if isinstance(group, EventListenerPoolConfig):
            assert group.buffer_size >= 1024, group.name
            assert events.EventTypes.PROCESS_STATE in group.pool_events
            assert events.EventTypes.REMOTE_COMMUNICATION in group.pool_events
            for proc in group.process_configs:
                assert "listener" in proc.command
        else:
            for proc in group.process_configs:
                assert proc.stopwaitsecs >= 40, proc.name
                # Celery prefork children reset SIGTERM: never stop it as a group (a SIGKILL may take the group)
                assert proc.stopasgroup is ("celery" not in proc.name), proc.name
                assert proc.killasgroup is True, proc.name
                assert proc.autorestart, proc.name


def test_shipped_supervisor_confs_together_match_the_app_config(tmp_path: Path) -> None:
    """Programs, sockets and the config path agree between conf/supervisor/*.conf and conf/bluegreen.ini."""
    opts = supervisord_options(tmp_path, SUPERVISOR_CONFS)
    procs = {p.name: p for g in opts.process_group_configs for p in g.process_configs}
    pools = [g for g in opts.process_group_configs if isinstance(g, EventListenerPoolConfig)]
    assert [p.name for p in pools] == ["bluegreen"]
    rpc = {name: (factory, extras) for name, factory, extras in opts.configroot.supervisord.rpcinterface_factories}
    assert "bluegreen" in rpc
    factory, extras = rpc["bluegreen"]
    assert factory.__name__ == "make_bluegreen_rpcinterface"
    assert extras["listener"] == "bluegreen"
    listener_argv = shlex.split(pools[0].process_configs[0].command)
    assert listener_argv[1:3] == ["listener", "--config"]
    assert listener_argv[3] == extras["config"]

    app = config.load(str(CONF / "bluegreen.ini")).app()
    root = str(tmp_path / "root" / "srv" / "abiapp")
    for color in app.colors:
        proc = procs[color.program]
        assert proc.stopwaitsecs >= 40
        assert f"unix:{color.socket.replace('/srv/abiapp', root)}" in shlex.split(proc.command)
        assert proc.environment["BLUEGREEN_COLOR"] == color.name
        assert proc.environment["STATIC_ROOT"] == color.static_root.replace("/srv/abiapp", root)


def test_shipped_ctlplugin_section_loads_in_supervisorctl(tmp_path: Path) -> None:
    """supervisorctl reads only its main file: the [ctlplugin:bluegreen] section copied there resolves."""
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f"[supervisorctl]\nserverurl = unix://{tmp_path}/supervisor.sock\n\n"
        + (CONF / "supervisor" / "bluegreen.conf").read_text()
    )
    opts = ClientOptions()
    opts.configfile = str(main)
    opts.process_config(do_usage=False)
    plugins = {name: factory for name, factory, _extras in opts.plugin_factories}
    assert plugins["bluegreen"].__name__ == "make_bluegreen_controllerplugin"


def rendered_sites() -> list[tuple[str, str]]:
    """(id, site text) for every example app: the live site, or one site per color in nginx mode."""
    sites = []
    for path in APP_INIS:
        for app in config.load(path).apps.values():
            app = dataclasses.replace(app, nginx_template=str(CONF / "nginx" / "site.conf.j2"))
            colors = list(app.colors) if app.switch_mode == "nginx" else [None]
            for color in colors:
                label = f"{os.path.basename(path)}-{app.name}-{color.name if color else 'live'}"
                sites.append((label, nginx.render_site(app, color)))
    return sites


@pytest.mark.integration
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed")
@pytest.mark.parametrize(("label", "site"), rendered_sites(), ids=[s[0] for s in rendered_sites()])
def test_rendered_example_site_passes_nginx_t(tmp_path: Path, label: str, site: str) -> None:
    assert "{{" not in site and "{%" not in site
    proc = nginx_test(tmp_path, site)
    assert proc.returncode == 0, f"{label}:\n{site}\n{proc.stderr}"
    assert "test is successful" in proc.stderr


def test_package_template_is_the_shipped_one() -> None:
    assert Path(config.default_template()).read_text() == (CONF / "nginx" / "site.conf.j2").read_text()


@pytest.mark.parametrize("url", ["http://127.0.0.1:80800/health", "http:///health", "http://[::1:80/health"])
def test_a_public_url_that_cannot_be_reached_is_refused_when_loaded(url: str) -> None:
    problems = problems_of(app_section("a", public_url=url))
    assert f"[app:a] public_url: {url!r} is not an http:// URL" in problems


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bluegreen.ini"
    path.write_bytes(b"; caf\xe9\n[app:a]\n")
    with pytest.raises(config.ConfigError, match="not UTF-8 text"):
        config.load(str(path))


def test_contract_is_auto_or_manual(tmp_path: Path) -> None:
    def ini(mode: str) -> str:
        colors = f"root = {tmp_path}/%(color)s\ncheckout = {tmp_path}/%(color)s/src\n"
        return shop_config(tmp_path, repo=f"{tmp_path}/app.git", build="migrate", contract=mode) + colors

    assert config.parse(ini("manual"), "t.ini").app("shop").deploy.contract == "manual"
    with pytest.raises(config.ConfigError) as err:
        config.parse(ini("later"), "t.ini")
    assert err.value.problems == ["[app:shop] contract: 'later': expected one of auto, manual"]
