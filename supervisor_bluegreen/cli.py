"""The ``bluegreen`` console script: ``check``, ``nginx-site`` and ``listener``."""

from __future__ import annotations

import argparse
import sys

from . import listener, nginx
from .config import ConfigError, load


def check(path: str) -> int:
    """Validate a config file the way supervisord will; print every problem with file and key."""
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
    print(f"{path}: OK")
    return 0


def nginx_site(path: str, app_name: str, color: str) -> int:
    """Print the nginx site of an app (socket mode) or of one color (nginx mode)."""
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
    parser = argparse.ArgumentParser(prog="bluegreen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="validate a bluegreen config file")
    p.add_argument("config")
    p = sub.add_parser("nginx-site", help="render the nginx site of an app (or of one color)")
    p.add_argument("config")
    p.add_argument("app", nargs="?", default="")
    p.add_argument("color", nargs="?", default="")
    p = sub.add_parser("listener", help="the event listener; run by supervisord only")
    p.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.config)
    if args.command == "nginx-site":
        return nginx_site(args.config, args.app, args.color)
    return listener.main(args.config)


if __name__ == "__main__":
    sys.exit(main())
