"""The second host (tests/support/second_host.py): one per test session, made when a test first
asks for it and removed at the end, whatever the outcome."""

import os
import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.support import second_host as h2

TOOLS = ("ip", "nsenter", "unshare", "dockerd", "redis-server", "openssl", "mkfs.btrfs", "iptables-save", "findmnt", "losetup", "ss")


def _slot() -> int:
    return int(settings.PANEL_INSTANCE.removeprefix("test") or "0")


def _missing() -> str:
    """Why this machine cannot run a second host ("" when it can)."""
    if os.geteuid() != 0:
        return "A second host needs root (network namespaces, a dockerd, a loop mount)."
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"A second host needs {', '.join(absent)}." if absent else ""


@pytest.fixture(scope="session")
def _second_host_session(_docker_ping, _test_image_built) -> Iterator[h2.SecondHost]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    host = h2.start(_slot())
    try:
        yield host
    finally:
        left = host.down()
        rules_after = h2.root_ruleset()
        if left:
            pytest.fail(f"the second host left these behind: {left}")
        if rules_after != host.root_rules_before:
            changed = sorted(set(host.root_rules_before) ^ set(rules_after))
            pytest.fail(f"the root namespace's iptables changed: {changed}")


@pytest.fixture
def second_host(request, _second_host_session) -> Iterator[h2.SecondHost]:
    """The session's second host (its own dockerd, pool, internet, and a way back to the test's
    Redis and PostgreSQL): for tests marked `docker`."""
    if request.node.get_closest_marker("docker") is None:
        pytest.fail(f"{request.node.nodeid} uses a second dockerd: mark it `docker` so the fast tier leaves it out.")
    yield _second_host_session
    # The panel's networks a test's sandboxes made there (Docker keeps a network, and its bridge,
    # after its last container): the next test finds the second host as the session made it.
    names = _second_host_session.docker("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    for name in names:
        if name.startswith("ccpanel-"):
            _second_host_session.docker("network", "rm", name, check=False)
