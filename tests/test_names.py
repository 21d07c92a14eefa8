"""No name the panel takes may hold a bidirectional control character: "\u202egnp.exe" would show
as "exe.png" in a listing, a message or the audit trail. Each is refused with a message that
names the character, and nothing changes."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from sandboxes import secrets
from sandboxes.models import Identity
from sandboxes.services import InvalidInput, SystemActor, transfer
from storage import services as storage
from storage.models import Checkpoint
from teams.models import Team

pytestmark = pytest.mark.django_db

ACTOR = SystemActor("test")
# RLO (the one of the example), RLI, LRM, ALM, PDF: Unicode's Bidi_Control characters, a few.
BIDI = ["\u202egnp.exe", "a\u2067b", "x\u200ey", "\u061cname", "z\u202c"]


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("names")


@pytest.mark.parametrize("name", BIDI)
def test_an_upload_named_with_a_bidi_control_is_refused(admin_client, box, name):
    data = {"file": SimpleUploadedFile("ok.txt", b"data"), "name": name}
    page = admin_client.post(f"/sandboxes/{box.pk}/transfer/upload/", data, follow=True).content.decode()
    assert "Upload refused: A file name may not contain U+" in page and "changes the direction" in page
    assert list((box.workspace_path / "imports").iterdir()) == []
    with pytest.raises(transfer.TransferError, match="changes the direction"):
        transfer.upload(actor=ACTOR, sandbox=box, name=name, source=io.BytesIO(b"x"))
    assert not AuditEvent.objects.filter(action="transfer.upload").exists()


@pytest.mark.parametrize("name", BIDI)
def test_a_git_name_with_a_bidi_control_is_refused(box, name):
    with pytest.raises(InvalidInput) as refused:
        secrets.git_identity_set(actor=ACTOR, sandbox=box, name=name, email="agent@example.com")
    assert "changes the direction" in str(refused.value.errors["git_name"])
    assert not Identity.objects.filter(sandbox=box).exclude(git_name="").exists()


@pytest.mark.parametrize("label", BIDI)
def test_a_checkpoint_label_with_a_bidi_control_is_refused(box, label):
    with pytest.raises(storage.StorageError, match="changes the direction"):
        storage.checkpoint_create(actor=ACTOR, sandbox=box, label=label)
    assert not Checkpoint.objects.exists()


@pytest.mark.parametrize("name", BIDI)
def test_a_team_name_with_a_bidi_control_is_refused(admin_client, team, name):
    response = admin_client.post("/admin/teams/team/add/", {"name": name, "slug": "new", **EMPTY_INLINE})
    page = response.content.decode()
    assert response.status_code == 200 and "changes the direction" in page
    assert 'name="require_second_factor"' in page  # the form is the model's whole, with this one rule more
    assert list(Team.objects.values_list("slug", flat=True)) == [team.slug]


EMPTY_INLINE = {
    "memberships-TOTAL_FORMS": "0",
    "memberships-INITIAL_FORMS": "0",
    "memberships-MIN_NUM_FORMS": "0",
    "memberships-MAX_NUM_FORMS": "1000",
}
