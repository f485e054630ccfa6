#!/usr/bin/python
"""Deploy a commit to one host's app and wait through its watch window: the task's outcome is the release's."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy
short_description: Deploy a commit with supervisor-bluegreen and wait through its watch window
description:
  - Queues C(bluegreen deploy APP COMMIT) on the host's supervisord and follows the job (build, migration gate,
    health gate, switch), then the watch window that rolls back by itself when the new release dies.
  - Idempotent for a commit id; C(changed=false) when that commit is live and nothing is pending. A branch or tag
    is deployed every time (each host resolves it in its own repository).
  - Fails with the deploy's own message when it is refused, fails before the switch (the live release untouched) or
    is rolled back in its window.
options:
  app:
    description: The app's name (its C([app:NAME]) section).
    type: str
    required: true
  commit:
    description: The commit to deploy; give the same full commit id to every host of a fleet.
    type: str
    required: true
  wait_window:
    description: Return only once the watch window passed (or rolled back); false returns when the job ended.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the job (and the window) before failing; the job goes on.
    type: int
    default: 1800
  allow_unsafe:
    description: Let migrations the gate refuses run anyway (recorded in the app's history).
    type: bool
    default: false
extends_documentation_fragment:
  - bluegreen.supervisor.connection
"""

EXAMPLES = r"""
- name: Release the commit and wait through its window
  bluegreen.supervisor.deploy:
    app: abiapp
    commit: 3f2c1a9e4b7d8c6a5f0e1d2c3b4a59687e6f5d4c
"""

RETURN = r"""
live: {description: The live color after the task., type: str, returned: always}
commit: {description: The commit the live color serves after the task., type: str, returned: always}
previous: {description: The warm rollback target's color., type: str, returned: always}
previous_commit: {description: The rollback target's commit., type: str, returned: always}
job: {description: The deploy job's id (0 when nothing was queued)., type: int, returned: always}
job_status: {description: The job's status (succeeded, failed, cancelled, interrupted)., type: str, returned: always}
rolled_back: {description: Whether the watch window rolled the release back., type: bool, returned: always}
window:
  description: How the watch window ended (passed, rolled back, ended; empty when none opened).
  type: str
  returned: always
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
    same_commit,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "commit": {"type": "str", "required": True},
            "wait_window": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 1800},
            "allow_unsafe": {"type": "bool", "default": False},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params
    app, commit = p["app"], p["commit"]
    try:
        rpc = connect(p)
        status = app_status(rpc, app)
        live = facts(status)
        if same_commit(live["commit"], commit):
            window = status.get("watch") or {}
            job = {}
            if window and p["wait_window"] and not module.check_mode:  # its window is still open: see it through
                job = follow(rpc, app, int(window.get("job") or 0), p["timeout"], True)
                status = app_status(rpc, app)
            failure = outcome(job) if job else None
            if failure:
                module.fail_json(msg=failure, changed=False, **facts(status, job))
            module.exit_json(changed=False, msg=f"{app}: {commit[:7]} is live on {live['live']}", **facts(status, job))
        if module.check_mode:
            was = f"{live['live']} at {live['commit'][:7]}" if live["live"] else "nothing yet"
            module.exit_json(changed=True, msg=f"{app}: would deploy {commit} (live: {was})", **live)
        queued = call("deploy", rpc.bluegreen.deploy, app, commit, p["who"], p["allow_unsafe"])
        job = follow(rpc, app, int(queued["id"]), p["timeout"], p["wait_window"])
        status = app_status(rpc, app)
    except BluegreenError as exc:
        module.fail_json(msg=str(exc))
    result = facts(status, job)
    failure = outcome(job)
    if failure:
        # nothing moved when the deploy failed or was refused; a rollback moved it back: changed, in both directions
        module.fail_json(msg=failure, changed=result["rolled_back"], **result)
    module.exit_json(changed=True, msg=str(job.get("message") or ""), **result)


if __name__ == "__main__":
    main()
