"""The app's environment file: ``KEY='value'`` lines that /bin/sh sources for the programs and the build reads.

``bluegreen init`` writes it (0640 root:<app group>); the supervisord programs it writes start with
``/bin/sh -c 'set -a && . FILE && exec gunicorn ...'`` and every build step gets the same variables, so
settings and secrets are written once. The build must read what sh reads, so the reader is strict: it accepts
only what means the same to both, and refuses the rest (naming the file, line and key, never the value):

- blank lines and ``# comments`` on their own line;
- ``KEY=value`` or ``export KEY=value``, one per line, where value is
  - single-quoted: ``'...'`` (anything but ``'``, newlines too), pieces joined by ``\\'`` or ``"'"`` for a
    quote inside (``'it'\\''s'``, ``'it'"'"'s'``: what ``shlex.quote`` writes),
  - unquoted, made only of ``A-Z a-z 0-9 _ @ % + = : , . / -`` (empty too),
  - double-quoted with no ``$``, backtick, backslash or newline inside.

Refused, for instance: ``$HOME`` or ``$(...)`` (sh expands them), backticks, backslashes, ``a #b`` or
``a#b`` unquoted, a comment after a value, a space outside quotes, CRLF line ends. Standard library only.
settings and secrets are written once. Values are shell-quoted (``shlex.quote``), which both read alike.
Standard library only (and the config's rule for a variable name).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Iterator

from supervisor_bluegreen.shared.config import ENV_NAME_RE
from supervisor_bluegreen.shared.errors import BluegreenError

SINGLE = r"'[^'\x00]*'"
LINE = re.compile(
    rf"""[ \t]*
    (?: \#[^\n]*
      | (?:export[ \t]+)? (?P<key>[A-Za-z_][A-Za-z0-9_]*) =
        (?: (?P<single>{SINGLE}(?:(?:\\'|"'"){SINGLE})*)
          | "(?P<double>[^"$`\\\n\x00]*)"
          | (?P<plain>[A-Za-z0-9_@%+=:,./-]*)
        ) [ \t]*
    )?
    (?:\n|\Z)""",
    re.VERBOSE,
)
KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


class EnvFileError(BluegreenError):
    """A file that cannot be read, or a line that /bin/sh and this reader would read differently."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.fix = fix


def unquote_single(word: str) -> str:
    """``'a'\\''b'`` or ``'a'"'"'b'`` -> ``a'b``: the value of a chain LINE matched as single-quoted."""
    pieces = re.finditer(r"'([^']*)'|\\'|\"'\"", word)  # '...' pieces, and a quote between them
    return "".join("'" if piece.group(1) is None else piece.group(1) for piece in pieces)


def why(rest: str) -> str:
    """What in the text after ``KEY=`` sh would read otherwise (single-quoted pieces aside)."""
    outside = re.sub(SINGLE, "''", rest)
    for found, reason in (
        ("\x00", "a NUL byte"),
        ("\r", "a carriage return (CRLF line ends?)"),
        ("`", "a backtick: sh runs a command there"),
        ("$", "a $: sh expands it (variables, $(...))"),
        ("\\", "a backslash: sh reads it as an escape"),
        ("#", "a #: sh may read the rest as a comment"),
    ):
        if found in outside:
            return reason
    if outside.count("'") % 2 or outside.count('"') % 2:
        return "a quote that is not closed"
    if " " in outside or "\t" in outside:
        return "a space outside quotes: sh reads the rest as a command"
    return "characters sh treats specially outside quotes"


def refuse(path: str, number: int, line: str) -> EnvFileError:
    found = KEY.match(line)
    if not found:
        how = "write it as KEY='value' (single quotes; a ' inside as '\\'')"
        return EnvFileError(
            f"{path} line {number}: not KEY=value, a # comment or a blank line", f"{path} line {number}: {how}"
        )
    key = found.group(1)
    how = f"write it as {key}='value' (single quotes; a ' inside as '\\'')"
    return EnvFileError(
        f"{path} line {number}: {key}: {why(found.group(2))}, so the programs (sh) and the build would read "
        f"different values (value not shown); {how}",
        f"{path} line {number}: {how}",
    )


def _matches(text: str, path: str) -> Iterator[re.Match[str]]:
    """Each line of ``text`` as LINE matches it; EnvFileError at the first one sh could read otherwise."""
    pos, number = 0, 1
    while pos < len(text):
        found = LINE.match(text, pos)
        if found is None or found.end() == pos:
            raise refuse(path, number, text[pos:].split("\n", 1)[0])
        yield found
        number += text.count("\n", pos, found.end())
        pos = found.end()


def parse(text: str, path: str = "<env>") -> dict[str, str]:
    """The variables ``/bin/sh -c 'set -a; . FILE'`` sets from ``text``; EnvFileError where sh could differ."""
    env: dict[str, str] = {}
    for found in _matches(text, path):
        key = found.group("key")
        if key is None:
            continue
        if found.group("single") is not None:
            env[key] = unquote_single(found.group("single"))
        elif found.group("double") is not None:
            env[key] = found.group("double")
        else:
            env[key] = found.group("plain")
    return env


def assignments(text: str, path: str = "<env>") -> list[tuple[str, int, int]]:
    """(key, start, end) of every assignment line of ``text``, as parse() reads them (EnvFileError likewise)."""
    return [(m.group("key"), m.start(), m.end()) for m in _matches(text, path) if m.group("key") is not None]


def merge(text: str, wanted: dict[str, str], replace: bool = False, path: str = "<env>") -> tuple[str, list[str]]:
    """``text`` with each ``wanted`` key it lacks added; a key it has with another value is changed only when
    ``replace`` (every assignment of it, since sh keeps the last one). The new text, and what was done, said
    per key ("added KEY", "changed KEY", "kept KEY: ..."); values are never said."""
    current = parse(text, path)
    said: list[str] = []
    spans = assignments(text, path)
    changed: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in current:
            said.append(f"added {key}")
        elif current[key] == value:
            continue
        elif replace:
            changed[key] = value
            said.append(f"changed {key}")
        else:
            said.append(f"kept {key}: the file has another value (--replace-env changes it)")
    out, pos = [], 0
    for key, start, end in spans:
        if key in changed:
            out.append(text[pos:start] + render({key: changed[key]}))
            pos = end
    out.append(text[pos:])
    merged = "".join(out)
    added = {key: value for key, value in wanted.items() if key not in current}
    if added:
        merged = (merged if merged.endswith("\n") or not merged else merged + "\n") + render(added)
    return merged, said


def render(env: dict[str, str]) -> str:
    """``KEY=value`` lines, each value as ``shlex.quote`` writes it (which parse() reads back)."""
    for key in env:
        if not ENV_NAME_RE.match(key):
            raise EnvFileError(f"{key!r} is not a variable name")
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
