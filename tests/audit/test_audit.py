"""The audit trail: HMAC-chained, checked by `audit verify`, impossible to fork, and each user
sees only what concerns them."""

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from audit.models import AuditEvent, ChainCheck
from audit.services import audit_record, audit_verify_chain
from teams.models import Membership, Team

pytestmark = pytest.mark.django_db


def record(n: int, user=None, **kw) -> list[AuditEvent]:
    return [audit_record(actor=user, action="sandbox.start", target=f"s{i}", source_ip="127.0.0.1", **kw) for i in range(n)]


def verify() -> str:
    out = StringIO()
    call_command("audit", "verify", stdout=out)
    return out.getvalue()


def test_an_intact_chain_verifies(admin_user):
    events = record(5, admin_user)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[1].prev_hash == events[0].hash
    assert "intact: 5 events" in verify()
    assert ChainCheck.objects.first().ok


def test_hashes_are_keyed_not_plain_sha256(admin_user):
    """Someone who can write the database but not var/audit_key cannot recompute a valid hash."""
    import hashlib

    event = record(1, admin_user)[0]
    assert event.hash != hashlib.sha256(event.payload()).hexdigest()


def test_an_altered_event_is_named(admin_user):
    events = record(4, admin_user)
    AuditEvent.objects.filter(pk=events[2].pk).update(target="forged")
    count, problem = audit_verify_chain()
    assert problem.seq == 3 and "altered" in str(problem)
    with pytest.raises(CommandError, match="Event #3 .* was altered"):
        verify()
    assert not ChainCheck.objects.first().ok


def test_a_deleted_event_is_named(admin_user):
    events = record(4, admin_user)
    AuditEvent.objects.filter(pk=events[1].pk).delete()
    with pytest.raises(CommandError, match="Event #2 is missing"):
        verify()


def test_a_reordered_event_is_named(admin_user):
    """Swap the places of two events (their rows' ids): each row is intact, the order is not."""
    events = record(4, admin_user)
    a, b = events[1].pk, events[2].pk
    AuditEvent.objects.filter(pk=a).update(id=-1)
    AuditEvent.objects.filter(pk=b).update(id=a)
    AuditEvent.objects.filter(pk=-1).update(id=b)
    with pytest.raises(CommandError, match="Event #3 .* is out of order"):
        verify()


def test_events_removed_from_the_end_are_noticed(admin_user, settings, tmp_path):
    settings.AUDIT_ANCHOR_FILE = tmp_path / "anchor.json"
    events = record(4, admin_user)
    assert "intact: 4 events" in verify()
    AuditEvent.objects.filter(pk__in=[events[2].pk, events[3].pk]).delete()
    with pytest.raises(CommandError, match="removed from its end"):
        verify()


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_writers_leave_one_unbroken_chain():
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def writer(n: int):
        try:
            start.wait()
            for i in range(10):
                audit_record(actor=None, action="test.concurrent", target=f"w{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert AuditEvent.objects.count() == 200
    assert sorted(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, 201))
    assert audit_verify_chain() == (200, None), connection.vendor


def test_events_outlive_the_user(admin_user):
    audit_record(actor=admin_user, action="sandbox.create", target="x")
    user_id = admin_user.pk
    admin_user.delete()
    event = AuditEvent.objects.get()
    assert event.actor_id == user_id and event.actor_name == "admin"
    assert audit_verify_chain()[1] is None


def test_sign_ins_and_failures_are_audited(client, admin_user):
    client.post("/login/", {"username": "admin", "password": "wrong"})
    client.post("/login/", {"username": "admin", "password": "admin-pass-123"})
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "target", "source_ip"))
    assert actions == [("auth.login_failed", "admin", "127.0.0.1"), ("auth.login", "admin", "127.0.0.1")]


def test_audit_page_lists_newest_first(client, admin_user):
    audit_record(actor=admin_user, action="sandbox.create", target="first")
    audit_record(actor=admin_user, action="sandbox.stop", target="second")
    client.force_login(admin_user)
    html = client.get("/audit/").content.decode()
    assert html.index("second") < html.index("first")


def test_audit_page_shows_only_the_users_teams_and_own_sign_ins(client, django_user_model, team):
    other = Team.objects.create(name="Other", slug="other")
    alice = django_user_model.objects.create_user("alice", password="pw-123456789")
    Membership.objects.create(user=alice, team=team, role="viewer")
    bob = django_user_model.objects.create_user("bob", password="pw-123456789")
    audit_record(actor=None, action="sandbox.start", target="ours", sandbox_uuid="11111111-1111-1111-1111-111111111111", team_id=team.pk)
    audit_record(actor=None, action="sandbox.start", target="theirs", sandbox_uuid="22222222-2222-2222-2222-222222222222", team_id=other.pk)
    # A sandbox of the other team that happens to share a name with one of ours: still not shown.
    audit_record(actor=None, action="sandbox.stop", target="ours", sandbox_uuid="33333333-3333-3333-3333-333333333333", team_id=other.pk)
    audit_record(actor=alice, action="auth.login", target="alice")
    audit_record(actor=bob, action="auth.login", target="bob")
    client.force_login(alice)
    rows = client.get("/audit/").context["page"].object_list
    assert {(e.action, e.target, e.team_id) for e in rows} == {("auth.login", "alice", None), ("sandbox.start", "ours", team.pk)}


def test_changes_in_the_admin_are_audited(client, admin_user, team, django_user_model):
    client.force_login(admin_user)
    response = client.post(
        "/admin/auth/user/add/",
        {"username": "carol", "password1": "a-long-pass-9876", "password2": "a-long-pass-9876", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    carol = django_user_model.objects.get(username="carol")
    response = client.post(
        f"/admin/teams/team/{team.pk}/change/",
        {
            "name": team.name,
            "slug": team.slug,
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "1",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": Membership.objects.get(user=admin_user).pk,
            "memberships-0-team": team.pk,
            "memberships-0-user": admin_user.pk,
            "memberships-0-role": "admin",
            "memberships-1-team": team.pk,
            "memberships-1-user": carol.pk,
            "memberships-1-role": "operator",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    membership = Membership.objects.get(user=carol)
    response = client.post(f"/admin/teams/membership/{membership.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    events = {e.action: e for e in AuditEvent.objects.filter(action__startswith="admin.")}
    assert set(events) == {"admin.user.add", "admin.team.change", "admin.membership.delete"}
    assert "carol" in str(events["admin.team.change"].details) and events["admin.team.change"].team_id == team.pk
    assert events["admin.membership.delete"].team_id == team.pk
    assert all(e.actor_name == "admin" and e.source_ip == "127.0.0.1" for e in events.values())
    assert audit_verify_chain()[1] is None


def test_a_broken_chain_shows_a_banner_to_admins_only(client, admin_user, django_user_model, team):
    events = record(3, admin_user)
    AuditEvent.objects.filter(pk=events[0].pk).update(action="forged")
    with pytest.raises(CommandError):
        verify()
    client.force_login(admin_user)
    assert "hash chain is broken" in client.get("/").content.decode()
    viewer = django_user_model.objects.create_user("viewer", password="pw-123456789")
    Membership.objects.create(user=viewer, team=team, role="viewer")
    client.force_login(viewer)
    assert "hash chain is broken" not in client.get("/").content.decode()


def test_the_daily_check_is_scheduled():
    from django.conf import settings

    from controlpanel.celery import app

    assert settings.CELERY_BEAT_SCHEDULE["verify-audit-chain"]["task"] == "audit.tasks.audit_verify_task"
    app.loader.import_default_modules()
    assert "audit.tasks.audit_verify_task" in app.tasks


def test_clearing_a_lock_out_in_the_admin_is_audited(client, admin_user):
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(username="mallory", ip_address="10.0.0.9", user_agent="x", failures_since_start=10)
    client.force_login(admin_user)
    response = client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    assert AuditEvent.objects.filter(action="admin.accessattempt.delete", actor_name="admin").exists()
