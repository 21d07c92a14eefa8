"""The client's backup, checkpoint and standing-rule verbs against the panel served on loopback
(pytest-django's live server, the fake engine behind it; no worker: what needs one is in
test_lifecycle.py): each verb's effect is read from the database or the file it wrote."""

import hashlib
import json

import pytest

from backups import services as backups
from backups.models import Backup, BackupSchedule
from sandboxes.models import Sandbox
from storage.models import Checkpoint
from teams.models import Team
from tests.api.helpers import member, token_for
from tests.backups.helpers import backup_row, hostile_archive
from tests.backups.helpers import member as archive_member
from tests.backups.test_archive import CONFIG

from .test_cli import ccpanel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kept(live_server, django_user_model, team, make_sandbox, fake_engine, clean_workspace):
    """A sandbox with a finished backup whose file is there; an operator's operate token."""
    sandbox = make_sandbox("kept")
    path = backups.backup_root() / "kept-by-hand.tar.gz"
    sha256 = hostile_archive(path, [archive_member("workspace/Projects/a", b"a")], config={**CONFIG, "name": "kept"})
    backup = backup_row(sandbox, path, sha256, {**CONFIG, "name": "kept"})
    token = token_for(member(django_user_model, "olga", team, "operator"), "operate")
    yield live_server.url, token, sandbox, backup
    path.unlink(missing_ok=True)


def test_backups_are_listed_shown_and_downloaded_checked_by_their_sha256(kept, tmp_path, django_user_model):
    url, token, sandbox, backup = kept
    code, out, err = ccpanel("backup", "list", url=url, token=token)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:5] == ["ID", "SANDBOX", "TEAM", "KIND", "STATUS"]
    assert [line.split()[:2] for line in lines] == [[str(backup.pk), "kept"]]
    code, out, err = ccpanel("backup", "list", "--sandbox", "kept", "--status", "done", "--json", url=url, token=token)
    assert code == 0 and [b["id"] for b in json.loads(out)] == [backup.pk], err
    code, out, err = ccpanel("backup", "list", "--status", "failed", url=url, token=token)
    assert (code, out.strip()) == (0, "No backups."), err
    code, out, err = ccpanel("backup", "show", str(backup.pk), "--json", url=url, token=token)
    assert code == 0 and json.loads(out)["download"] == f"/api/v1/backups/{backup.pk}/download/"

    target = tmp_path / "copy.tar.gz"
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(target), url=url, token=token)
    assert code == 0, err
    assert target.read_bytes() == backup.path.read_bytes() and hashlib.sha256(target.read_bytes()).hexdigest() == backup.sha256
    assert backup.sha256 in err and token not in err
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(target), url=url, token=token)
    assert code == 1 and "exists" in err  # never overwritten unless asked
    target.write_bytes(b"old")
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(target), "--force", url=url, token=token)
    assert code == 0 and target.read_bytes() == backup.path.read_bytes(), err

    # A file that is not what the panel recorded is not kept.
    Backup.objects.filter(pk=backup.pk).update(sha256="0" * 64)
    other = tmp_path / "other.tar.gz"
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(other), url=url, token=token)
    assert code == 1 and "SHA-256" in err and not other.exists() and not (tmp_path / "other.tar.gz.part").exists()

    # A link planted at FILE.part is never written through (nor is a leftover .part taken over
    # unless asked), and the file is its owner's alone.
    Backup.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(backup.path.read_bytes()).hexdigest())
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "linked.tar.gz.part").symlink_to(victim)
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(tmp_path / "linked.tar.gz"), url=url, token=token)
    assert code == 1 and "exists" in err and victim.read_bytes() == b"precious" and not (tmp_path / "linked.tar.gz").exists()
    assert (tmp_path / "linked.tar.gz.part").is_symlink()  # not ours: left as it was
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(tmp_path / "linked.tar.gz"), "--force", url=url, token=token)
    assert code == 0 and victim.read_bytes() == b"precious", err
    written = tmp_path / "linked.tar.gz"
    assert written.read_bytes() == backup.path.read_bytes() and not written.is_symlink() and written.stat().st_mode & 0o077 == 0
    assert not (tmp_path / "linked.tar.gz.part").exists()

    # A folder where the file would go: said in a sentence (no traceback), nothing left behind.
    folder = tmp_path / "a-folder"
    (folder / "inside").mkdir(parents=True)
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(folder), "--force", url=url, token=token)
    assert code == 1 and f"Cannot write {folder}" in err and "Traceback" not in err, err
    assert (folder / "inside").is_dir() and not (tmp_path / "a-folder.part").exists()

    # A viewer may see it, not download it (as on the page).
    viewer = token_for(member(django_user_model, "vic", sandbox.team, "viewer"), "read")
    code, _out, err = ccpanel("backup", "download", str(backup.pk), "-o", str(tmp_path / "v.tar.gz"), url=url, token=viewer)
    assert code == 1 and not (tmp_path / "v.tar.gz").exists(), err
    code, _out, err = ccpanel("backup", "show", "999999", url=url, token=token)
    assert code == 1 and "No such backup." in err


def test_a_restore_into_its_own_sandbox_asks_for_its_name(kept):
    url, token, sandbox, backup = kept
    code, _out, err = ccpanel("backup", "restore", str(backup.pk), "--into", "self", url=url, token=token, stdin="not-it\n")
    assert code == 1 and "confirm_name" in err
    assert not backup.restores.exists()
    code, _out, err = ccpanel("backup", "restore", str(backup.pk), "--into", "new", url=url, token=token)
    assert code == 1 and "--name" in err


def test_the_daily_backup_is_shown_set_and_turned_off(kept):
    url, token, sandbox, _backup = kept
    run = lambda *a: ccpanel("sandbox", "schedule", "kept", *a, url=url, token=token)  # noqa: E731
    code, out, err = run()
    assert (code, out.strip()) == (0, "kept has no daily backup."), err
    code, _out, err = run("--keep-last", "3")
    assert code == 1 and "--at" in err and not BackupSchedule.objects.exists()
    code, _out, err = run("--at", "04:30", "--keep-last", "3")
    assert code == 0, err
    row = BackupSchedule.objects.get(sandbox=sandbox)
    assert row.enabled and row.at.strftime("%H:%M") == "04:30" and (row.keep_last, row.keep_days) == (3, None)
    code, out, err = run("--keep-days", "5", "--json")  # the others stay
    assert code == 0 and json.loads(out)["keep_last"] == 3 and json.loads(out)["keep_days"] == 5, err
    code, _out, err = run("--keep-last", "none")
    assert code == 0 and BackupSchedule.objects.get(sandbox=sandbox).keep_last is None, err
    code, _out, err = run("--keep-last", "0")
    assert code == 1 and "keep_last" in err
    code, _out, err = run("--off")
    assert code == 0, err
    row = BackupSchedule.objects.get(sandbox=sandbox)
    assert not row.enabled and row.keep_days == 5 and row.at.strftime("%H:%M") == "04:30"
    code, _out, err = run("--on")
    assert code == 0 and BackupSchedule.objects.get(sandbox=sandbox).enabled, err


def test_checkpoints_are_listed_taken_and_deleted_and_their_retention_set(kept):
    url, token, sandbox, _backup = kept
    old = Checkpoint.objects.create(sandbox=sandbox, snapshot="20260101-000000-old", label="before", created_by_name="test")
    Sandbox.objects.filter(pk=sandbox.pk).update(disk_group="0/4242")  # as if in the pool (the fast tier has none): listed
    code, _out, err = ccpanel("checkpoint", "list", url=url, token=token)
    assert code == 1 and "--sandbox" in err  # the list is a sandbox's
    code, out, err = ccpanel("checkpoint", "list", "--sandbox", "kept", url=url, token=token)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["ID", "LABEL", "SNAPSHOT"] and [line.split()[0] for line in lines] == [str(old.pk)]
    code, out, err = ccpanel("checkpoint", "show", str(old.pk), "--json", url=url, token=token)
    assert code == 0 and json.loads(out)["snapshot"] == old.snapshot, err
    code, _out, err = ccpanel("checkpoint", "delete", str(old.pk), url=url, token=token)
    assert code == 0 and not Checkpoint.objects.filter(pk=old.pk).exists(), err
    # Taking one needs the storage pool (the fast tier has none): refused with the panel's message.
    code, _out, err = ccpanel("sandbox", "checkpoint", "kept", "--label", "x", url=url, token=token)
    assert (code == 0) == Checkpoint.objects.filter(sandbox=sandbox, label="x").exists(), err

    run = lambda *a: ccpanel("sandbox", "retention", "kept", *a, url=url, token=token)  # noqa: E731
    code, out, err = run("--json")
    assert code == 0 and json.loads(out)["keep_last"] is None, err
    code, _out, err = run("--keep-last", "4")
    assert code == 0 and Sandbox.objects.get(pk=sandbox.pk).checkpoint_keep_last == 4, err
    code, _out, err = run("--keep-days", "9")
    box = Sandbox.objects.get(pk=sandbox.pk)
    assert code == 0 and (box.checkpoint_keep_last, box.checkpoint_keep_days) == (4, 9), err
    code, _out, err = run("--keep-last", "default", "--keep-days", "none")
    box = Sandbox.objects.get(pk=sandbox.pk)
    assert code == 0 and (box.checkpoint_keep_last, box.checkpoint_keep_days) == (None, None), err
    code, _out, err = run("--keep-last", "many")
    assert code == 1 and "--keep-last" in err
    assert Team.objects.filter(pk=sandbox.team_id).exists()
