"""Kept releases as the state records them, and which one a rollback means: pure, standard library only.

The listener records each release that built (host/releases.py makes them); supervisord's status and
``releases`` answer from the same records, and ``rollback --to`` is checked against them before it is
queued. A record names the release's folder (its id), its commit, when it was built and by which job.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from supervisor_bluegreen.shared.errors import BluegreenError


class ReleaseError(BluegreenError):
    """A release cannot be made, found or pointed at; nothing a color runs was changed."""


RELEASE_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{7,40}(-[0-9]+)?$")
LEGACY = re.compile(
    r"^before-releases-[A-Za-z0-9_.-]+-[0-9]+$"
)  # a color's own folder, moved aside at its first release


@dataclass(frozen=True)
class Release:
    """A release that built: the commit it holds, when it was built, by which job."""

    id: str
    commit: str
    built: float
    job: int

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, raw: Any) -> Release | None:
        """A release as the state records it (None when the record is damaged)."""
        try:
            release = cls(str(raw["id"]), str(raw["commit"]), float(raw["built"]), int(raw["job"]))
        except (KeyError, TypeError, ValueError):
            return None
        return release if RELEASE_ID.match(release.id) else None


def recorded(state: dict[str, Any]) -> list[Release]:
    """The built releases the state knows, oldest first."""
    found = (Release.of(raw) for raw in state.get("releases") or ())
    return sorted((r for r in found if r is not None), key=lambda r: (r.built, r.id))


def pick(built: list[Release], live_id: str, to: str) -> Release:
    """The release ``rollback --to`` means: a commit (or its prefix), or ``-N``: N releases before the live one.

    ``built`` is in build order (``recorded``).
    """
    if re.fullmatch(r"-[1-9][0-9]*", to):
        ids = [r.id for r in built]
        older = built[: ids.index(live_id)] if live_id in ids else built
        n = int(to[1:])
        if n > len(older):
            raise ReleaseError(f"only {len(older)} kept release(s) before the live one: {to} goes too far back")
        return older[-n]
    if not re.fullmatch(r"[0-9a-f]{4,40}", to):
        raise ReleaseError(f"{to!r} is neither a commit nor -N")
    hits = [r for r in built if r.commit.startswith(to) or r.id == to]
    if not hits:
        kept = ", ".join(r.commit[:7] for r in built) or "none"
        raise ReleaseError(f"no kept release of {to} (kept: {kept})")
    if len({r.commit for r in hits}) > 1:
        raise ReleaseError(f"{to} names more than one commit: give more of it")
    return hits[-1]


def to_problem(to: str) -> str:
    """Why ``rollback --to`` cannot take ``to`` ('' when it is a commit or -N)."""
    if re.fullmatch(r"-[1-9][0-9]*|[0-9a-f]{4,40}", to):
        return ""
    return f"--to {to!r}: give a commit (4 to 40 hex digits) or -N (N releases before the live one)"


def listing(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The kept releases, newest first, each with the colors that run it (as recorded at their start)."""
    runs: dict[str, list[str]] = {}
    for color, record in (state.get("colors") or {}).items():
        if isinstance(record, dict) and record.get("release"):
            runs.setdefault(str(record["release"]), []).append(str(color))
    live = state.get("live")
    out = []
    for release in reversed(recorded(state)):
        colors = sorted(runs.get(release.id, ()))
        out.append({**release.record(), "colors": colors, "live": live in colors})
    return out
