"""The collection's sample inventory and playbook, as a user copies them, read by Ansible itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, nginx_test

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def test_the_sample_inventory_names_three_hosts_of_one_app() -> None:
    out = subprocess.run([BIN / "ansible-inventory", "-i", REPO / "ansible/inventory.example.ini", "--list"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    hosts = listing["bluegreen"]["hosts"]
    assert len(hosts) == 3
    assert {listing["_meta"]["hostvars"][h]["bluegreen_app"] for h in hosts} == {"abiapp"}


def test_the_playbook_passes_ansibles_syntax_check(tmp_path: Path) -> None:
    collections = tmp_path / "collections"
    env = {"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_LOCAL_TEMP": str(tmp_path), "PATH": "/usr/bin:/bin"}
    install = subprocess.run([BIN / "ansible-galaxy", "collection", "install", REPO / "ansible", "-p", collections],
                             capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    play = [BIN / "ansible-playbook", "--syntax-check", "-i", REPO / "ansible/inventory.example.ini",
            "bluegreen.supervisor.rolling_release"]  # fmt: skip
    out = subprocess.run(play, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_balancers_config_passes_nginx_t(tmp_path: Path) -> None:
    site = (REPO / "conf/nginx/balancer.conf").read_text().replace("listen 80;", "listen 127.0.0.1:1;")
    out = nginx_test(tmp_path, site)
    assert out.returncode == 0, out.stderr
