"""Checkpoints that a rotation, a delete or a rollback must not lose, on the real pool: a
rollback's checkpoint of the present outlives the rotation that follows it, and nothing deletes
a checkpoint while a rollback runs or while an incident holds the sandbox."""

import pytest

from sandboxes import services
from sandboxes.models import Sandbox
from storage import services as storage
from storage.models import Checkpoint

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
ACTOR = services.SystemActor("test")


def test_a_rollbacks_checkpoint_of_the_present_is_kept_by_the_rotation_after_it(make_sandbox, clean_docker, settings):
    settings.SANDBOX_KEEP_CHECKPOINTS = 2
    sandbox = make_sandbox("undoable")
    first = storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="first")
    storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="second")
    before = storage.rollback(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), checkpoint=first)
    # Two checkpoints of the user's already filled the sandbox's two: the present's (what the
    # rollback threw away, returned to undo it with) was rotated away at once, its data lost.
    assert Checkpoint.objects.filter(pk=before.pk).exists() and storage.checkpoint_path(before).is_dir()
    assert Checkpoint.objects.filter(sandbox=sandbox, automatic=False).count() == 2
    # It can be rolled back to: the rollback is undone.
    storage.rollback(actor=ACTOR, sandbox=Sandbox.objects.get(pk=sandbox.pk), checkpoint=before)
    assert Sandbox.objects.get(pk=sandbox.pk).status == "running"


def test_nothing_deletes_a_checkpoint_while_a_rollback_runs_or_an_incident_holds_it(make_sandbox, clean_docker, settings):
    settings.SANDBOX_KEEP_CHECKPOINTS = 3
    sandbox = make_sandbox("guarded")
    made = [storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label=f"c{n}") for n in range(3)]

    # A rollback to the oldest is under way (its claim taken): a second worker's rotation, or a
    # change of the rule, must not delete the checkpoint it is copying from.
    Sandbox.objects.filter(pk=sandbox.pk).update(pending_action=Sandbox.Job.ROLLBACK)
    Sandbox.objects.filter(pk=sandbox.pk).update(checkpoint_keep_last=1)
    assert storage.rotate(Sandbox.objects.get(pk=sandbox.pk)) == 0
    with pytest.raises(storage.StorageError, match="being rolled back"):
        storage.checkpoint_delete(actor=ACTOR, checkpoint=made[0])
    assert all(storage.checkpoint_path(c).is_dir() for c in made) and Checkpoint.objects.filter(sandbox=sandbox).count() == 3

    # An incident holds it: the checkpoints are what it was before; an operator cannot delete them.
    Sandbox.objects.filter(pk=sandbox.pk).update(pending_action="", on_hold=True)
    with pytest.raises(storage.StorageError, match="held by an open incident"):
        storage.checkpoint_delete(actor=ACTOR, checkpoint=made[0])
    assert storage.checkpoint_path(made[0]).is_dir() and Checkpoint.objects.filter(pk=made[0].pk).exists()

    # Released, the delete and the rotation act again.
    Sandbox.objects.filter(pk=sandbox.pk).update(on_hold=False)
    storage.checkpoint_delete(actor=ACTOR, checkpoint=made[0])
    assert not storage.checkpoint_path(made[0]).exists()
    assert storage.rotate(Sandbox.objects.get(pk=sandbox.pk)) == 1
    assert [c.label for c in Checkpoint.objects.filter(sandbox=sandbox)] == ["c2"]
