"""One identity per sandbox: a new sandbox that reuses a name never adopts what an earlier one left."""

import json

import pytest

from sandboxes import engine, services
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.sandboxes import act

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")


def leave_traces(sandbox: Sandbox) -> None:
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo old > /workspace/Projects/old.txt; echo token > /home/claude/.secret")


def home_has_secret(sandbox: Sandbox) -> bool:
    return docker_cli("exec", sandbox.container_id, "test", "-e", "/home/claude/.secret", check=False).returncode == 0


def test_everything_carries_the_sandboxes_uuid(make_sandbox, clean_docker):
    sandbox = make_sandbox("marked")
    uuid = str(sandbox.uuid)
    data = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]
    assert data["Config"]["Labels"]["io.ccpanel.sandbox-uuid"] == uuid
    assert uuid in sandbox.volume_name
    volume = json.loads(docker_cli("volume", "inspect", sandbox.volume_name).stdout)[0]
    assert volume["Labels"]["io.ccpanel.sandbox-uuid"] == uuid
    assert (sandbox.workspace_path / ".ccpanel-sandbox").read_text().strip() == uuid


def test_same_name_after_destroy_starts_empty(make_sandbox, clean_docker):
    first = make_sandbox("reused")
    leave_traces(first)
    act(first, "destroy")
    second = make_sandbox("reused")
    assert second.status == "running", second.status_detail
    assert second.uuid != first.uuid and second.volume_name != first.volume_name
    assert not (second.workspace_path / "Projects" / "old.txt").exists()
    assert not home_has_secret(second)


def test_same_name_after_the_row_was_deleted_adopts_nothing(make_sandbox, clean_docker, team, test_image):
    first = make_sandbox("forgotten")
    leave_traces(first)
    Sandbox.objects.filter(pk=first.pk).delete()  # the row is gone; folder, volume and container stay
    with pytest.raises(services.InvalidInput, match="is in use"):
        services.sandbox_create(
            actor=ACTOR, team=team, name="forgotten", image=test_image, memory_mb=256, cpus=1, network_mode="none", enqueue=False
        )
    assert not Sandbox.objects.filter(name="forgotten").exists()
    # Moved out of the way by its owner, the name is free: the new sandbox still takes nothing old.
    first.workspace_path.rename(first.workspace_path.with_name("forgotten-old"))
    second = make_sandbox("forgotten")
    assert second.status == "error"
    assert "does not belong to this sandbox" in second.status_detail  # the old container is not taken over
    docker_cli("rm", "-f", first.container_id)
    second = act(second, "start")
    assert second.status == "running", second.status_detail
    assert not (second.workspace_path / "Projects" / "old.txt").exists()
    assert not home_has_secret(second)
    assert engine.engine_for().volume_exists(first.volume_name)  # the old home is left for its owner, untouched


def test_a_leftover_volume_is_not_adopted(make_sandbox, clean_docker):
    first = make_sandbox("volumed")
    leave_traces(first)
    act(first, "reset")
    Sandbox.objects.filter(pk=first.pk).delete()
    first.workspace_path.rename(first.workspace_path.with_name("volumed-old"))
    second = make_sandbox("volumed")
    assert second.status == "running" and second.volume_name != first.volume_name
    assert not home_has_secret(second)


def test_a_volume_squatting_the_sandboxes_volume_name_is_refused(make_sandbox, clean_docker, team, test_image):
    sandbox = services.sandbox_create(
        actor=ACTOR, team=team, name="squatted", image=test_image, memory_mb=256, cpus=1, network_mode="none", enqueue=False
    )
    docker_cli("volume", "create", "--label", "io.ccpanel.instance=test", sandbox.volume_name)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == "error" and "does not belong to this sandbox" in sandbox.status_detail


def test_clean_removes_only_this_sandboxes_images_and_never_evidence(make_sandbox, clean_docker, test_image):
    old = make_sandbox("imaged")
    docker_cli("commit", old.container_id, "ccpanel-test/imaged-old:1")  # a snapshot of the earlier sandbox
    act(old, "reset")
    Sandbox.objects.filter(pk=old.pk).delete()
    old.workspace_path.rename(old.workspace_path.with_name("imaged-old"))
    new = make_sandbox("imaged")
    docker_cli("commit", new.container_id, "ccpanel-test/imaged-snap:1")
    docker_cli("commit", "--change", "LABEL io.ccpanel.evidence=incident-1", new.container_id, "ccpanel-test/imaged-evidence:1")
    act(new, "clean")
    assert not engine.engine_for().image_exists("ccpanel-test/imaged-snap:1")
    assert engine.engine_for().image_exists("ccpanel-test/imaged-evidence:1")
    assert engine.engine_for().image_exists("ccpanel-test/imaged-old:1")  # another sandbox's, though it had the same name
    act(Sandbox.objects.get(pk=new.pk), "destroy")
    assert engine.engine_for().image_exists("ccpanel-test/imaged-evidence:1")


def test_sandbox_rows_cannot_be_deleted_in_the_admin(client, admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("kept")
    client.force_login(admin_user)
    assert client.get(f"/admin/sandboxes/sandbox/{sandbox.pk}/delete/").status_code == 403
    response = client.post("/admin/sandboxes/sandbox/", {"action": "delete_selected", "_selected_action": [sandbox.pk], "post": "yes"})
    assert Sandbox.objects.filter(pk=sandbox.pk).exists(), response.status_code
