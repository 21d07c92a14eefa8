"""The lifecycle services, fast: the real policy, workspace and database, with the in-memory
engine (tests/support/fakes.py). The integration tests run the same paths on the real engine."""

import os

import pytest

from audit.models import AuditEvent
from sandboxes import engine, services
from sandboxes.models import Sandbox
from tests.support.sandboxes import act

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(fake_engine, clean_workspace):
    return fake_engine


def test_a_sandbox_goes_through_its_whole_life(make_sandbox, fake):
    sandbox = make_sandbox("life")
    assert sandbox.status == "running" and fake.container_state(sandbox.container_id).status == "running"
    assert sorted(os.listdir(sandbox.workspace_path)) == sorted(
        [".ccpanel-sandbox", "Documentation", "Projects", "Research", "exports", "imports", "shared"]
    )
    sandbox = act(sandbox, "stop")
    assert sandbox.status == "stopped" and fake.container_state(sandbox.container_id).status == "exited"
    first_id = sandbox.container_id
    sandbox = act(sandbox, "start")
    assert sandbox.container_id == first_id  # unchanged settings: the same container is started again
    sandbox = act(act(sandbox, "pause"), "unpause")
    assert sandbox.status == "running"
    sandbox = act(sandbox, "reset")
    assert sandbox.status == "stopped" and sandbox.container_id == "" and not fake.containers
    sandbox = act(sandbox, "start")
    assert sandbox.container_id and sandbox.container_id != first_id
    sandbox = act(sandbox, "destroy")
    assert sandbox.status == "destroyed" and not fake.containers and sandbox.volume_name not in fake.volumes
    assert not sandbox.workspace_path.exists()
    done = list(
        AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action__endswith=".done").order_by("seq").values_list("action", flat=True)
    )
    assert done == [
        "sandbox.start.done",
        "sandbox.stop.done",
        "sandbox.start.done",
        "sandbox.pause.done",
        "sandbox.unpause.done",
        "sandbox.reset.done",
        "sandbox.start.done",
        "sandbox.destroy.done",
    ]


def test_a_folder_swapped_before_a_start_is_refused_and_audited(make_sandbox, fake, tmp_path):
    sandbox = act(make_sandbox("swapped"), "stop")
    projects = sandbox.workspace_path / "Projects"
    projects.rename(sandbox.workspace_path / "moved")
    os.symlink(tmp_path, projects)
    sandbox = act(sandbox, "start")
    assert sandbox.status == "error" and "symbolic link" in sandbox.status_detail
    assert fake.container_state(sandbox.container_id).status == "exited"  # never started
    assert AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.start.refused").exists()


def test_a_container_that_drifted_is_recreated_from_the_saved_settings(make_sandbox, fake):
    sandbox = act(make_sandbox("drift"), "stop")
    fake.containers[sandbox.container_id].spec = fake.containers[sandbox.container_id].spec.__class__(
        **{**fake.containers[sandbox.container_id].spec.__dict__, "pids_limit": 999999}
    )
    sandbox = act(sandbox, "start")
    assert sandbox.status == "running" and fake.containers[sandbox.container_id].spec.pids_limit != 999999


def test_docker_down_ends_the_action_in_error_with_the_reason(make_sandbox, fake):
    sandbox = make_sandbox("downed")
    fake.down = True
    sandbox = act(sandbox, "stop")
    assert sandbox.status == "error" and "not reachable" in sandbox.status_detail and not sandbox.pending_action


@pytest.mark.parametrize(
    "before, docker_status, exit_code, oom, expected",
    [
        ("running", "exited", 0, True, ("error", "out of memory (limit 256 MB)")),
        ("running", "exited", 3, False, ("error", "exited with code 3")),
        ("paused", "exited", 0, False, ("stopped", "The container exited.")),
        ("stopped", "running", 0, False, ("running", "")),
        ("running", "paused", 0, False, ("paused", "")),
        ("stopped", "exited", 143, False, None),  # stopped by the panel: nothing to correct
        ("error", "exited", 1, False, None),
    ],
)
def test_docker_state_maps_to_status(team, before, docker_status, exit_code, oom, expected):
    sandbox = Sandbox(name="m", team=team, memory_mb=256, status=before)
    state = engine.ContainerState(id="x", name="m", status=docker_status, exit_code=exit_code, oom_killed=oom, error="", labels={})
    observed = services.observed_status(sandbox, state)
    if expected is None:
        assert observed is None
    else:
        assert observed[0] == expected[0] and expected[1] in observed[1]


def test_a_folder_that_changed_identity_legitimately_can_be_reapproved_from_the_host(make_sandbox, fake):
    """A folder restored from a file-level backup (or a device number changed at boot) has a new
    identity: Start refuses until an admin on the host re-records it, under every rule of a create."""
    from io import StringIO

    from django.core.management import CommandError, call_command

    sandbox = act(make_sandbox("restored"), "stop")
    projects = sandbox.workspace_path / "Projects"
    projects.rename(sandbox.workspace_path / "old")
    projects.mkdir()
    os.chown(projects, 1000, 1000)
    assert act(sandbox, "start").status == "error"
    os.symlink("/etc", sandbox.workspace_path / "Research2")
    out = StringIO()
    call_command("sandbox", "reapprove", "restored", stdout=out)
    assert f"re-recorded {projects}" in out.getvalue()
    assert act(Sandbox.objects.get(pk=sandbox.pk), "start").status == "running"
    assert AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.folders_reapproved").exists()
    # Never for a running sandbox, and never for a folder that is a link.
    with pytest.raises(CommandError, match="must be stopped"):
        call_command("sandbox", "reapprove", "restored", stdout=StringIO())
    sandbox = act(Sandbox.objects.get(pk=sandbox.pk), "stop")
    (sandbox.workspace_path / "Research").rename(sandbox.workspace_path / "Research-old")
    (sandbox.workspace_path / "Research2").rename(sandbox.workspace_path / "Research")
    with pytest.raises(CommandError, match="symbolic link"):
        call_command("sandbox", "reapprove", "restored", stdout=StringIO())
