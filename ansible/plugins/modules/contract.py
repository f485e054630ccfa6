#!/usr/bin/python
"""Run the contract migrations a deploy held back on one host: a fleet's last step, once no host runs old code."""

from __future__ import annotations

DOCUMENTATION = r"""
module: contract
short_description: Run the contract migrations supervisor-bluegreen held back
description:
  - C(bluegreen contract APP) - the migrations the gate held back (marked contract, e.g. a dropped column the old
    release still reads) run in the live color, and the rollback target is cleared (there is no way back past them).
  - For apps with C(contract = manual) in their C([app:NAME]), on a fleet with one database - run it host by host
    (C(serial 1)) once every host serves the new release; the first applies them, the others find nothing left
    to apply and clear their rollback targets.
  - C(changed=false) when no contract migrations wait. An open watch window is waited out first.
options:
  app:
    description: The app's name.
    type: str
    required: true
  timeout:
    description: Seconds to wait for the window and the contract job.
    type: int
    default: 1800
extends_documentation_fragment:
  - bluegreen.supervisor.connection
"""

EXAMPLES = r"""
- name: Contract migrations, once every host serves the release
  hosts: bluegreen
  serial: 1
  tasks:
    - bluegreen.supervisor.contract:
        app: abiapp
"""

RETURN = r"""
migrations: {description: The contract migrations that waited on this host., type: list, returned: always}
job: {description: The contract job's id (0 when none ran)., type: int, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bluegreen.supervisor.plugins.module_utils.bluegreen import (
    CONNECTION_ARGS,
    BluegreenError,
    app_status,
    call,
    connect,
    follow,
    outcome,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "timeout": {"type": "int", "default": 1800},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params
    app = p["app"]
    try:
        rpc = connect(p)
        status = app_status(rpc, app)
        waiting = list((status.get("contract") or {}).get("migrations") or [])
        if not status.get("contract"):
            module.exit_json(changed=False, migrations=[], job=0, msg=f"{app}: no contract migrations wait")
        if module.check_mode:
            module.exit_json(changed=True, migrations=waiting, job=0, msg=f"{app}: would run {', '.join(waiting)}")
        window = status.get("watch") or {}
        if window:
            follow(rpc, app, int(window.get("job") or 0), p["timeout"], True)
            if not app_status(rpc, app).get("contract"):  # the window rolled back: the migrations were dropped
                module.fail_json(msg=f"{app}: the release's window did not pass; its contract migrations dropped")
        queued = call("contract", rpc.bluegreen.contract, app, p["who"])
        job = follow(rpc, app, int(queued["id"]), p["timeout"], False)
    except BluegreenError as exc:
        module.fail_json(msg=str(exc))
    failure = outcome(job)
    if failure:
        module.fail_json(msg=failure, migrations=waiting, job=int(job.get("id") or 0))
    module.exit_json(changed=True, migrations=waiting, job=int(job.get("id") or 0), msg=str(job.get("message") or ""))


if __name__ == "__main__":
    main()
