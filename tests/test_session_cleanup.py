"""`make test` leaves the machine as it found it (issue 14, item 23): a test session of its own
(a spare slot) starts a sandbox, and when that session has ended nothing of it is left: no
container, Docker network, bridge, iptables chain, mount or loop device."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker import docker_cli
from tests.support.paths import ROOT

SLOT = "97"
INSTANCE = f"test{SLOT}"
# One test that starts a sandbox on the default network (its bridge and egress chains made).
INNER_TEST = "tests/sandboxes/test_streams.py::test_log_lines_arrive_complete_in_order_and_marked"


def leftovers() -> dict[str, str]:
    """Whatever of the spare slot's instance is on the machine, by kind."""
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8")
    found = {
        "containers": docker_cli("ps", "-aq", "--filter", f"label=io.ccpanel.instance={INSTANCE}").stdout.strip(),
        "networks": docker_cli("network", "ls", "-q", "--filter", f"name=ccpanel-{INSTANCE}").stdout.strip(),
        "bridges": " ".join(n for n in os.listdir("/sys/class/net") if n.startswith(f"ccpanel-{INSTANCE}")),
        "chains": " ".join(line for line in iptables.splitlines() if f"ccpanel-{INSTANCE}" in line)[:500],
        "mounts": " ".join(line for line in mounts.splitlines() if f"{INSTANCE}-workspaces" in line),
        "loop devices": subprocess.run(
            ["losetup", "-j", str(ROOT / "var" / f"{INSTANCE}-pool.btrfs")], capture_output=True, text=True
        ).stdout.strip(),
    }
    return {kind: what for kind, what in found.items() if what}


@pytest.mark.docker
@pytest.mark.slow
def test_a_test_session_leaves_no_container_network_bridge_chain_or_mount(docker_engine):
    assert not leftovers(), "the spare slot was in use before the test"
    env = {k: v for k, v in os.environ.items() if k not in ("PANEL_TEST_DATABASE_URL", "STORAGE_POOL_SIZE_MB")}
    env.update(PANEL_TEST_SLOT=SLOT, STORAGE_POOL_SIZE_MB="2048", DJANGO_SETTINGS_MODULE="controlpanel.settings.test")
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", INNER_TEST, "-q", "-p", "no:cacheprovider"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inner.returncode == 0, inner.stdout[-3000:] + inner.stderr[-2000:]
    assert "1 passed" in inner.stdout
    assert leftovers() == {}
