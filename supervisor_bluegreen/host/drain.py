"""Wait until the idle color serves nothing before it is stopped.

After the switch, nginx opens new connections only to the live color. The idle color
may still hold some connections: a slow request in flight, a kept-alive upstream
connection, or a connection waiting in its accept queue. Stopping it then would cut
them off. Linux lists every AF_UNIX socket in ``/proc/net/unix``. The server side of
each connection, queued or accepted, is listed under the path its listener was bound
to. Clients are unnamed. So counting the lines for that path, minus the listener, gives
the connections left to drain. This needs no subprocess, no process tree and no
privileges: the kernel shows the sockets of every process, not just ours.

Caveats (checked with a real kernel and gunicorn 27):

* The path is the literal ``sun_path`` given to ``bind()``. Symlinks are not followed
  (a client connecting through the live symlink is listed under the real socket), and
  a relative bind stays relative. Pass the color's own socket path, spelled as
  gunicorn's ``--bind unix:PATH`` spells it, never the live symlink.
* ``/proc/net/unix`` is per network namespace. A color in another namespace (a
  container) is invisible here and so always reads as drained. ``listening`` shows
  whether its listener is visible at all.
* gunicorn's gthread worker keeps an idle keep-alive connection open for ``--keep-alive``
  seconds (2 by default). After a final response it half-closes the connection and
  waits up to 2 s for the client to close its end. Both count as open, because stopping
  the color then would still reset the peer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

PROC_NET_UNIX = "/proc/net/unix"

# "Num: RefCount Protocol Flags Type St Inode[ Path]". The kernel prints exactly one
# space before the path, so everything after it is the path, including any spaces.
_LINE = re.compile(
    r"^\S+: (?P<ref>[0-9A-Fa-f]+) (?P<proto>[0-9A-Fa-f]+) (?P<flags>[0-9A-Fa-f]+)"
    r" (?P<type>[0-9A-Fa-f]+) (?P<st>[0-9A-Fa-f]+) +(?P<inode>\d+)(?: (?P<path>.*))?$"
)
_SO_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in Flags: the socket is listening
_SS_UNCONNECTED = 0x01  # St: bound but neither listening nor connected


def _bound(proc_net_unix: str, path: str) -> list[tuple[int, int]]:
    """(flags, state) of every socket bound to exactly ``path``."""
    found = []
    for line in proc_net_unix.split("\n"):
        m = _LINE.match(line)
        if m and m.group("path") == path:
            found.append((int(m.group("flags"), 16), int(m.group("st"), 16)))
    return found


def connected(proc_net_unix: str, path: str) -> int:
    """Number of server-side connections of the listener bound to ``path`` in ``/proc/net/unix`` text.

    Counts accepted connections (St 03) and connections still in the accept queue
    (St 02, inode 0), because the server will accept and serve those too. The
    listener (St 01 with __SO_ACCEPTCON) and unconnected sockets are not counted.
    Abstract names appear with a leading '@'.
    """
    return sum(
        1 for flags, state in _bound(proc_net_unix, path) if not flags & _SO_ACCEPTCON and state != _SS_UNCONNECTED
    )


def listening(proc_net_unix: str, path: str) -> bool:
    """Whether a listener bound to ``path`` is visible. When it is not, a count of 0 proves nothing."""
    return any(flags & _SO_ACCEPTCON for flags, _ in _bound(proc_net_unix, path))


def read_proc_net_unix() -> str:
    """The kernel's table of AF_UNIX sockets, read in one go. Raises OSError off Linux."""
    with open(PROC_NET_UNIX, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def open_connections(path: str) -> int:
    """Connections still open on the socket bound to ``path``, right now."""
    return connected(read_proc_net_unix(), path)


@dataclass(frozen=True)
class DrainResult:
    """The outcome of a drain. ``remaining`` is the last count (0 when drained)."""

    drained: bool
    remaining: int
    waited: float


def wait_drained(
    path: str,
    timeout: float,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    count: Callable[[str], int] = open_connections,
) -> DrainResult:
    """Poll ``count(path)`` until it reaches 0 or ``timeout`` seconds pass.

    The count is checked once more after the last sleep, so a timeout of 0 still
    checks once. The caller decides what to do after a timeout (usually: stop the
    color anyway and report the number of connections that were cut).
    """
    started = clock()
    deadline = started + timeout
    while True:
        n = count(path)
        if n == 0:
            return DrainResult(True, 0, clock() - started)
        remaining = deadline - clock()
        if remaining <= 0:
            return DrainResult(False, n, clock() - started)
        sleep(min(interval, remaining))
