"""The arguments of each job kind, typed: checked where a job is queued, bound where it runs.

supervisord's RPC extension stores a job's arguments and the listener, another process, later
calls the job's sequence with them: a name or type only one side knows became a TypeError in the
listener (``deploy --allow-unsafe-migrations`` never ran). Both sides go through ``parse`` now:
the RPC refuses what does not fit before anything is queued. Standard library only (supervisord
imports it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from supervisor_bluegreen.shared.errors import BluegreenError
from supervisor_bluegreen.shared.model import Kind


@dataclass(frozen=True)
class SwitchArgs:
    wanted: str = ""  # the color to switch to ('' for the idle one)


@dataclass(frozen=True)
class RollbackArgs:
    reason: str = ""  # set only by the watch window: why the live color is rolled back by itself
    failed: str = ""  # the color it rolls back from (refused when that is no longer live)
    to: str = ""  # rollback --to: a kept release by its commit, or -N (N releases before the live one)


@dataclass(frozen=True)
class HealthArgs:
    color: str = ""  # '' for the live color


@dataclass(frozen=True)
class DeployArgs:
    ref: str = ""  # '' for the configured branch
    allow_unsafe: bool = False  # --allow-unsafe-migrations: run migrations the gate refuses (recorded with who)


@dataclass(frozen=True)
class NoArgs:
    """recover, contract and restart: everything they need is in the app's state."""


JobArgs = Union[SwitchArgs, RollbackArgs, HealthArgs, DeployArgs, NoArgs]
KINDS: dict[Kind, type[JobArgs]] = {
    Kind.SWITCH: SwitchArgs,
    Kind.ROLLBACK: RollbackArgs,
    Kind.HEALTH: HealthArgs,
    Kind.DEPLOY: DeployArgs,
    Kind.RECOVER: NoArgs,
    Kind.CONTRACT: NoArgs,
    Kind.RESTART: NoArgs,
}


T = TypeVar("T", bound=JobArgs)


class BadArguments(BluegreenError, ValueError):
    """Arguments a job kind does not take, or of the wrong type."""


def parse(kind: str, raw: Any) -> JobArgs:
    """``raw`` (a job's stored ``args``) as the typed arguments of ``kind``; BadArguments says what does not fit."""
    cls = KINDS.get(kind)
    if cls is None:
        raise BadArguments(f"unknown job kind {kind!r} (kinds: {', '.join(KINDS)})")
    try:
        return build(cls, raw)
    except BadArguments as exc:
        raise BadArguments(f"{kind}: {exc}") from None


def build(cls: type[T], raw: Any) -> T:
    """``raw`` as ``cls``: every name one of its fields, every value exactly of the field's type."""
    if not isinstance(raw, dict):
        raise BadArguments(f"arguments must be a mapping, got {type(raw).__name__}")
    fields = {f.name: type(f.default) for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        takes = ", ".join(fields) or "none"
        raise BadArguments(f"unknown argument(s) {', '.join(unknown)} (it takes: {takes})")
    for name, value in raw.items():
        if type(value) is not fields[name]:  # exact: True is no str, 1 is no bool
            raise BadArguments(f"{name} must be {fields[name].__name__}, got {type(value).__name__}")
    return cls(**raw)


def stored(args: JobArgs) -> dict[str, Any]:
    """What a job records of ``args`` (parse reads it back)."""
    return dataclasses.asdict(args)
