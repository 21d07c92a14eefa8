"""With Redis (the task queue) down, an action says so and leaves nothing half-done."""

import pytest

from backups import services as backups
from backups.models import Backup, Restore
from sandboxes import health
from sandboxes.models import Sandbox

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_create_and_stop_with_queue_down(client, admin_user, team, make_sandbox, clean_docker, test_image, broker_down):
    running = make_sandbox("up")
    client.force_login(admin_user)
    response = client.post(
        "/sandboxes/new/",
        {"name": "queued", "team": team.pk, "image": test_image, "memory_mb": 256, "cpus": "1", "network_mode": "internet"},
    )
    assert response.status_code == 302
    created = Sandbox.objects.get(name="queued")
    assert created.status == "error" and not created.pending_action
    assert "task queue (Redis) is not reachable" in created.status_detail

    response = client.post(f"/sandboxes/{running.pk}/stop/")
    assert response.status_code == 302
    running.refresh_from_db()
    assert running.status == "running" and not running.pending_action  # unchanged, and not stuck
    assert "not reachable" in running.status_detail
    health.refresh()  # what the background check finds within a few seconds
    assert "Actions cannot be queued" in client.get("/").content.decode()


def test_the_page_says_what_happened_when_an_action_could_not_be_queued(
    client, admin_user, team, make_sandbox, clean_docker, test_image, broker_down
):
    """Issue 14: the claim was released at once with its reason, but the page said "Stop requested"."""
    running = make_sandbox("said")
    client.force_login(admin_user)
    page = client.post(f"/sandboxes/{running.pk}/stop/", {"next": "detail"}, follow=True).content.decode()
    assert "Stop requested" not in page
    assert "Stop was not started: the task queue (Redis) is not reachable." in page

    form = {"name": "unqueued", "team": team.pk, "image": test_image, "memory_mb": 256, "cpus": "1", "network_mode": "internet"}
    page = client.post("/sandboxes/new/", form, follow=True).content.decode()
    assert "Creating unqueued" not in page
    assert "unqueued was recorded, but not started: the task queue (Redis) is not reachable." in page
    assert Sandbox.objects.get(name="unqueued").status == "error"


def test_a_backup_that_could_not_be_queued_says_so(client, admin_user, make_sandbox, clean_docker, broker_down):
    """The backup's row ends failed at once with the reason: the page says that, not "Backing up…"."""
    sandbox = make_sandbox("unbacked")
    client.force_login(admin_user)
    page = client.post(f"/sandboxes/{sandbox.pk}/backups/new/", follow=True).content.decode()
    assert "Backing up" not in page
    assert "The backup was not started: the task queue (Redis) is not reachable." in page
    assert Backup.objects.get(sandbox=sandbox).status == Backup.Status.FAILED


def test_a_restore_that_could_not_be_queued_says_so(client, admin_user, make_sandbox, clean_docker, broker_down):
    sandbox = make_sandbox("unrestored")
    backup = backups.backup_request(actor=admin_user, sandbox=sandbox, enqueue=False)
    backups.backup_perform(backup_id=backup.pk)  # made here: the queue is down
    client.force_login(admin_user)
    form = {"into": "self", "confirm_name": sandbox.name}
    page = client.post(f"/backups/{backup.pk}/restore/", form, follow=True).content.decode()
    assert "Restoring" not in page
    assert "The restore was not started: the task queue (Redis) is not reachable." in page
    assert Restore.objects.get(backup=backup).status in (Restore.Status.FAILED, Restore.Status.REFUSED)
