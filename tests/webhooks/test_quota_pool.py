"""The disk-quota watch against the real storage pool: a sandbox that fills its quota past the
warning share is audited once, and again only after it fell back and crossed anew."""

import subprocess

import pytest

from audit.models import AuditEvent
from sandboxes.models import Sandbox
from storage import selectors
from tests.support.docker import docker_cli
from webhooks import quota

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def sh(sandbox: Sandbox, script: str) -> subprocess.CompletedProcess:
    return docker_cli("exec", sandbox.container_id, "sh", "-c", script, check=False)


def test_filling_the_quota_is_told_once_per_crossing(make_sandbox, clean_docker):
    sandbox = make_sandbox("filling", disk_mb=100)
    host = sandbox.host.name
    assert quota.quota_watch(host_name=host) == 0
    done = sh(sandbox, "dd if=/dev/zero of=/workspace/Projects/fill bs=1M count=95 2>&1; sync")
    usage = selectors.disk_usage(sandbox)
    assert usage is not None and usage.percent is not None and usage.percent >= 90, (done, usage)
    assert [quota.quota_watch(host_name=host) for _ in range(3)] == [1, 0, 0]
    sh(sandbox, "rm -f /workspace/Projects/fill; sync")
    assert quota.quota_watch(host_name=host) == 0
    sh(sandbox, "dd if=/dev/zero of=/workspace/Projects/again bs=1M count=95 2>&1; sync")
    assert quota.quota_watch(host_name=host) == 1
    events = AuditEvent.objects.filter(action="sandbox.quota_high", sandbox_uuid=sandbox.uuid)
    assert events.count() == 2
    assert events.first().details["limit_mb"] == 100 and events.first().details["percent"] >= 90
