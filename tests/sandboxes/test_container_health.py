"""What the pages say of a running sandbox is what Docker sees: its health check's state, and the
processes the kernel killed for want of memory, not a plain "running"."""

import pytest
from django.conf import settings

from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
THRASH = f"ccpanel-{settings.PANEL_INSTANCE}/thrash:1"
HOG = "dd if=/dev/zero of=/dev/null bs=300M count=1"  # more than the sandbox's 256 MB


@pytest.fixture
def thrash_image(test_image, clean_docker):
    """An image whose health check needs more memory than the sandbox has: every check is
    OOM-killed, and Docker's health stays at "starting" (its start period is long)."""
    cid = docker_cli("create", "--label", f"io.ccpanel.instance={settings.PANEL_INSTANCE}", test_image).stdout.strip()
    docker_cli("commit", "--change", f"HEALTHCHECK --interval=2s --start-period=1h CMD {HOG}", cid, THRASH)
    docker_cli("rm", cid)
    yield THRASH
    docker_cli("rmi", "-f", THRASH, check=False)


def test_a_sandbox_thrashing_against_its_memory_limit_shows_its_health_and_oom_kills(
    make_sandbox, thrash_image, engine_watcher, client, admin_user
):
    sandbox = make_sandbox("thrash", image=thrash_image, network_mode="none")
    assert docker_cli("exec", sandbox.container_id, "sh", "-c", HOG, check=False).returncode == 137  # OOM-killed
    client.force_login(admin_user)
    wait_for(lambda: "OOM-killed" in client.get("/").content.decode(), timeout=20, what="the dashboard to show the OOM kills")
    assert docker_cli("inspect", "-f", "{{.State.Health.Status}}", sandbox.container_id).stdout.strip() == "starting"
    for url in ("/", f"/sandboxes/{sandbox.pk}/"):
        page = client.get(url).content.decode()
        assert "health: starting" in page, url
        assert "OOM-killed" in page, url
