"""The whole lifecycle through the web layer and a real Celery worker, on the real engine."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import engine
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def inspect(container_id: str) -> dict:
    return json.loads(docker_cli("inspect", container_id).stdout)[0]


def wait_status(pk: int, status: str, timeout: float = 60) -> Sandbox:
    def settled():
        s = Sandbox.objects.get(pk=pk)
        return s if s.status == status and not s.pending_action else None

    return wait_for(settled, timeout=timeout, what=f"sandbox {pk} to be {status}")


def post_action(client, sandbox: Sandbox, action: str, **data):
    response = client.post(f"/sandboxes/{sandbox.pk}/{action}/", data)
    assert response.status_code == 302, response.content


def assert_hardened(data: dict, *, network: str):
    host = data["HostConfig"]
    assert data["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["MemorySwap"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == settings.SANDBOX_PIDS_LIMIT
    assert host["NetworkMode"] == network
    assert host["PidMode"] == "" and host["UTSMode"] == "" and host["UsernsMode"] == ""
    assert host["IpcMode"] in ("private", "shareable")
    assert not host["Devices"]
    assert not host["PortBindings"]
    assert data["Config"]["Labels"]["io.ccpanel.managed"] == "true"
    mounts = {m["Destination"]: m for m in data["Mounts"]}
    for folder in ("Projects", "Documentation", "Research", "shared", "exports"):
        assert mounts[f"/workspace/{folder}"]["RW"] is True
    assert mounts["/workspace/imports"]["RW"] is False
    assert mounts["/home/claude"]["Type"] == "volume"
    assert not any(m.get("Source", "").endswith("docker.sock") for m in data["Mounts"])


def test_lifecycle_create_stop_reset_destroy(client, admin_user, team, celery_worker, clean_docker, test_image):
    client.force_login(admin_user)
    response = client.post(
        "/sandboxes/new/",
        {
            "name": "life",
            "team": team.pk,
            "image": test_image,
            "memory_mb": 256,
            "cpus": "1",
            "network_mode": "internet",
            "extra_mounts": "",
        },
    )
    assert response.status_code == 302, response.content.decode()
    sandbox = wait_status(Sandbox.objects.get(name="life").pk, "running")

    # Every hardening setting, read back from Docker.
    data = inspect(sandbox.container_id)
    assert data["State"]["Running"] is True
    assert_hardened(data, network=settings.SANDBOX_NETWORK)
    net = engine.engine_for().inspect_network(settings.SANDBOX_NETWORK)
    assert net["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert net["IPAM"]["Config"][0]["Subnet"] == settings.SANDBOX_SUBNET
    workspace = Path(settings.WORKSPACE_ROOT) / "life"
    assert sorted(p.name for p in workspace.iterdir()) == sorted(
        [".ccpanel-sandbox", "Projects", "Documentation", "Research", "shared", "imports", "exports", "home"]
    )
    # In the storage pool: a subvolume of its own, its home volume bound to home/ inside it.
    assert workspace.stat().st_ino == 256 and sandbox.disk_group.startswith("1/")
    volume = json.loads(docker_cli("volume", "inspect", sandbox.volume_name).stdout)[0]
    assert volume["Options"] == {"type": "none", "o": "bind", "device": str(workspace / "home")}
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo mine > /home/claude/h.txt")
    assert (workspace / "home" / "h.txt").read_text() == "mine\n"
    assert (workspace / ".ccpanel-sandbox").read_text().strip() == str(sandbox.uuid)
    assert all((workspace / p).stat().st_mode & 0o777 == 0o755 for p in ["", "Projects", "imports"])
    # The sandbox's own folder is root's: nothing inside can rename its mount points.
    assert (workspace.stat().st_uid, workspace.stat().st_gid) == (0, 0)
    assert all((workspace / p).stat().st_uid == 1000 for p in ["Projects", "imports", "exports"])

    # The agent's work lands on the host.
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo kept > /workspace/Projects/notes.txt")
    assert (workspace / "Projects" / "notes.txt").read_text() == "kept\n"

    post_action(client, sandbox, "stop")
    sandbox = wait_status(sandbox.pk, "stopped")
    assert inspect(sandbox.container_id)["State"]["Running"] is False

    old_id = sandbox.container_id
    post_action(client, sandbox, "reset")
    sandbox = wait_status(sandbox.pk, "stopped")
    assert sandbox.container_id == ""
    assert docker_cli("inspect", old_id, check=False).returncode != 0
    assert (workspace / "Projects" / "notes.txt").read_text() == "kept\n"
    assert engine.engine_for().volume_exists(sandbox.volume_name)

    post_action(client, sandbox, "start")
    sandbox = wait_status(sandbox.pk, "running")
    assert sandbox.container_id and sandbox.container_id != old_id
    assert docker_cli("exec", sandbox.container_id, "cat", "/workspace/Projects/notes.txt").stdout == "kept\n"

    # Destroy needs the name typed; a wrong one changes nothing.
    post_action(client, sandbox, "destroy", confirm_name="nope")
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"
    post_action(client, sandbox, "destroy", confirm_name="life")
    sandbox = wait_status(sandbox.pk, "destroyed")
    assert docker_cli("inspect", sandbox.container_id, check=False).returncode != 0
    assert not engine.engine_for().volume_exists(sandbox.volume_name)
    assert not workspace.exists()

    actions = list(AuditEvent.objects.filter(target="life").order_by("id").values_list("action", "actor_name", "source_ip"))
    requested = [a for a in actions if a[1] == "admin"]
    assert [a[0] for a in requested] == ["sandbox.create", "sandbox.stop", "sandbox.reset", "sandbox.start", "sandbox.destroy"]
    assert all(a[2] == "127.0.0.1" for a in requested)
    assert ("sandbox.destroy.done", "system", None) in actions


def test_none_network_mode_has_no_network(client, admin_user, team, celery_worker, clean_docker, test_image):
    client.force_login(admin_user)
    client.post(
        "/sandboxes/new/", {"name": "offline", "team": team.pk, "image": test_image, "memory_mb": 256, "cpus": "1", "network_mode": "none"}
    )
    sandbox = wait_status(Sandbox.objects.get(name="offline").pk, "running")
    data = inspect(sandbox.container_id)
    assert data["HostConfig"]["NetworkMode"] == "none"
    links = docker_cli("exec", sandbox.container_id, "ls", "/sys/class/net").stdout.split()
    assert links == ["lo"]


def test_pause_unpause_restart(client, admin_user, team, celery_worker, clean_docker, make_sandbox):
    sandbox = make_sandbox("pausy")
    client.force_login(admin_user)
    post_action(client, sandbox, "pause")
    wait_status(sandbox.pk, "paused")
    assert inspect(sandbox.container_id)["State"]["Paused"] is True
    post_action(client, sandbox, "unpause")
    wait_status(sandbox.pk, "running")
    started = inspect(sandbox.container_id)["State"]["StartedAt"]
    post_action(client, sandbox, "restart")
    wait_status(sandbox.pk, "running")
    assert inspect(sandbox.container_id)["State"]["StartedAt"] != started


def test_detail_page_shows_settings_output_and_destroy_form(client, admin_user, make_sandbox, clean_docker):
    running = make_sandbox("shared-box")
    docker_cli("exec", running.container_id, "sh", "-c", "echo visible-output > /proc/1/fd/1; echo to-stderr > /proc/1/fd/2")
    client.force_login(admin_user)
    html = client.get(f"/sandboxes/{running.pk}/").content.decode()
    assert str(running.workspace_path) in html and running.volume_name in html
    for socket in ("logs", "stats", "terminal"):
        assert f'/ws/sandboxes/{running.pk}/{socket}/"' in html
    download = client.get(f"/sandboxes/{running.pk}/logs/download/")
    body = b"".join(download.streaming_content).decode()
    assert download["Content-Disposition"].startswith('attachment; filename="shared-box-output-')
    assert " stdout visible-output\n" in body and " stderr to-stderr\n" in body
    assert 'name="confirm_name"' in html
    assert f'/ws/sandboxes/{running.pk}/"' in html
    assert "✗" not in html and html.count("✓") == 18
