"""The ``bluegreen`` console script: ``check``, ``nginx-site`` and ``listener``."""

from __future__ import annotations

import argparse
import stat
import sys

from supervisor_bluegreen.ctl import supervisordconf
from supervisor_bluegreen.shared.backuplist import backup_dir_of
from supervisor_bluegreen.shared.config import DEFAULT_CONFIG, SUPERVISORD_CONFS, Config, ConfigError, load
from supervisor_bluegreen.shared.store import private_dir_problem


def trust_warnings(config: Config, supervisord_conf: str = "") -> list[str]:
    """What a valid config (and supervisord's own) still leaves open to the app user or to the network."""
    found = []
    for app in config.apps.values():
        folders = [("state_dir", app.state_dir)]
        if app.deploy is not None:
            if not app.deploy.user:
                found.append(
                    f"{app.name}: user is not set: build steps, git and backups run as the listener's user "
                    "(root, usually), so pushed code runs as root; set user = <the app's user>"
                )
            folders.append(("backup_dir", backup_dir_of(app)))
        for key, folder in folders:
            problem = private_dir_problem(folder)
            if problem:
                found.append(f"{app.name}: {key} {folder} is not private: {problem}")
    if supervisord_conf:
        found.extend(supervisord_warnings(supervisord_conf))
    return found


def supervisord_warnings(path: str) -> list[str]:
    """An HTTP server of supervisord without a password lets anyone who reaches it deploy any branch."""
    try:
        conf = supervisordconf.read(path)
        return _open_servers(conf)
    except supervisordconf.SupervisordConfError as exc:
        return [f"{exc.path}: cannot read supervisord's config: {exc.why}"]


def _open_servers(conf: supervisordconf.SupervisordConf) -> list[str]:
    found = []
    for section in conf.sections():
        if section not in ("inet_http_server", "unix_http_server"):
            continue
        where = conf.file_of(section)
        auth = conf.has(section, "username") and conf.has(section, "password")
        if section == "inet_http_server" and not auth:
            port = conf.get(section, "port", "?")
            found.append(
                f"{where}: [inet_http_server] port = {port} has no username and password: whoever reaches it can "
                "stop programs and run any branch's deploy (and its migrations); set both, or remove it"
            )
        if section == "unix_http_server" and not auth:
            try:
                mode = int(conf.get(section, "chmod", "0700") or "0700", 8)
            except ValueError:
                continue
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(
                    f"{where}: [unix_http_server] chmod = {mode:04o} without username and password: every "
                    f"{'user' if mode & stat.S_IWOTH else 'member of its group'} can control supervisord and deploy"
                )
    return found


def check(path: str, supervisord_conf: str = "") -> int:
    """Validate a config file the way supervisord will; print every problem with file and key.

    Warnings (exit status still 0): build steps that would run as root, state or backups in a folder
    the app user could write, supervisord HTTP servers without a password (``--supervisord-conf``).
    """
    try:
        config = load(path)
    except ConfigError as exc:
        print(f"{exc.path}: config is broken:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for app in config.apps.values():
        colors = ", ".join(f"{c.name}={c.program}" for c in app.colors)
        print(f"{app.name}: {colors}; {app.switch_mode} switch; health {app.health.path} on each color's socket")
    for warning in trust_warnings(config, supervisord_conf):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK")
    return 0


def nginx_site(path: str, app_name: str, color: str) -> int:
    """Print the nginx site of an app (socket mode) or of one color (nginx mode)."""
    from supervisor_bluegreen.host import nginx  # jinja2: only this command needs it

    try:
        app = load(path).app(app_name)
        print(nginx.render_site(app, app.color(color) if color else None), end="")
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from supervisor_bluegreen import __version__
    from supervisor_bluegreen.ctl.example_files import EXAMPLES

    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["push"]:  # exact words of its own (a sudo rule allows it to a git pusher): see push.py
        from supervisor_bluegreen.ctl import push

        return push.main(words[1:])
    parser = argparse.ArgumentParser(prog="bluegreen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "example",
        help="print a shipped file to copy (include, ini, programs, hook, ...) with this bluegreen's real path",
        description="\n".join(f"{name}: {what}" for name, (_, what) in EXAMPLES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=list(EXAMPLES))
    p.add_argument("--path", action="store_true", help="print where the installed file is instead")
    p = sub.add_parser("check", help="validate a bluegreen config file (and warn about what it leaves open)")
    p.add_argument("config")
    p.add_argument(
        "--supervisord-conf", default="", metavar="FILE", help="also warn about supervisord's HTTP servers in FILE"
    )
    p = sub.add_parser("nginx-site", help="render the nginx site of an app (or of one color)")
    p.add_argument("config")
    p.add_argument("app", nargs="?", default="")
    p.add_argument("color", nargs="?", default="")
    p = sub.add_parser("restore", help="restore a backup into the app's live database (fresh backup first)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("app")
    p.add_argument("backup", help="a file name listed by `supervisorctl bluegreen backups APP`")
    p.add_argument("--yes", action="store_true", help="do it (without: say what would happen)")
    sub.add_parser(
        "push",
        help="[-c SUPERVISORD_CONF] APP COMMIT [--wait]: deploy one commit of one app and follow it (the git "
        "hook's narrow path, allowed to the pusher by a sudo rule)",
    )
    p = sub.add_parser(
        "init",
        help="set up an existing Django app: user, both colors built, configs, nginx site, repo and hook",
        description="Set up an existing, unmodified Django app for blue/green deploys. Idempotent: run it "
        "again and it changes nothing; --dry-run shows every file and command first.",
    )
    p.add_argument("app", help="the app's name (programs APP_blue/APP_green, /srv/APP)")
    p.add_argument("repo", help="the app's git repository: a URL or a path")
    p.add_argument("--user", help="the app's user (default: APP; created when missing)")
    p.add_argument("--root", help="where the app lives (default: /srv/APP)")
    p.add_argument("--branch", help="the branch that deploys (default: the repository's HEAD)")
    p.add_argument("--server-name", help="nginx server_name and health Host (default: localhost)")
    p.add_argument("--listen", help="nginx listen (default: 80)")
    p.add_argument(
        "--worker", action="append", metavar="COMMAND", help="a worker program, e.g. 'celery -A proj worker'"
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="into the app's environment file (repeatable; a key the file lacks is added on a later run too)",
    )
    p.add_argument("--replace-env", action="store_true", help="with --env: change a key the file has another value of")
    p.add_argument("--pusher", help="the user who pushes (default: the app's user); gets sudo for `bluegreen push APP`")
    p.add_argument("--python", help="the python of the colors' virtualenvs")
    p.add_argument("--supervisord-conf", help="supervisord's main config (default: Debian's)")
    p.add_argument("--config", help=f"the bluegreen config to write (default: {DEFAULT_CONFIG})")
    p.add_argument("--build", help="build steps or preset (default: django)")
    p.add_argument("--ssl-certificate", metavar="FILE", help="HTTPS: certificate (port --listen then redirects)")
    p.add_argument("--ssl-certificate-key", metavar="FILE", help="HTTPS: its key")
    p.add_argument("--dry-run", action="store_true", help="print every file and command; change nothing")
    p.add_argument("--show-files", action="store_true", help="with --dry-run: print every file's content too")
    p = sub.add_parser("doctor", help="check the running system end to end; print each problem with its fix")
    p.add_argument("app", nargs="?", default="")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument(
        "--supervisord-conf",
        default="",
        metavar="FILE",
        help=f"default: {SUPERVISORD_CONFS[0]}, then {SUPERVISORD_CONFS[1]}",
    )
    p = sub.add_parser("listener", help="the event listener; run by supervisord only")
    p.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    if args.command == "example":
        from supervisor_bluegreen.ctl import example_files

        return example_files.main(args.name, args.path)
    if args.command == "doctor":
        from supervisor_bluegreen.ctl import doctor

        return doctor.main(args.config, args.app, args.supervisord_conf)
    if args.command == "init":
        from supervisor_bluegreen.ctl import init

        return init.main(init.options_from_args(args), args.dry_run, args.show_files)
    if args.command == "check":
        return check(args.config, args.supervisord_conf)
    if args.command == "nginx-site":
        return nginx_site(args.config, args.app, args.color)
    if args.command == "restore":
        from supervisor_bluegreen.ctl import restore

        return restore.main(args.config, args.app, args.backup, args.yes)
    from supervisor_bluegreen.listener import loop as listener  # the listener's whole stack: only this command needs it

    return listener.main(args.config)


if __name__ == "__main__":
    sys.exit(main())
