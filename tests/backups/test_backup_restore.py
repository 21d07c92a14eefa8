"""Backups and restores against the real engine: every file comes back with an equal sha256
(the home volume included), the archive verifies, and the sandbox's folders keep the identity
its start check expects."""

import hashlib
import os
import subprocess
from datetime import time

import pytest
from django.conf import settings

from audit.models import AuditEvent
from backups import archive, services
from backups.models import Backup, Restore
from sandboxes import policy
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox
from tests.backups.helpers import backup_row, home_hashes, hostile_archive, member, workspace_hashes, write_home
from tests.backups.test_archive import REASONS, cases
from tests.support.docker import docker_cli

pytestmark = pytest.mark.docker
ACTOR = sandbox_services.SystemActor("test")


def fill(sandbox: Sandbox) -> None:
    base = sandbox.workspace_path
    (base / "Projects" / "app").mkdir()
    (base / "Projects" / "app" / "main.py").write_text("print('hello')\n" * 100)
    (base / "Projects" / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (base / "Projects" / "app" / "link").symlink_to("main.py")
    (base / "Documentation" / "notes é.md").write_text("naïve notes\n")
    (base / "exports" / "empty").write_bytes(b"")
    write_home(sandbox, "mkdir -p ~/.config/tool && echo secret-config > ~/.config/tool/conf && head -c 100000 /dev/urandom > ~/cache.bin")


def back_up(sandbox: Sandbox, kind: str = Backup.Kind.MANUAL) -> Backup:
    backup = services.backup_request(actor=ACTOR, sandbox=sandbox, kind=kind, enqueue=False)
    services.backup_perform(backup_id=backup.pk)
    backup.refresh_from_db()
    return backup


def test_backup_then_destroy_the_data_then_restore_brings_every_file_back(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("keeper")
    fill(sandbox)
    files_before, home_before = workspace_hashes(sandbox), home_hashes(sandbox)
    assert "Projects/blob.bin" in files_before and ".config/tool/conf" in home_before

    backup = back_up(sandbox)
    assert backup.status == Backup.Status.DONE, backup.detail
    assert backup.path.exists() and backup.path.name.startswith("keeper-") and backup.path.name.endswith(".tar.gz")
    assert hashlib.sha256(backup.path.read_bytes()).hexdigest() == backup.sha256
    assert oct(backup.path.stat().st_mode & 0o777) == "0o600" and oct(settings.BACKUP_ROOT.stat().st_mode & 0o777) == "0o700"
    # `tar` reads it as one archive (it is a multi-member gzip), with the manifest last.
    listing = subprocess.run(["tar", "tzf", str(backup.path)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[-1] == "manifest.json" and "workspace/Projects/blob.bin" in listing and "home/.config/tool/conf" in listing
    checked = archive.verify(str(backup.path))
    assert checked.ok, checked.problems
    sandbox.refresh_from_db()
    assert sandbox.pending_action == "" and sandbox.status == Sandbox.Status.RUNNING

    # Destroy the data: every file in the folders, and the home's.
    for folder in ("Projects", "Documentation", "exports"):
        subprocess.run(f"rm -rf {sandbox.workspace_path / folder}/*", shell=True, check=True)
    write_home(sandbox, "rm -rf ~/.config ~/cache.bin && echo junk > ~/after-backup")
    assert workspace_hashes(sandbox) == {}
    identities = {p: tuple(c[-1]) for p, c in sandbox.host_path_ids.items()}

    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    sandbox.refresh_from_db()
    assert restore.status == Restore.Status.DONE, restore.detail
    assert sandbox.status == Sandbox.Status.STOPPED and sandbox.pending_action == "" and sandbox.container_id == ""
    assert workspace_hashes(sandbox) == files_before
    restored_home = home_hashes(sandbox)
    assert {k: v for k, v in restored_home.items() if k in home_before} == home_before
    assert "after-backup" not in restored_home  # the home is the backup's, not a merge
    # The folders are the very ones recorded at create: the next start accepts them.
    for path, identity in identities.items():
        st = os.stat(path)
        assert (st.st_dev, st.st_ino) == identity
    assert (sandbox.workspace_path / "Projects" / "app" / "link").is_symlink()
    assert os.stat(sandbox.workspace_path / "Projects" / "blob.bin").st_uid == settings.SANDBOX_UID
    # What was there before the restore was backed up first.
    assert restore.safety_backup is not None and restore.safety_backup.kind == Backup.Kind.PRE_RESTORE
    assert restore.safety_backup.status == Backup.Status.DONE and restore.safety_backup.path.exists()

    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="start", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING, sandbox.status_detail
    actions = list(AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid).values_list("action", flat=True))
    assert {"backup.requested", "backup.done", "backup.restore_requested", "backup.restored"} <= set(actions)


def test_restore_into_a_new_sandbox_takes_the_backups_settings(make_sandbox, team, clean_docker, clean_workspace):
    sandbox = make_sandbox("origin", memory_mb=300)
    fill(sandbox)
    files_before, home_before = workspace_hashes(sandbox), home_hashes(sandbox)
    backup = back_up(sandbox)

    restore = services.restore_request(actor=ACTOR, backup=backup, new_name="copy", team=team, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    copy = Sandbox.objects.get(name="copy")
    assert restore.status == Restore.Status.DONE, restore.detail
    assert copy.status == Sandbox.Status.STOPPED and copy.memory_mb == 300 and copy.uuid != sandbox.uuid
    assert {k.replace("copy/", ""): v for k, v in workspace_hashes(copy).items()} == files_before
    assert {k: v for k, v in home_hashes(copy).items() if k in home_before} == home_before
    assert workspace_hashes(sandbox) == files_before  # the original is untouched


def test_verify_finds_a_changed_archive(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("checked")
    fill(sandbox)
    backup = back_up(sandbox)
    assert services.backup_verify(backup=backup).verified_ok is True
    data = bytearray(backup.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.path.write_bytes(bytes(data))
    verified = services.backup_verify(backup=backup)
    assert verified.verified_ok is False and verified.verify_detail


def test_a_full_disk_fails_cleanly_and_leaves_no_partial_file(make_sandbox, clean_docker, clean_workspace, tmp_path, settings):
    sandbox = make_sandbox("bigone")
    (sandbox.workspace_path / "Projects" / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        (small / "earlier.tar.gz").write_bytes(b"an earlier backup")
        settings.BACKUP_ROOT = small
        backup = back_up(sandbox)
        assert backup.status == Backup.Status.FAILED
        assert "full" in backup.detail
        assert sorted(os.listdir(small)) == ["earlier.tar.gz"]  # no partial file, the earlier one intact
        assert (small / "earlier.tar.gz").read_bytes() == b"an earlier backup"
        sandbox.refresh_from_db()
        assert sandbox.pending_action == "" and sandbox.status == Sandbox.Status.RUNNING
        assert AuditEvent.objects.filter(action="backup.failed", sandbox_uuid=sandbox.uuid).exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_rotation_keeps_the_newest_scheduled_backups_and_every_other_kind(
    make_sandbox, clean_docker, clean_workspace, django_capture_on_commit_callbacks
):
    sandbox = make_sandbox("rotated")
    services.schedule_set(actor=ACTOR, sandbox=sandbox, enabled=True, at=time(3, 0), keep_last=2, keep_days=None)
    manual = back_up(sandbox, Backup.Kind.MANUAL)
    with django_capture_on_commit_callbacks(execute=True):
        scheduled = [back_up(sandbox, Backup.Kind.SCHEDULED) for _ in range(3)]
    kept = set(Backup.objects.filter(sandbox=sandbox).values_list("pk", flat=True))
    assert kept == {manual.pk, scheduled[1].pk, scheduled[2].pk}
    assert not scheduled[0].path.exists() and manual.path.exists()


VALID = {"name": "victim", "image": "ccpanel/test-busybox:latest", "memory_mb": 256, "cpus": "1", "network_mode": "internet", "mounts": []}


def planted(sandbox: Sandbox, members, config=VALID) -> Backup:
    """A backup row for an archive written by hand (as if the file under BACKUP_ROOT was swapped
    with its recorded hash, or imported from elsewhere)."""
    path = services.backup_root() / f"{sandbox.name}-planted.tar.gz"
    return backup_row(sandbox, path, hostile_archive(path, members, config=config), config)


@pytest.mark.parametrize("case", list(REASONS))
def test_each_hostile_archive_is_refused_and_the_sandbox_keeps_its_files(
    case, make_sandbox, clean_docker, clean_workspace, tmp_path, settings
):
    sandbox = make_sandbox("victim")
    keep = sandbox.workspace_path / "Projects" / "keep.txt"
    keep.write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    settings.RESTORE_MAX_MEMBERS, settings.RESTORE_MAX_BYTES = 5, 1024
    backup = planted(sandbox, cases(outside)[case])
    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    sandbox.refresh_from_db()
    assert restore.status == Restore.Status.REFUSED and REASONS[case] in restore.detail
    assert os.listdir(outside) == []
    assert keep.read_text() == "mine" and sorted(os.listdir(sandbox.workspace_path / "Projects")) == ["keep.txt"]
    assert sandbox.status == Sandbox.Status.RUNNING and sandbox.pending_action == ""
    assert not (settings.WORKSPACE_ROOT / f".restore-{restore.pk}").exists()
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "true"
    assert AuditEvent.objects.filter(action="backup.restore_refused", sandbox_uuid=sandbox.uuid).exists()


def test_an_archive_changed_since_it_was_made_is_refused(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("swapped")
    backup = back_up(sandbox)
    (sandbox.workspace_path / "Projects" / "now.txt").write_text("now")
    hostile_archive(backup.path, [member("workspace/Projects/other.txt", b"other")], config=VALID)  # same name, new content
    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == Restore.Status.REFUSED and "sha256 differs" in restore.detail
    assert (sandbox.workspace_path / "Projects" / "now.txt").read_text() == "now"
    assert not (sandbox.workspace_path / "Projects" / "other.txt").exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"mounts": [{"host_path": "/", "container_path": "/mnt/root", "read_only": False}]},
        {"mounts": [{"host_path": "/var/run/docker.sock", "container_path": "/mnt/docker.sock", "read_only": True}]},
        {"memory_mb": 10**9},
        {"image": "evil image; rm -rf /"},
        {"network_mode": "host"},
        {"mounts": "not a list"},
    ],
)
def test_a_manifest_asking_for_what_the_policy_refuses_is_refused(bad, make_sandbox, team, clean_docker, clean_workspace):
    sandbox = make_sandbox("strict")
    config = {**VALID, "name": "strict", **bad}
    backup = planted(sandbox, [member("workspace/Projects/a.txt", b"a")], config=config)
    # Into a new sandbox: refused at once; no sandbox is made.
    with pytest.raises((policy.PolicyViolation, sandbox_services.InvalidInput)):
        services.restore_request(actor=ACTOR, backup=backup, new_name="evil-copy", team=team, enqueue=False)
    assert not Sandbox.objects.filter(name="evil-copy").exists()
    # Into the sandbox itself: refused by the task, before anything changes.
    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == Restore.Status.REFUSED and "policy refuses" in restore.detail
    assert not (sandbox.workspace_path / "Projects" / "a.txt").exists()


def test_a_folder_tree_deeper_than_any_limit_is_backed_up_restored_and_destroyed(make_sandbox, clean_docker, clean_workspace):
    sandbox = make_sandbox("deep")
    write_home(sandbox, "cd /workspace/Projects && i=0; while [ $i -lt 1100 ]; do mkdir d && cd d; i=$((i+1)); done; echo bottom > f")
    (sandbox.workspace_path / "Documentation" / "keep.md").write_text("kept")
    backup = back_up(sandbox)
    assert backup.status == Backup.Status.DONE, backup.detail
    assert any("deeper than 512 folders" in s for s in archive.verify(str(backup.path)).manifest["skipped"])
    (sandbox.workspace_path / "Documentation" / "keep.md").write_text("changed")
    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=sandbox, enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == Restore.Status.DONE, restore.detail
    assert (sandbox.workspace_path / "Documentation" / "keep.md").read_text() == "kept"
    sandbox_services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action="destroy", enqueue=False)
    sandbox_services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.DESTROYED and sandbox.status_detail == ""
    assert not sandbox.workspace_path.exists()


def test_a_file_linked_many_times_is_backed_up_once_and_restored_within_the_quota_s_room(make_sandbox, clean_docker, clean_workspace):
    """A backup archives a hard link as a link (a file of the quota's size linked thousands of
    times made an archive of thousands of quotas), yet records what the archive unpacks to,
    so that a restore, which makes every link a copy, is given the room for them."""
    sandbox = make_sandbox("linked", disk_mb=200)
    assert sandbox.in_pool
    projects = sandbox.workspace_path / "Projects"
    data = os.urandom(20 * 1024 * 1024)
    (projects / "big.bin").write_bytes(data)
    for n in range(4):
        os.link(projects / "big.bin", projects / f"again{n}")
    backup = back_up(sandbox)
    assert backup.status == Backup.Status.DONE, backup.detail
    assert backup.path.stat().st_size < 2 * len(data)  # one copy of the data, not five
    assert backup.data_bytes >= 5 * len(data)

    for n in range(4):
        (projects / f"again{n}").unlink()
    (projects / "big.bin").write_bytes(b"changed")
    restore = services.restore_request(actor=ACTOR, backup=backup, sandbox=Sandbox.objects.get(pk=sandbox.pk), enqueue=False)
    services.restore_perform(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == Restore.Status.DONE, restore.detail
    for name in ("big.bin", *(f"again{n}" for n in range(4))):
        assert (projects / name).read_bytes() == data, name
