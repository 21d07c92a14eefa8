"""The dashboard's cost per request does not grow with its rows: every badge a row shows (health,
OOM kills, checklist, incident hold) comes with the page's one query for the sandboxes, and the
second factor costs one small query per request (the memberships it reads besides are the page's
roles; bench/pages.py measures the page under load)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from sandboxes.models import Sandbox
from teams.models import Membership

pytestmark = pytest.mark.django_db

# The session, the user, the user's memberships (their roles, and whether a team requires a second
# factor), the second factor (a confirmed device, or the one the session gave its code for) and the
# page of sandboxes.
DASHBOARD_QUERIES = 5


def add_sandboxes(team, count: int) -> None:
    statuses = ["running", "stopped", "paused", "error", "running"]
    now = timezone.now()
    for i in range(count):
        Sandbox.objects.create(
            name=f"row-{i:02d}",
            team=team,
            image="ccpanel/claude-code:latest",
            memory_mb=8192,
            cpus=2,
            pids_limit=1024,
            status=statuses[i % len(statuses)],
            health="unhealthy" if i % 2 else "healthy",
            oom_kills=i % 3,
            oom_since=now - timedelta(minutes=5),
            oom_last_at=now - timedelta(minutes=1),
        )


@pytest.fixture
def operator(team, django_user_model):
    user = django_user_model.objects.create_user("olga", password="pw-dashboard-1")
    Membership.objects.create(user=user, team=team, role=Membership.Role.OPERATOR)
    return user


def test_the_dashboard_costs_the_same_few_queries_for_twenty_rows(client, team, operator, django_assert_max_num_queries):
    add_sandboxes(team, 20)
    client.force_login(operator)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/")
    assert response.status_code == 200
    assert response.content.count(b'<tr id="sandbox-') == 20
    assert b"health: unhealthy" in response.content and b"OOM-killed 2" in response.content


def test_a_verified_second_factor_costs_no_more_queries_than_none(client, team, operator, django_assert_max_num_queries):
    add_sandboxes(team, 20)
    device = TOTPDevice.objects.create(user=operator, name="authenticator", confirmed=True)
    client.force_login(operator)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/")
    assert response.status_code == 200
    assert response.content.count(b'<tr id="sandbox-') == 20
