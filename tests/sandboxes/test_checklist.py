"""The live security checklist: it turns red for what it checks, on the real engine and disk, and
its manual items are ticked and audited. The credentials scanner reads a bounded amount."""

import os
import subprocess

import pytest

from audit.models import AuditEvent
from sandboxes import checklist, network, scanner, secrets, services
from sandboxes.models import ChecklistItem
from tests.support.docker import docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def results(sandbox) -> dict[str, tuple[bool | None, str]]:
    return {c.label: (c.ok, c.detail) for c in checklist.run_checks(sandbox)}


@pytest.fixture
def rules_back():
    yield
    network.apply()


def test_a_clean_sandbox_passes_and_each_fault_turns_its_check_red(make_sandbox, clean_docker, rules_back):
    sandbox = make_sandbox("checked")
    secrets.git_identity_set(actor=ACTOR, sandbox=sandbox, name="Agent", email="agent@example.com")
    found = results(sandbox)
    assert all(ok is not False for ok, _ in found.values()), found
    assert found["A backup younger than 24 hours exists"][0] is None  # no backup yet: not applicable
    assert sandbox.checklist_failed == 0

    # A private key planted in shared/, by the sandbox itself.
    docker_cli(
        "exec",
        sandbox.container_id,
        "sh",
        "-c",
        f"mkdir -p /workspace/shared/deep/er && printf '{PRIVATE_KEY}' > /workspace/shared/deep/er/notes.txt",
    )
    ok, detail = results(sandbox)["No credentials in shared/ or exports/"]
    assert ok is False and "shared/deep/er/notes.txt: a private key" in detail

    # Permissions loosened on the host.
    os.chmod(sandbox.workspace_path / "Projects", 0o777)
    ok, detail = results(sandbox)["Workspace folders are 755 and owned as the panel made them"]
    assert ok is False and "Projects is 777" in detail
    os.chmod(sandbox.workspace_path / "Projects", 0o755)

    # The egress rules deleted by hand.
    c = network.chains()
    subprocess.run(["iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input], check=True)
    ok, detail = results(sandbox)["The host's egress rules are in place"]
    assert ok is False and "INPUT" in detail
    network.apply()

    # The container changed outside the panel.
    docker_cli("update", "--pids-limit", "4096", sandbox.container_id)
    ok, detail = results(sandbox)["The container's real settings meet the policy"]
    assert ok is False and "saved settings" in detail

    sandbox.refresh_from_db()
    assert sandbox.checklist_failed == 2  # the planted key and the changed container remain


def test_manual_items_are_the_original_list_and_ticks_are_audited(client, admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("ticked")
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{sandbox.pk}/checklist/").content.decode()
    assert "Only install trusted packages" in page and "Stop container when not in use" in page
    item = ChecklistItem.objects.get(team=sandbox.team, text="Review code before execution")
    assert client.post(f"/sandboxes/{sandbox.pk}/checklist/", {"item": item.pk, "ticked": "1"}).status_code == 200
    assert sandbox.checklist_ticks.filter(item=item).exists()
    client.post(f"/sandboxes/{sandbox.pk}/checklist/", {"item": item.pk, "ticked": "0"})
    assert not sandbox.checklist_ticks.exists()
    actions = list(
        AuditEvent.objects.filter(target="ticked", action__startswith="checklist.").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["checklist.ticked", "checklist.unticked"]
    dashboard = client.get("/").content.decode()
    assert "checklist" in dashboard and f"/sandboxes/{sandbox.pk}/#checklist-card" in dashboard


def test_the_scanner_finds_credentials_by_name_and_content_and_stops_at_its_caps(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("X=1\n")
    (tmp_path / "a.txt").write_text("key = AKIAABCDEFGHIJKLMNOP\n")
    (tmp_path / "b.txt").write_text("nothing here\n")
    (tmp_path / "big.log").write_bytes(b"x" * (scanner.MAX_BYTES_PER_FILE + 10) + b"sk-ant-" + b"a" * 40)  # past the per-file cap
    os.symlink("/etc/shadow", tmp_path / "link.txt")  # never followed
    os.mkfifo(tmp_path / "pipe")  # never opened
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    result = scanner.scan_folder(fd, "shared")
    assert sorted(result.findings) == [("shared/.env", "an environment file"), ("shared/a.txt", "an AWS access key")]
    assert result.truncated  # big.log was read only in part, and says so
    monkeypatch.setattr(scanner, "MAX_FILES", 2)
    result = scanner.scan_folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), "shared")
    assert result.truncated and result.files <= 2


def test_the_scanner_stops_at_its_depth_cap(tmp_path):
    """Found by review: a walk holds a descriptor per level; a sandbox may nest folders without end."""
    deep = tmp_path
    for _ in range(scanner.MAX_DEPTH + 20):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / ".env").write_text("X=1\n")  # below the cap: not read, and the scan says so
    result = scanner.scan_folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), "shared")
    assert result.truncated and result.findings == []


def test_a_held_sandbox_keeps_its_network(make_sandbox, fake_engine, clean_workspace):
    """Found by review: an open incident holds the sandbox; its network changes only through it."""
    from sandboxes.models import Sandbox

    s = make_sandbox("held-net", network_mode="none")
    Sandbox.objects.filter(pk=s.pk).update(on_hold=True)
    s.refresh_from_db()
    with pytest.raises(services.SandboxError, match="held by an open incident"):
        services.sandbox_set_network(actor=ACTOR, sandbox=s, mode="internet")
    assert Sandbox.objects.get(pk=s.pk).network_mode == "none"
