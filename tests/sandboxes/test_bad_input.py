"""Bad input gets a clear message and changes nothing: no row, no folder, no container.

The fast tier: the rules live in the services and the policy, driven here through the web layer
with the in-memory engine (tests/support/fakes.py). tests/sandboxes/test_engine_faults.py covers what
needs the real engine."""

import os
from pathlib import Path

import pytest
from django.conf import settings

from sandboxes import services
from sandboxes.models import Sandbox
from teams.models import Membership, Team
from tests.support.sandboxes import create_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def form_data(team, fake_engine, clean_workspace):
    return create_form(team)


def assert_refused(client, data, message):
    response = client.post("/sandboxes/new/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Sandbox.objects.exists()
    assert not (Path(settings.WORKSPACE_ROOT) / data["name"]).exists()
    from sandboxes import engine

    assert not engine.engine_for().containers


@pytest.mark.parametrize("name", ["Bad_Name", "Foo", "-dash", "dash-", "a" * 41, "a" * 300, "has space", "../up", "a/b", ".", "..", ""])
def test_invalid_names_are_refused(logged_in, form_data, name):
    response = logged_in.post("/sandboxes/new/", {**form_data, "name": name})
    assert response.status_code == 400
    assert not Sandbox.objects.exists()


def test_duplicate_name_is_refused(logged_in, form_data, make_sandbox, fake_engine):
    make_sandbox("good")
    response = logged_in.post("/sandboxes/new/", form_data)
    assert response.status_code == 400
    assert "is in use" in response.content.decode()
    assert Sandbox.objects.count() == 1


def member_of_another_team(client, django_user_model) -> Team:
    """Sign `client` in as an operator of a second team, who cannot see the Default team's sandboxes."""
    other = Team.objects.create(slug="team-b", name="Team B")
    user = django_user_model.objects.create_user("b-operator", password="pw-b-123456")
    Membership.objects.create(user=user, team=other, role=Membership.Role.OPERATOR)
    client.force_login(user)
    return other


def name_problem(client, data) -> str:
    response = client.post("/sandboxes/new/", data)
    assert response.status_code == 400
    text = response.content.decode()
    assert str(settings.WORKSPACE_ROOT) not in text  # no host path, in any message
    return text


def test_a_name_another_team_uses_is_refused_revealing_no_team_and_no_path(client, form_data, make_sandbox, fake_engine, django_user_model):
    make_sandbox("shared-name")
    other = member_of_another_team(client, django_user_model)
    text = name_problem(client, {**form_data, "team": other.pk, "name": "shared-name"})
    assert "The name &#x27;shared-name&#x27; is in use" in text
    assert "left by" not in text and "Default" not in text
    assert list(Sandbox.objects.values_list("name", "team__slug")) == [("shared-name", "default")]


def test_a_name_whose_folder_an_earlier_sandbox_left_gets_the_same_message(client, form_data, django_user_model):
    left = Path(settings.WORKSPACE_ROOT) / "left-over"
    left.mkdir(parents=True)
    (left / "notes.txt").write_text("kept")
    other = member_of_another_team(client, django_user_model)
    text = name_problem(client, {**form_data, "team": other.pk, "name": "left-over"})
    assert "The name &#x27;left-over&#x27; is in use" in text
    assert not Sandbox.objects.exists() and (left / "notes.txt").read_text() == "kept"


def test_a_mount_another_team_holds_is_refused_without_naming_it(
    client, form_data, make_sandbox, fake_engine, django_user_model, mount_root
):
    (mount_root / "data" / "sub").mkdir(parents=True)
    make_sandbox("team-a-box", extra_mounts=[(str(mount_root / "data"), "/workspace/data", False)])
    other = member_of_another_team(client, django_user_model)
    response = client.post("/sandboxes/new/", {**form_data, "team": other.pk, "extra_mounts": f"{mount_root}/data/sub:/workspace/d"})
    text = response.content.decode()
    assert response.status_code == 400 and "another team" in text
    assert "team-a-box" not in text
    assert Sandbox.objects.count() == 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("memory_mb", "100", "at least 256 MB"),
        ("memory_mb", "0", "at least 256 MB"),
        ("memory_mb", str(10**8), "SANDBOX_MAX_MEMORY_MB"),
        ("cpus", "0", "at least 0.25"),
        ("cpus", "1000", "the CPUs this machine has"),
        ("cpus", "1e15", "the CPUs this machine has"),
        ("cpus", "0.333", "two decimal places"),
        ("image", "NOT AN IMAGE", "valid image reference"),
        ("image", "ccpanel/no-such-image:1", "not on this machine"),
    ],
)
def test_out_of_range_values_are_refused(logged_in, form_data, field, value, message):
    assert_refused(logged_in, {**form_data, field: value}, message)


def test_mount_outside_allowed_root_is_refused(logged_in, form_data, mount_root):
    (mount_root.parent / "ccpanel-test-elsewhere").mkdir(exist_ok=True)
    try:
        assert_refused(
            logged_in,
            {**form_data, "extra_mounts": f"{mount_root.parent}/ccpanel-test-elsewhere:/workspace/data"},
            "outside the allowed folders",
        )
    finally:
        (mount_root.parent / "ccpanel-test-elsewhere").rmdir()


@pytest.mark.parametrize(
    "source, message",
    [
        ("/etc", "system path /etc"),
        ("/var/run/docker.sock", "system path /var"),
        ("/run/docker.sock", "system path /run"),
        ("/var/run", "system path /var"),
        ("/", "contains or lies inside the workspace root"),
        ("/root", "system path /root"),
        ("/home", "contains /home"),
    ],
)
def test_system_path_and_docker_socket_mounts_are_refused(logged_in, form_data, mount_root, source, message):
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{source}:/workspace/data"}, message)


def test_symlink_in_a_mount_source_is_refused(logged_in, form_data, mount_root):
    os.symlink("/etc", mount_root / "sneaky")
    assert_refused(logged_in, {**form_data, "extra_mounts": f"{mount_root}/sneaky:/workspace/data"}, "sneaky is a symbolic link (to /etc)")


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


def test_action_not_allowed_in_status_is_a_message_not_a_500(logged_in, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("busy")
    response = logged_in.post(f"/sandboxes/{sandbox.pk}/unpause/", follow=True)
    assert response.status_code == 200
    assert "Cannot unpause busy while it is running" in response.content.decode()
    assert logged_in.post(f"/sandboxes/{sandbox.pk}/explode/").status_code == 404


def test_two_actions_at_once_are_refused(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("twice")
    actor = services.SystemActor("t")
    services.sandbox_request_action(actor=actor, sandbox=sandbox, action="stop", enqueue=False)
    with pytest.raises(services.SandboxError, match="busy"):
        services.sandbox_request_action(actor=actor, sandbox=sandbox, action="restart", enqueue=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"selinux_level": "s0:c100,c200"}, "no SELinux"),  # valid, but this machine has none
        ({"selinux_level": "system_u:object_r:container_t:s0"}, "not valid"),
        ({"runtime": "kata"}, "Select a valid choice"),
    ],
)
def test_isolation_options_that_cannot_hold_here_are_refused(logged_in, form_data, changes, message):
    assert_refused(logged_in, {**form_data, **changes}, message)


@pytest.mark.parametrize("left", ["a file", "a stranger's folder", "another sandbox's folder"])
def test_a_workspace_folder_that_cannot_be_used_is_refused_without_a_host_path(clean_workspace, left):
    """Issue 14, item 5: what a start or a create says about its folder names no host path (nor
    another sandbox's marker), only the folder as the sandbox knows it."""
    from django.conf import settings

    from sandboxes import workspace

    root = settings.WORKSPACE_ROOT
    root.mkdir(parents=True, exist_ok=True)
    if left == "a file":
        (root / "taken").write_text("x")
    else:
        (root / "taken").mkdir()
        (root / "taken" / ("notes.txt" if left == "a stranger's folder" else workspace.MARKER)).write_text("other-uuid\n")
    with pytest.raises(workspace.WorkspaceError) as refused:
        workspace.workspace_create("taken", "my-uuid")
    message = str(refused.value)
    assert "taken/" in message and str(root) not in message and "other-uuid" not in message
