#!/usr/bin/python
"""Lock or unlock one host's app: deploys, pushes, switches and a person's rollbacks refused meanwhile."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lock
short_description: Lock or unlock an app with supervisor-bluegreen
description:
  - C(state=locked) is C(bluegreen lock APP REASON) - deploys, pushes, switches and a person's rollbacks are refused
    with the reason until unlocked (the watch window's own rollback never is); C(state=unlocked) is C(bluegreen unlock).
  - Idempotent - C(changed=false) when the app is already in that state (whoever locked it).
options:
  app:
    description: The app's name.
    type: str
    required: true
  state:
    description: Locked or unlocked.
    type: str
    choices: [locked, unlocked]
    default: locked
  reason:
    description: Why, shown to whoever is refused; required to lock.
    type: str
extends_documentation_fragment:
  - bluegreen.supervisor.connection
"""

EXAMPLES = r"""
- name: Hold deploys during the exam week
  bluegreen.supervisor.lock:
    app: abiapp
    reason: exam week, no deploys
"""

RETURN = r"""
lock: {description: The lock after the task (who, since, reason), empty when unlocked., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bluegreen.supervisor.plugins.module_utils.bluegreen import (
    CONNECTION_ARGS,
    BluegreenError,
    app_status,
    call,
    connect,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["locked", "unlocked"], "default": "locked"},
            "reason": {"type": "str"},
            **CONNECTION_ARGS,
        },
        required_if=[("state", "locked", ("reason",))],
        supports_check_mode=True,
    )
    p = module.params
    app, want = p["app"], p["state"] == "locked"
    try:
        rpc = connect(p)
        held = app_status(rpc, app).get("lock") or {}
        if bool(held) == want:
            module.exit_json(changed=False, lock=held)
        if module.check_mode:
            module.exit_json(changed=True, lock=held, msg=f"{app}: would {'lock' if want else 'unlock'}")
        if want:
            call("lock", rpc.bluegreen.lock, app, p["reason"], p["who"])
        else:
            call("unlock", rpc.bluegreen.unlock, app, p["who"])
        held = app_status(rpc, app).get("lock") or {}
    except BluegreenError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=True, lock=held)


if __name__ == "__main__":
    main()
