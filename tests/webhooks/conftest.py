import uuid

import pytest

from audit.services import audit_record
from teams.models import Membership, Team
from webhooks import tasks

from .helpers import Receiver


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def queued(monkeypatch, settings):
    """The delivery tasks the services queue, as (delivery id, countdown), instead of Redis; the
    test runs them itself (tasks.delivery_task(id)), in-process. No real waiting between
    retries: the backoff's base is 0 unless a test sets it."""
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(tasks.delivery_task, "apply_async", lambda args, countdown=0.0: sent.append((args[0], countdown)))
    return sent


@pytest.fixture
def team_admin(db, team, django_user_model):
    """A team admin who is not a superuser."""
    user = django_user_model.objects.create_user("hooks-admin", "", "pw-hooks-admin")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    return user


def superuser():
    """The panel's administrator: the only one who may let a webhook reach a private address
    (the tests' receivers listen on loopback)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return User.objects.filter(username="hooks-root").first() or User.objects.create_superuser("hooks-root", "", "pw-hooks-root")


@pytest.fixture
def other_team(db):
    return Team.objects.create(slug="other", name="Other")


def declare(team, **details):
    """An incident.declared event about a sandbox of `team`, written as incidents.services does."""
    return audit_record(
        actor=None,
        actor_name="alice",
        action="incident.declared",
        target="web-1",
        sandbox_uuid=uuid.uuid4(),
        team_id=team.pk,
        details={"incident": 7, "severity": "high", "summary": "odd traffic", **details},
    )
