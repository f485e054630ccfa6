#!/usr/bin/python
"""Read one host's app: what serves, what would roll back, what runs (never changes anything)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: status
short_description: Read an app's supervisor-bluegreen status
description:
  - The app's C(bluegreen status) - live color and commit, the rollback target, a running job, an open watch window,
    a lock - as facts to register (e.g. before a rolling release, to know what to roll back to).
options:
  app:
    description: The app's name.
    type: str
    required: true
extends_documentation_fragment:
  - bluegreen.supervisor.connection
"""

EXAMPLES = r"""
- name: What serves before this run
  bluegreen.supervisor.status:
    app: abiapp
  register: before
"""

RETURN = r"""
live: {description: The live color., type: str, returned: always}
commit: {description: The commit the live color serves., type: str, returned: always}
previous: {description: The warm rollback target's color., type: str, returned: always}
previous_commit: {description: The rollback target's commit., type: str, returned: always}
settled: {description: No job queued or running and no watch window open., type: bool, returned: always}
locked: {description: The app's lock (who, since, reason), empty when unlocked., type: dict, returned: always}
status: {description: The whole status entry, as C(bluegreen status --json) prints it., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bluegreen.supervisor.plugins.module_utils.bluegreen import (
    CONNECTION_ARGS,
    BluegreenError,
    app_status,
    connect,
    facts,
    settled,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"app": {"type": "str", "required": True}, **CONNECTION_ARGS}, supports_check_mode=True
    )
    try:
        status = app_status(connect(module.params), module.params["app"])
    except BluegreenError as exc:
        module.fail_json(msg=str(exc))
    found = {k: v for k, v in facts(status).items() if k in ("live", "commit", "previous", "previous_commit")}
    module.exit_json(changed=False, settled=settled(status), locked=status.get("lock") or {}, status=status, **found)


if __name__ == "__main__":
    main()
