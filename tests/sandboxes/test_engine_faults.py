"""Faults only the real engine shows: Docker down, a same-named network or container made by
someone else, and an extra mount really mounted read-only."""

import pytest
from django.conf import settings
from django.test import override_settings

from sandboxes import health, services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.sandboxes import create_form

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.fixture
def form_data(team, test_image):
    return create_form(team, image=test_image)


def test_valid_extra_mount_is_mounted(logged_in, form_data, clean_docker, mount_root):
    data_dir = mount_root / "datasets"
    data_dir.mkdir()
    (data_dir / "a.csv").write_text("x\n")
    (data_dir / "a.csv").chmod(0o644)
    response = logged_in.post("/sandboxes/new/", {**form_data, "extra_mounts": f"{data_dir}:/workspace/data:ro"})
    assert response.status_code == 302
    sandbox = Sandbox.objects.get(name="good")
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "running", sandbox.status_detail
    out = docker_cli("exec", sandbox.container_id, "sh", "-c", "cat /workspace/data/a.csv; touch /workspace/data/b", check=False)
    assert out.stdout == "x\n" and "Read-only" in out.stderr


def test_docker_down_shows_banner_records_error_and_retry_works(logged_in, form_data, clean_docker):
    with override_settings(DOCKER_HOST="unix:///nonexistent/docker.sock"):
        health.refresh()  # what the background check finds within a few seconds
        page = logged_in.get("/")
        assert page.status_code == 200
        assert "Docker is not reachable" in page.content.decode()
        response = logged_in.post("/sandboxes/new/", {**form_data, "name": "later"})
        assert response.status_code == 302
        sandbox = Sandbox.objects.get(name="later")
        services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
        sandbox.refresh_from_db()
        assert sandbox.status == "error"
        assert "not reachable" in sandbox.status_detail
        assert "not reachable" in logged_in.get("/").content.decode()
    # Docker is back: the same action, retried, works.
    health.refresh()
    assert "Docker is not reachable" not in logged_in.get("/").content.decode()
    response = logged_in.post(f"/sandboxes/{sandbox.pk}/start/")
    assert response.status_code == 302
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "running", sandbox.status_detail


def test_existing_network_without_isolation_is_refused(make_sandbox, clean_docker, settings):
    """A same-named network someone made by hand, with inter-container traffic on, is not used."""
    settings.SANDBOX_NETWORK = "ccpanel-test-open"
    docker_cli("network", "create", "--subnet", "172.28.11.0/24", "ccpanel-test-open")
    try:
        sandbox = make_sandbox("open-net")
        assert sandbox.status == "error"
        assert "lets containers talk to each other" in sandbox.status_detail
        assert sandbox.container_id == ""
    finally:
        docker_cli("network", "rm", "ccpanel-test-open", check=False)


def test_a_foreign_container_with_our_name_is_never_removed(make_sandbox, clean_docker, test_image):
    docker_cli("run", "-d", "--name", f"ccpanel-{settings.PANEL_INSTANCE}-squatter", test_image)
    try:
        sandbox = make_sandbox("squatter")
        assert sandbox.status == "error"
        assert "does not belong to this sandbox" in sandbox.status_detail
        services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="destroy", enqueue=False)
        services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
        assert Sandbox.objects.get(pk=sandbox.pk).status == "destroyed"  # ours goes, theirs stays
        assert docker_cli("inspect", "-f", "{{.State.Running}}", f"ccpanel-{settings.PANEL_INSTANCE}-squatter").stdout.strip() == "true"
    finally:
        docker_cli("rm", "-f", f"ccpanel-{settings.PANEL_INSTANCE}-squatter", check=False)


def test_a_container_that_exits_at_once_is_reported_and_kept(make_sandbox, clean_docker, test_image, settings):
    """Found by review: no process to read the mounts from is not a swap; the container and its
    output are kept, and the reason is the exit."""
    tag = f"ccpanel-{settings.PANEL_INSTANCE}/exits:1"
    cid = docker_cli("create", "--label", f"io.ccpanel.instance={settings.PANEL_INSTANCE}", test_image).stdout.strip()
    docker_cli("commit", "--change", 'CMD ["/bin/sh", "-c", "echo bye; exit 3"]', cid, tag)
    docker_cli("rm", cid)
    try:
        sandbox = make_sandbox("quitter", image=tag)
        if sandbox.status == "running":
            # It exited just after its mounts were read (a race no start can close): Docker's
            # event, synced, reports the exit instead.
            docker_cli("wait", sandbox.container_id, check=False)
            services.sandbox_sync(sandbox=sandbox)
            sandbox.refresh_from_db()
            assert sandbox.status == "error" and "exited with code 3" in sandbox.status_detail, sandbox.status_detail
        else:
            assert sandbox.status == "error", sandbox.status_detail
            assert "exited at once (code 3)" in sandbox.status_detail
        assert "security policy" not in sandbox.status_detail
        assert docker_cli("logs", sandbox.container_id).stdout.strip() == "bye"
    finally:
        docker_cli("rmi", "-f", tag, check=False)
