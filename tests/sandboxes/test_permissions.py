"""Every read and write is authorised in Python, per team role."""

import pytest

from teams.models import Membership, Team

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("shared-box")


def user_with(django_user_model, name, team, role):
    user = django_user_model.objects.create_user(name, password="pw-123456789")
    if role:
        Membership.objects.create(user=user, team=team, role=role)
    return user


def test_login_is_required_everywhere(client, running):
    for url in ["/", "/sandboxes/new/", f"/sandboxes/{running.pk}/", "/audit/"]:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")
    assert client.post(f"/sandboxes/{running.pk}/stop/").status_code == 302


def test_viewer_sees_but_cannot_act(client, django_user_model, team, running):
    client.force_login(user_with(django_user_model, "viewer", team, "viewer"))
    html = client.get("/").content.decode()
    assert "shared-box" in html and "view only" in html and ">Stop<" not in html
    assert ">Stop<" not in client.get(f"/sandboxes/{running.pk}/").content.decode()
    assert client.post(f"/sandboxes/{running.pk}/stop/").status_code == 403
    running.refresh_from_db()
    assert running.status == "running" and not running.pending_action
    assert client.get("/sandboxes/new/").context["form"].fields["team"].queryset.count() == 0


def test_outsider_sees_nothing(client, django_user_model, running):
    other = Team.objects.create(name="Other", slug="other")
    client.force_login(user_with(django_user_model, "outsider", other, "admin"))
    assert "shared-box" not in client.get("/").content.decode()
    assert client.get(f"/sandboxes/{running.pk}/").status_code == 404
    assert client.post(f"/sandboxes/{running.pk}/stop/").status_code == 404


def test_operator_can_act(client, django_user_model, team, running):
    client.force_login(user_with(django_user_model, "op", team, "operator"))
    assert client.post(f"/sandboxes/{running.pk}/stop/").status_code == 302
    running.refresh_from_db()
    assert running.pending_action == "stop"


def test_a_fresh_install_has_a_team_to_create_in(db):
    assert Team.objects.filter(slug="default").exists()  # made by a data migration
