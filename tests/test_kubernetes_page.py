"""docs/kubernetes.md, the guarantees mapped onto Argo Rollouts: its manifest is YAML a user can apply."""

from __future__ import annotations

import yaml
from conftest import REPO


def test_the_kubernetes_pages_yaml_parses() -> None:
    page = (REPO / "docs/kubernetes.md").read_text()
    blocks = page.split("```yaml\n")[1:]
    assert blocks
    for block in blocks:
        rollout = yaml.safe_load(block.split("```", 1)[0])
        assert rollout["kind"] == "Rollout" and rollout["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] == 60
