import pytest

from audit.models import AuditEvent
from audit.services import audit_record, audit_verify_chain

pytestmark = pytest.mark.django_db


def test_events_chain_and_tampering_is_detected(admin_user):
    for i in range(3):
        audit_record(actor=admin_user, action="sandbox.start", target=f"s{i}", source_ip="127.0.0.1")
    assert audit_verify_chain() is None
    middle = AuditEvent.objects.order_by("id")[1]
    AuditEvent.objects.filter(pk=middle.pk).update(target="forged")
    assert audit_verify_chain() == middle.pk


def test_audit_page_lists_newest_first(client, admin_user):
    audit_record(actor=admin_user, action="sandbox.create", target="first")
    audit_record(actor=admin_user, action="sandbox.stop", target="second")
    client.force_login(admin_user)
    html = client.get("/audit/").content.decode()
    assert html.index("second") < html.index("first")


def test_events_outlive_the_user(admin_user, django_user_model):
    audit_record(actor=admin_user, action="sandbox.create", target="x")
    admin_user.delete()
    event = AuditEvent.objects.get()
    assert event.actor is None and event.actor_name == "admin"


def test_sign_ins_and_failures_are_audited(client, admin_user):
    client.post("/login/", {"username": "admin", "password": "wrong"})
    client.post("/login/", {"username": "admin", "password": "admin-pass-123"})
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "target", "source_ip"))
    assert actions == [("auth.login_failed", "admin", "127.0.0.1"), ("auth.login", "admin", "127.0.0.1")]
