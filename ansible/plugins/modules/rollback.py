#!/usr/bin/python
"""Roll one host's app back, to the commit that served before (a fleet's rollback of the hosts a run moved)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rollback
short_description: Roll an app back with supervisor-bluegreen
description:
  - Without C(to), C(bluegreen rollback APP) - back to the previous color, still running and warm.
  - With C(to), back to that commit; C(changed=false) when it is already live. The warm previous color is used
    when it holds that commit, else the kept release of that commit is started again in the idle color
    (C(rollback --to)), health-gated, switched and watched; never migrates.
  - Fails with the rollback's own message (no previous color, a release past a contract migration, a lock).
options:
  app:
    description: The app's name.
    type: str
    required: true
  to:
    description: The commit to serve again (e.g. the C(commit) a status task registered before the run).
    type: str
  timeout:
    description: Seconds to wait for the rollback job.
    type: int
    default: 600
extends_documentation_fragment:
  - bluegreen.supervisor.connection
"""

EXAMPLES = r"""
- name: Back to what served before this run
  bluegreen.supervisor.rollback:
    app: abiapp
    to: "{{ before.commit }}"
"""

RETURN = r"""
live: {description: The live color after the task., type: str, returned: always}
commit: {description: The commit the live color serves after the task., type: str, returned: always}
job: {description: The rollback job's id (0 when nothing was queued)., type: int, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bluegreen.supervisor.plugins.module_utils.bluegreen import (
    CONNECTION_ARGS,
    BluegreenError,
    app_status,
    call,
    connect,
    facts,
    follow,
    outcome,
    rollback_args,
    same_commit,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "to": {"type": "str"},
            "timeout": {"type": "int", "default": 600},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params
    app, to = p["app"], p["to"] or ""
    try:
        rpc = connect(p)
        status = app_status(rpc, app)
        if to and same_commit(facts(status)["commit"], to):
            module.exit_json(changed=False, msg=f"{app}: {to[:7]} is live", **facts(status))
        if module.check_mode:
            module.exit_json(
                changed=True, msg=f"{app}: would roll back to {to or 'the previous color'}", **facts(status)
            )
        queued = call("rollback", rpc.bluegreen.rollback, app, p["who"], rollback_args(status, to))
        job = follow(rpc, app, int(queued["id"]), p["timeout"], False)
        status = app_status(rpc, app)
    except BluegreenError as exc:
        module.fail_json(msg=str(exc))
    failure = outcome(job)
    if failure:
        module.fail_json(msg=failure, **facts(status, job))
    module.exit_json(changed=True, msg=str(job.get("message") or ""), **facts(status, job))


if __name__ == "__main__":
    main()
