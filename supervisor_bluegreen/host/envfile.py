"""The app's environment file: ``KEY='value'`` lines that /bin/sh sources for the programs and the build reads.

``bluegreen init`` writes it (0640 root:<app group>); the supervisord programs it writes start with
``/bin/sh -c 'set -a && . FILE && exec gunicorn ...'`` and every build step gets the same variables, so
settings and secrets are written once. Values are shell-quoted (``shlex.quote``), which both read alike.
Standard library only.
"""

from __future__ import annotations

import os
import re
import shlex
import stat

from supervisor_bluegreen.shared.errors import BluegreenError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(BluegreenError):
    pass


def parse(text: str, path: str = "<env>") -> dict[str, str]:
    """``KEY=value`` per line (``export`` allowed, ``#`` comments, sh quoting); problems name lines, not values."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            raise EnvFileError(f"{path} line {number}: unbalanced quotes (value not shown)") from None
        if words[:1] == ["export"]:
            words = words[1:]
        if not words:
            continue
        key, sep, value = words[0].partition("=")
        if len(words) != 1 or not sep or not NAME.match(key):
            raise EnvFileError(f"{path} line {number}: not KEY=value (quote values with spaces)")
        env[key] = value
    return env


def render(env: dict[str, str]) -> str:
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())


def read(path: str) -> dict[str, str]:
    """The variables of ``path``: a regular file opened without following a symlink (root reads it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise EnvFileError(f"{path}: not a regular file")
        data = f.read(1 << 20)
    try:
        return parse(data.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise EnvFileError(f"{path}: not UTF-8 text") from None
