"""Make text harmless to show: no terminal control sequences, nothing XML-RPC cannot carry.

Build output is whatever the app's tools print: pip's and pytest's colours (ESC sequences), a BEL, a
progress bar's carriage returns. Written raw into a job log it would drive the terminal of whoever reads
it, and XML 1.0 (what supervisorctl parses) has no place for most control characters: one ESC in a log
chunk made ``supervisorctl bluegreen log`` fail with "not well-formed (invalid token)" on that job for
good. So every control character (C0 but tab and newline, DEL, C1), and what XML cannot hold at all
(surrogates, U+FFFE, U+FFFF), is written as visible text: ``\\x1b``, ``\\u009b``. Standard library only
(the store uses it, inside supervisord's process too).
"""

from __future__ import annotations

import re
from typing import Any

# C0 without tab and newline, DEL, C1, lone surrogates, and the two non-characters XML 1.0 excludes
UNSAFE_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control or XML-invalid character spelled out (``\\x1b``); idempotent."""
    return UNSAFE_RE.sub(_escaped, text)


def clean(value: Any, nil: Any = None) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every string, keys included (as strings), run through
    escape_controls, and every None made ``nil`` (XML-RPC has no None: the RPC answers pass "")."""
    if value is None:
        return nil
    if isinstance(value, str):  # shared/model's Kind and Status too: XML-RPC sends only a plain str
        return escape_controls(str.__str__(value))
    if isinstance(value, dict):
        return {escape_controls(str(k)): clean(v, nil) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, nil) for v in value]
    return value
