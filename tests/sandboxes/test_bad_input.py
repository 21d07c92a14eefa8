"""Bad input gets a clear message and changes nothing: no row, no folder, no container."""

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from sandboxes import health, services
from sandboxes.models import Sandbox
from tests.conftest import docker_cli

pytestmark = pytest.mark.django_db


@pytest.fixture
def form_data(team, test_image):
    return {"name": "good", "team": team.pk, "image": test_image, "memory_mb": 512, "cpus": "1",
            "network_mode": "internet", "extra_mounts": ""}


@pytest.fixture
def logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def assert_refused(client, data, message):
    before = set(docker_cli("ps", "-aq").stdout.split())
    response = client.post("/sandboxes/new/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Sandbox.objects.exists()
    assert not (Path(settings.WORKSPACE_ROOT) / data["name"]).exists()
    assert set(docker_cli("ps", "-aq").stdout.split()) == before


@pytest.mark.parametrize("name", ["Bad_Name", "Foo", "-dash", "dash-", "a" * 41, "a" * 300, "has space", "../up", "a/b",
                                  ".", "..", ""])
def test_invalid_names_are_refused(logged_in, form_data, name):
    response = logged_in.post("/sandboxes/new/", {**form_data, "name": name})
    assert response.status_code == 400
    assert not Sandbox.objects.exists()


def test_duplicate_name_is_refused(logged_in, form_data, make_sandbox, clean_docker):
    make_sandbox("good")
    response = logged_in.post("/sandboxes/new/", form_data)
    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert Sandbox.objects.count() == 1


@pytest.mark.parametrize("field, value, message", [
    ("memory_mb", "100", "at least 256 MB"),
    ("memory_mb", "0", "at least 256 MB"),
    ("memory_mb", str(10**8), "SANDBOX_MAX_MEMORY_MB"),
    ("cpus", "0", "at least 0.25"),
    ("cpus", "1000", "the CPUs this machine has"),
    ("cpus", "1e15", "the CPUs this machine has"),
    ("cpus", "0.333", "two decimal places"),
    ("image", "NOT AN IMAGE", "valid image reference"),
    ("image", "ccpanel/no-such-image:1", "not on this machine"),
])
def test_out_of_range_values_are_refused(logged_in, form_data, field, value, message):
    assert_refused(logged_in, {**form_data, field: value}, message)


def test_mount_outside_allowed_root_is_refused(logged_in, form_data, mount_root):
    (mount_root.parent / "ccpanel-test-elsewhere").mkdir(exist_ok=True)
    try:
        assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root.parent}/ccpanel-test-elsewhere:/workspace/data"},
                       "outside the allowed folders")
    finally:
        (mount_root.parent / "ccpanel-test-elsewhere").rmdir()


@pytest.mark.parametrize("source, message", [
    ("/etc", "system path /etc"), ("/var/run/docker.sock", "system path /var"), ("/run/docker.sock", "system path /run"),
    ("/var/run", "system path /var"), ("/", "contains or lies inside the workspace root"), ("/root", "system path /root"),
    ("/home", "contains /home"),
])
def test_system_path_and_docker_socket_mounts_are_refused(logged_in, form_data, mount_root, source, message):
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{source}:/workspace/data"}, message)


def test_symlink_in_a_mount_source_is_refused(logged_in, form_data, mount_root):
    os.symlink("/etc", mount_root / "sneaky")
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/sneaky:/workspace/data"},
                   "sneaky is a symbolic link (to /etc)")


def test_extra_mounts_are_off_until_an_admin_names_roots(logged_in, form_data, mount_root, settings):
    settings.SANDBOX_MOUNT_ROOTS = []
    (mount_root / "data").mkdir()
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/data:/workspace/data"}, "extra mounts are off")


def test_malformed_mount_line_and_bad_target_are_refused(logged_in, form_data, mount_root):
    assert_refused(logged_in, {**form_data, "extra_mounts": "just-one-part"}, "HOST_PATH:CONTAINER_PATH")
    (mount_root / "data").mkdir()
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/data:/etc"}, "inside /workspace/ or /mnt/")
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/data:/workspace/Projects"}, "overlap")
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/data:/workspace/x/../y"}, "normalised")
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/missing:/workspace/data"}, "does not exist")


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


def test_action_not_allowed_in_status_is_a_message_not_a_500(logged_in, make_sandbox, clean_docker):
    sandbox = make_sandbox("busy")
    response = logged_in.post(f"/sandboxes/{sandbox.pk}/unpause/", follow=True)
    assert response.status_code == 200
    assert "Cannot unpause busy while it is running" in response.content.decode()
    assert logged_in.post(f"/sandboxes/{sandbox.pk}/explode/").status_code == 404


def test_two_actions_at_once_are_refused(make_sandbox, clean_docker):
    sandbox = make_sandbox("twice")
    actor = services.SystemActor("t")
    services.sandbox_request_action(actor=actor, sandbox=sandbox, action="stop", enqueue=False)
    with pytest.raises(services.SandboxError, match="busy"):
        services.sandbox_request_action(actor=actor, sandbox=sandbox, action="restart", enqueue=False)


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
    docker_cli("run", "-d", "--name", "ccpanel-test-squatter", test_image)
    try:
        sandbox = make_sandbox("squatter")
        assert sandbox.status == "error"
        assert "does not belong to this sandbox" in sandbox.status_detail
        services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="destroy", enqueue=False)
        services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
        assert Sandbox.objects.get(pk=sandbox.pk).status == "destroyed"  # ours goes, theirs stays
        assert docker_cli("inspect", "-f", "{{.State.Running}}", "ccpanel-test-squatter").stdout.strip() == "true"
    finally:
        docker_cli("rm", "-f", "ccpanel-test-squatter", check=False)
