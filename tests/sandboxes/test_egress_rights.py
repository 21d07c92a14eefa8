"""Who may change a sandbox's egress: operators narrow it, only team admins widen it, by every
path (the service, the page, the API), with a message and no change when refused."""

import pytest
from django.core.exceptions import PermissionDenied

from sandboxes import services
from sandboxes.models import Sandbox
from tests.api.helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("rights", network_mode="allowlist", egress_allow="a.example\nb.example:22,443")


def _state(box) -> tuple:
    row = Sandbox.objects.get(pk=box.pk)
    return row.network_mode, row.egress_presets, row.egress_allow


@pytest.mark.parametrize(
    ("mode", "presets", "allow", "widens"),
    [
        ("none", None, None, False),
        ("internet", None, None, True),
        (None, [], "a.example", False),  # an entry removed
        (None, [], "a.example\nb.example:22", False),  # a port removed
        (None, [], "a.example\nb.example:22,443,8080", True),  # a port added
        (None, [], "a.example\nb.example:22,443\nc.example", True),
        (None, ["github"], "a.example\nb.example:22,443", True),  # a preset
    ],
)
def test_the_one_rule_judges_each_change(box, django_user_model, team, mode, presets, allow, widens):
    operator, admin = member(django_user_model, "op", team, "operator"), member(django_user_model, "adm", team, "admin")
    services.authorize_egress(admin, box, mode=mode, presets=presets, allow=allow)
    if widens:
        with pytest.raises(services.WideningRefused, match="Only the team's admins may widen"):
            services.authorize_egress(operator, box, mode=mode, presets=presets, allow=allow)
    else:
        services.authorize_egress(operator, box, mode=mode, presets=presets, allow=allow)


@pytest.mark.parametrize(
    ("allow", "widens"),
    [
        ("git.example GET,POST /org/*\na.example", False),  # unchanged
        ("git.example GET /org/*", False),  # a method taken away
        ("git.example GET,POST /org/x/*", True),  # another path: not judged narrower, an admin's
        ("git.example GET,POST,DELETE /org/*", True),  # a method added
        ("git.example GET,POST", True),  # the path rule lifted
        ("git.example", True),  # every rule lifted: direct connections, any request
        ("git.example GET,POST /*", True),
    ],
)
def test_lifting_or_loosening_an_http_rule_widens(make_sandbox, fake_engine, clean_workspace, django_user_model, team, allow, widens):
    ruled = make_sandbox("ruled", network_mode="allowlist", egress_allow="git.example GET,POST /org/*\na.example")
    operator = member(django_user_model, "op", team, "operator")
    if widens:
        with pytest.raises(services.WideningRefused, match="Only the team's admins may widen"):
            services.authorize_egress(operator, ruled, presets=[], allow=allow)
    else:
        services.authorize_egress(operator, ruled, presets=[], allow=allow)


def test_an_operator_narrows_but_cannot_widen_by_page_or_api(box, client, django_user_model, team):
    operator = member(django_user_model, "op", team, "operator")
    token = token_for(operator, "operate")
    client.force_login(operator)
    before = _state(box)
    page = client.post(f"/sandboxes/{box.pk}/network/", {"network_mode": "internet"}, follow=True)
    assert "Only the team&#x27;s admins may widen a sandbox&#x27;s egress (to internet)" in page.content.decode()
    api = client.put(
        f"/api/v1/sandboxes/{box.pk}/settings/network/", {"network_mode": "internet"}, content_type="application/json", **auth(token)
    )
    assert api.status_code == 403 and "to internet" in api.json()["detail"]
    page = client.post(f"/sandboxes/{box.pk}/allowlist/", {"egress_allow": "a.example\nb.example:22,443\nevil.example"}, follow=True)
    assert "adding evil.example:443" in page.content.decode()
    assert _state(box) == before
    narrowed = client.post(f"/sandboxes/{box.pk}/allowlist/", {"egress_allow": "a.example"})
    assert narrowed.status_code == 302 and _state(box)[2] == "a.example"
    with pytest.raises(PermissionDenied):
        services.sandbox_allow_refused(actor=operator, sandbox=box, name="b.example", port=443)
    assert _state(box)[2] == "a.example"


def test_an_admin_allows_a_refused_name_once_and_bad_names_are_refused(box, admin_user):
    assert services.sandbox_allow_refused(actor=admin_user, sandbox=box, name="New.Example.", port=8443) == "new.example:8443"
    assert services.sandbox_allow_refused(actor=admin_user, sandbox=box, name="new.example", port=8443) == ""  # already there
    for name, port in (("not a name", None), ("*.wild.example", None), ("ok.example", 53), ("ok.example", 70000)):
        with pytest.raises(services.InvalidInput):
            services.sandbox_allow_refused(actor=admin_user, sandbox=box, name=name, port=port)
    assert _state(box)[2] == "a.example\nb.example:22,443\nnew.example:8443"


def test_only_team_admins_set_the_teams_list_and_bad_entries_change_nothing(box, client, django_user_model, team, admin_user):
    operator = member(django_user_model, "op", team, "operator")
    with pytest.raises(PermissionDenied):
        services.team_set_allowlist(actor=operator, team=team, allow="c.example")
    client.force_login(operator)
    assert client.post(f"/teams/{team.slug}/allowlist/", {"egress_allow": "c.example"}).status_code == 403
    api = client.put(
        f"/api/v1/teams/{team.pk}/allowlist/", {"egress_allow": "c.example"}, content_type="application/json", **auth(token_for(operator))
    )
    assert api.status_code == 403
    with pytest.raises(services.InvalidInput):
        services.team_set_allowlist(actor=admin_user, team=team, allow="not a host!!")
    team.refresh_from_db()
    assert team.egress_allow == ""
    assert services.sandbox_allow_refused(actor=admin_user, sandbox=box, name="c.example", to_team=True) == "c.example"
    team.refresh_from_db()
    assert team.egress_allow == "c.example" and _state(box)[2] == "a.example\nb.example:22,443"
    from sandboxes.services.allowlist import _attached  # noqa: F401 - the merge is read by the resolver's clients

    client.force_login(admin_user)
    assert "Also in force: team" in client.get(f"/sandboxes/{box.pk}/").content.decode()


def test_a_widening_is_judged_against_the_list_as_saved_not_as_the_caller_last_read_it(box, django_user_model, team):
    """An operator whose copy of the sandbox still shows the wide list an admin has narrowed
    meanwhile (a page opened before, a request racing the admin's) cannot put it back: the
    rule reads the row it changes, under its lock."""
    operator = member(django_user_model, "op", team, "operator")
    stale = Sandbox.objects.get(pk=box.pk)
    Sandbox.objects.filter(pk=box.pk).update(egress_allow="a.example")  # the admin's narrowing
    with pytest.raises(services.WideningRefused, match="adding b.example:22, b.example:443"):
        services.sandbox_set_allowlist(actor=operator, sandbox=stale, presets=[], allow="a.example\nb.example:22,443")
    assert _state(box) == ("allowlist", [], "a.example")
