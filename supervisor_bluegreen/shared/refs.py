"""Names and checks shared by supervisord's side (rpcinterface) and the listener: standard library only.

supervisord imports this module; it must never pull in requests, jinja2, psutil, ctypes or
subprocess, so that a broken install of the listener side cannot keep supervisord from starting.
"""

from __future__ import annotations

import re

# the REMOTE_COMMUNICATION type with which the RPC extension wakes the listener
WAKE_TYPE = "bluegreen"

# letters, digits and . _ / @ ^ ~ - only, not starting with '-': branch, tag, sha, HEAD~2; nothing a shell reads
REF_RE = re.compile(r"^(?!-)[A-Za-z0-9._/@^~-]{1,200}$")


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is refused before anything runs, or None (pure: the RPC extension uses it too)."""
    if not REF_RE.match(ref) or ".." in ref or ref.endswith((".lock", "/", ".")) or "@{" in ref:
        return f"refusing ref {ref!r}: use a branch, tag or commit (letters, digits and ._/@^~- only)"
    return None
