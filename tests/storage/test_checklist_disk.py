"""The checklist's disk check: a sandbox in the pool is warned at SANDBOX_DISK_WARN_PERCENT of its
quota (and not below it); without a pool it says plainly "no disk quota"; and a sandbox with a
writable root file system is told whether its container layer is bounded, as Docker says."""

import html
import json

import pytest

from sandboxes import checklist
from sandboxes.models import Sandbox
from tests.storage.test_pool import sh
from tests.support.docker import docker_cli

LABEL = "The sandbox's disk use is bounded"


def disk_check(sandbox: Sandbox) -> checklist.Check:
    return next(c for c in checklist.run_checks(sandbox) if c.label == LABEL)


def fill(sandbox: Sandbox, name: str, mb: int) -> None:
    done = sh(sandbox, f"dd if=/dev/urandom of=/workspace/Projects/{name} bs=1M count={mb} 2>&1 && sync && echo ok")
    assert done.stdout.strip().endswith("ok"), done


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_sandbox_past_90_percent_of_its_quota_is_warned_and_not_below(make_sandbox, clean_docker, client, admin_user):
    sandbox = make_sandbox("nearfull", disk_mb=100)
    assert sandbox.in_pool
    fill(sandbox, "a", 80)
    below = disk_check(sandbox)
    assert below.ok is True, below
    assert "of 100 MB used" in below.detail and "nearly full" not in below.detail
    percent = int(below.detail.split("(")[1].split(" %")[0])
    assert 80 <= percent < 90, below.detail
    failed_below = Sandbox.objects.get(pk=sandbox.pk).checklist_failed  # others may fail (no git identity): not this one

    fill(sandbox, "b", 12)
    past = disk_check(sandbox)
    assert past.ok is False and "nearly full" in past.detail, past
    assert 90 <= int(past.detail.split("(")[1].split(" %")[0]) <= 100, past.detail
    assert Sandbox.objects.get(pk=sandbox.pk).checklist_failed == failed_below + 1  # the dashboard's badge counts it
    # The sandbox's page shows it (its checklist card renders the same check).
    client.force_login(admin_user)
    page = html.unescape(client.get(f"/sandboxes/{sandbox.pk}/checklist/").content.decode())
    assert LABEL in page and "nearly full" in page

    # Freed again, the warning goes.
    sh(sandbox, "rm /workspace/Projects/b; sync")
    assert disk_check(sandbox).ok is True


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_without_a_pool_it_says_no_disk_quota_and_whether_the_container_layer_is_bounded(make_sandbox, clean_docker, settings):
    settings.STORAGE_POOL = "none"
    plain = make_sandbox("plainroot", writable_root=True)
    assert not plain.in_pool
    data = json.loads(docker_cli("inspect", plain.container_id).stdout)[0]
    driver, size = data["GraphDriver"]["Name"], (data["HostConfig"].get("StorageOpt") or {}).get("size")
    found = disk_check(plain)
    assert found.ok is False and found.detail.startswith("no disk quota"), found
    # What it says of the container layer is what Docker says of it.
    if size:
        assert f"is bounded to {size} by Docker's {driver} storage driver" in found.detail, found
    else:
        assert data["HostConfig"]["ReadonlyRootfs"] is False
        assert f"is not bounded: Docker's {driver} storage driver was given no size" in found.detail, found
    # And it is true: its root takes more than the smallest quota would allow (root in the
    # container owns /var; uid 1000 has nowhere to write there in the test image).
    done = sh(plain, "dd if=/dev/zero of=/var/fill bs=1M count=80 2>&1 && echo ok; rm -f /var/fill", user="0")
    if not size:
        assert done.stdout.strip().endswith("ok"), done

    # A read-only root has no container layer to speak of.
    sealed = make_sandbox("plainsealed")
    found = disk_check(sealed)
    assert found.ok is False and found.detail.startswith("no disk quota") and "container layer" not in found.detail, found


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_in_the_pool_a_writable_root_is_told_its_layer_is_outside_the_quota(make_sandbox, clean_docker):
    sandbox = make_sandbox("poolroot", disk_mb=200, writable_root=True)
    driver = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]["GraphDriver"]["Name"]
    found = disk_check(sandbox)
    assert found.ok is True and "of 200 MB used" in found.detail, found
    assert f"is not bounded: Docker's {driver} storage driver" in found.detail, found
    sealed = make_sandbox("poolsealed", disk_mb=200)
    assert "container layer" not in disk_check(sealed).detail


@pytest.mark.django_db
def test_the_fast_tier_says_the_same_from_the_fake_engine(make_sandbox, fake_engine, clean_workspace):
    """No pool (the fast tier has none): "no disk quota", and the layer as the engine reports it."""
    sandbox = make_sandbox("fastroot", writable_root=True)
    found = disk_check(sandbox)
    assert found.ok is False and found.detail.startswith("no disk quota")
    assert "is not bounded: Docker's overlay2 storage driver was given no size for it" in found.detail

    # A container given a size (made outside the panel, or by a later version) is reported bounded.
    real = fake_engine.inspect_container

    def sized(container_id):
        data = real(container_id)
        data["HostConfig"]["StorageOpt"] = {"size": "20G"}
        return data

    fake_engine.inspect_container = sized
    assert "is bounded to 20G by Docker's overlay2 storage driver" in disk_check(sandbox).detail
    fake_engine.down = True
    assert "is not known: Docker did not answer" in disk_check(sandbox).detail


@pytest.mark.django_db
def test_a_writable_extra_mount_is_named_as_outside_any_quota(make_sandbox, fake_engine, clean_workspace, mount_root):
    """An extra mount of a host folder (under SANDBOX_MOUNT_ROOTS) is outside the storage pool:
    what the agent writes there no quota bounds, and the check says so (a read-only one is
    not named)."""
    (mount_root / "data").mkdir()
    (mount_root / "ref").mkdir()
    sandbox = make_sandbox(
        "mounted", extra_mounts=[(str(mount_root / "data"), "/workspace/data", False), (str(mount_root / "ref"), "/mnt/ref", True)]
    )
    found = disk_check(sandbox)
    assert "what it writes in /workspace/data (extra mounts of host folders, writable) is on the host's disk" in found.detail, found
    assert "/mnt/ref" not in found.detail
    assert "/workspace/data" not in disk_check(make_sandbox("plain")).detail
