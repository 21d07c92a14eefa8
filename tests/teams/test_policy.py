"""A team's resource policy: creates beyond each limit are refused with the limit named, through
the service, the form and the CLI; a superuser alone sets it, audited; a lowered policy keeps
what runs and refuses what is new; two creates cannot both take the last place.

The fast tier (the in-memory engine); tests/teams/test_policy_integration.py has the real one."""

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent
from sandboxes import services
from sandboxes.models import Sandbox
from teams import policy
from teams.forms import TeamPolicyForm
from teams.models import Membership, Team, TeamPolicy
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db
ACTOR = services.SystemActor("test")
NO_LIMITS = dict.fromkeys(policy.FIELDS)


@pytest.fixture
def fake(fake_engine, clean_workspace, settings):
    settings.SANDBOX_MAX_CPUS = 8  # this machine may have fewer; the team's total is what is tried here
    return fake_engine


def set_policy(team: Team, **values) -> TeamPolicy:
    saved, _over = policy.policy_set(actor=ACTOR, team=team, values={**NO_LIMITS, **values})
    return saved


def create(team: Team, name: str, *, memory_mb: int = 256, cpus: str = "1") -> Sandbox:
    return services.sandbox_create(
        actor=ACTOR,
        team=team,
        name=name,
        image=TEST_IMAGE,
        memory_mb=memory_mb,
        cpus=Decimal(cpus),
        network_mode="none",
        enqueue=False,
    )


def refused(team: Team, name: str, message: str, **kwargs) -> services.InvalidInput:
    with pytest.raises(services.InvalidInput) as caught:
        create(team, name, **kwargs)
    assert message in str(caught.value), str(caught.value)
    assert not Sandbox.objects.filter(name=name).exists()
    return caught.value


def test_a_team_without_a_policy_has_no_limits(team, fake):
    for i in range(4):
        create(team, f"free{i}", memory_mb=4096, cpus="4")
    assert Sandbox.objects.count() == 4


def test_create_beyond_the_number_of_sandboxes_is_refused_with_the_limit_named(team, fake):
    set_policy(team, max_sandboxes=3)
    for i in range(3):
        create(team, f"n{i}")
    error = refused(team, "n3", "Team 'Default' allows at most 3 sandboxes; it has 3.")
    assert error.errors == {"": ["Team 'Default' allows at most 3 sandboxes; it has 3."]}
    services.sandbox_request_action(actor=ACTOR, sandbox=Sandbox.objects.get(name="n0"), action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=Sandbox.objects.get(name="n0").pk, action="destroy")
    create(team, "n3")  # a destroyed sandbox frees its place


def test_create_beyond_total_memory_is_refused_with_the_limit_named(team, fake):
    set_policy(team, max_memory_mb=1024)
    create(team, "m1", memory_mb=768)
    error = refused(
        team,
        "m2",
        "Team 'Default' allows at most 1024 MB of memory in total; its sandboxes have 768 MB and this one asks for 512 MB.",
        memory_mb=512,
    )
    assert list(error.errors) == ["memory_mb"]
    create(team, "m2", memory_mb=256)  # exactly at the limit is allowed


def test_create_beyond_total_cpus_is_refused_with_the_limit_named(team, fake):
    set_policy(team, max_cpus=Decimal("2.5"))
    create(team, "c1", cpus="2")
    error = refused(team, "c2", "Team 'Default' allows at most 2.5 CPUs in total; its sandboxes have 2 and this one asks for 1.", cpus="1")
    assert list(error.errors) == ["cpus"]
    create(team, "c2", cpus="0.5")


def test_create_beyond_total_disk_is_refused_with_the_limit_named(team, fake):
    # Until the storage pool gives sandboxes their own quota, each counts as the team's default.
    set_policy(team, max_disk_mb=5000, default_disk_mb=2000)
    create(team, "d1")
    create(team, "d2")
    error = refused(
        team, "d3", "Team 'Default' allows at most 5000 MB of disk in total; its sandboxes have 4000 MB and this one asks for 2000 MB."
    )
    assert list(error.errors) == ["disk_mb"]


def test_the_disk_check_reads_a_sandboxs_own_quota_when_it_has_one(team, fake):
    set_policy(team, max_disk_mb=5000, default_disk_mb=1000)
    big = create(team, "big")
    big.disk_mb = 4500  # what Sandbox.disk_mb will hold once the storage pool lands
    assert policy.disk_of(big) == 4500
    assert policy.disk_of(Sandbox(name="x")) in (None, getattr(Sandbox(name="x"), "disk_mb", None))
    assert policy.counted_disk_mb(None, TeamPolicy(default_disk_mb=1000)) == 1000
    from django.db import transaction

    with transaction.atomic(), pytest.raises(policy.OverLimit, match="at most 5000 MB of disk"):
        policy.check_create(team=team, memory_mb=256, cpus=Decimal(1), disk_mb=4001)
    with transaction.atomic():
        policy.check_create(team=team, memory_mb=256, cpus=Decimal(1), disk_mb=4000)


def test_every_limit_passed_is_named_at_once(team, fake):
    set_policy(team, max_sandboxes=1, max_memory_mb=300, max_cpus=Decimal(1))
    create(team, "one")
    error = refused(team, "two", "allows at most 1 sandboxes")
    assert set(error.errors) == {"", "memory_mb", "cpus"}


def test_other_teams_sandboxes_do_not_count(team, fake):
    other = Team.objects.create(name="Other", slug="other")
    set_policy(team, max_sandboxes=1)
    create(other, "theirs")
    create(team, "ours")
    refused(team, "more", "allows at most 1 sandboxes; it has 1")


def test_a_lowered_policy_keeps_what_runs_and_refuses_what_is_new(team, fake):
    for i in range(3):
        create(team, f"low{i}", memory_mb=512)
    saved, over = policy.policy_set(actor=ACTOR, team=team, values={**NO_LIMITS, "max_sandboxes": 2, "max_memory_mb": 1024})
    assert over == ["3 sandboxes (limit 2)", "1536 MB of memory (limit 1024)"]
    assert Sandbox.objects.filter(team=team).exclude(status="destroyed").count() == 3  # nothing was stopped or removed
    refused(team, "low3", "allows at most 2 sandboxes; it has 3")
    event = AuditEvent.objects.get(action="team.policy_set")
    assert event.details["over"] == over and event.details["changed"]["max_sandboxes"] == {"from": None, "to": "2"}


def test_changes_that_grow_beyond_the_policy_are_refused_and_shrinking_is_not(team, fake):
    from django.db import transaction

    a = create(team, "grow", memory_mb=512, cpus="1")
    create(team, "other", memory_mb=512, cpus="1")
    set_policy(team, max_memory_mb=1024, max_cpus=Decimal(2), max_disk_mb=3000, default_disk_mb=1000)
    with transaction.atomic(), pytest.raises(policy.OverLimit) as caught:
        policy.check_change(sandbox=a, memory_mb=1024, cpus=Decimal(2), disk_mb=2800)  # the other has the panel's default quota
    assert set(caught.value.errors) == {"memory_mb", "cpus", "disk_mb"}
    assert "this change asks for 1024 MB" in str(caught.value)
    set_policy(team, max_memory_mb=512)  # lowered below what the team has
    with transaction.atomic():
        policy.check_change(sandbox=a, memory_mb=256)  # smaller is always allowed
        policy.check_change(sandbox=a, cpus=Decimal(4))  # no CPU limit any more


@pytest.mark.django_db(transaction=True)  # the others run inside the test's own transaction
def test_the_check_runs_only_inside_the_creating_transaction(team, fake):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        policy.check_create(team=team, memory_mb=256, cpus=Decimal(1))


def test_only_a_superuser_sets_a_policy(team, django_user_model):
    team_admin = django_user_model.objects.create_user("teamadmin", password="x")
    Membership.objects.create(user=team_admin, team=team, role=Membership.Role.ADMIN)
    with pytest.raises(PermissionDenied):
        policy.policy_set(actor=team_admin, team=team, values={**NO_LIMITS, "max_sandboxes": 100})
    assert not TeamPolicy.objects.exists()
    root = django_user_model.objects.create_superuser("root", "", "x")
    policy.policy_set(actor=root, team=team, values={**NO_LIMITS, "max_sandboxes": 100}, source_ip="127.0.0.1")
    event = AuditEvent.objects.get(action="team.policy_set")
    assert event.actor_name == "root" and event.team_id == team.pk and event.source_ip == "127.0.0.1"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"max_sandboxes": -1}, "max_sandboxes"),
        ({"max_memory_mb": -5}, "max_memory_mb"),
        ({"max_memory_mb": 2**63}, "max_memory_mb"),
        ({"max_cpus": "-0.5"}, "max_cpus"),
        ({"max_cpus": "1e9"}, "max_cpus"),
        ({"max_cpus": "nan"}, "max_cpus"),
        ({"max_disk_mb": 10**12, "default_disk_mb": 10}, "max_disk_mb"),
        ({"default_disk_mb": 0}, "default_disk_mb"),
        ({"max_disk_mb": 1000}, "default_disk_mb"),
        ({"max_disk_mb": 1000, "default_disk_mb": 2000}, "default_disk_mb"),
        ({"idle_minutes": 10}, "idle_minutes"),
        ({"idle_cpu_percent": "5"}, "idle_minutes"),
        ({"idle_minutes": 0, "idle_cpu_percent": "5"}, "idle_minutes"),
        ({"idle_minutes": 10, "idle_cpu_percent": "-1"}, "idle_cpu_percent"),
        ({"idle_minutes": 10**9, "idle_cpu_percent": "5"}, "idle_minutes"),
        ({"max_sandboxes": "many"}, "max_sandboxes"),
    ],
)
def test_the_form_refuses_negative_huge_and_half_set_values(team, values, field):
    form = TeamPolicyForm(data={"team": team.pk, **values})
    assert not form.is_valid()
    assert field in form.errors, form.errors
    with pytest.raises((ValidationError, TypeError, ValueError, ArithmeticError)):
        policy.policy_set(actor=ACTOR, team=team, values={**NO_LIMITS, **values})
    assert not TeamPolicy.objects.exists()


def test_the_form_accepts_a_whole_policy(team):
    data = {
        "team": team.pk,
        "max_sandboxes": 3,
        "max_memory_mb": 8192,
        "max_cpus": "4.5",
        "max_disk_mb": 10000,
        "default_disk_mb": 2000,
        "idle_minutes": 30,
        "idle_cpu_percent": "2.5",
    }
    assert TeamPolicyForm(data=data).is_valid()


# --- the web layer ------------------------------------------------------------------------------


def form_data(name: str, **changes) -> dict:
    team = Team.objects.get(slug="default")
    return {"name": name, "team": team.pk, "image": TEST_IMAGE, "memory_mb": 256, "cpus": "1", "network_mode": "none", **changes}


def test_the_create_form_names_the_limit(logged_in, team, fake):
    set_policy(team, max_sandboxes=1, max_memory_mb=600)
    assert logged_in.post("/sandboxes/new/", form_data("web1")).status_code == 302
    response = logged_in.post("/sandboxes/new/", form_data("web2", memory_mb=512))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Team &#x27;Default&#x27; allows at most 1 sandboxes; it has 1." in page
    assert "allows at most 600 MB of memory in total" in page
    assert not Sandbox.objects.filter(name="web2").exists()


def test_the_team_page_shows_the_policy_and_a_superuser_sets_it(logged_in, team, fake):
    create(team, "shown", memory_mb=512)
    data = {"max_sandboxes": "1", "max_memory_mb": "", "max_cpus": "", "max_disk_mb": "", "default_disk_mb": "", "idle_minutes": "15"}
    response = logged_in.post(f"/teams/{team.slug}/policy/", {**data, "idle_cpu_percent": ""})
    assert response.status_code == 400 and "needs both the minutes and the CPU threshold" in response.content.decode()
    assert not TeamPolicy.objects.exists()
    response = logged_in.post(f"/teams/{team.slug}/policy/", {**data, "idle_cpu_percent": "3"}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "resource policy saved" in page and "Idle rule: <strong>on</strong>" in page
    saved = TeamPolicy.objects.get(team=team)
    assert (saved.max_sandboxes, saved.idle_minutes, saved.idle_cpu_percent) == (1, 15, Decimal(3))
    assert AuditEvent.objects.filter(action="team.policy_set", team_id=team.pk).exists()


def test_a_team_admin_sees_the_policy_but_cannot_set_it(client, team, django_user_model):
    set_policy(team, max_sandboxes=5)
    user = django_user_model.objects.create_user("lead", password="x")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    client.force_login(user)
    page = client.get(f"/teams/{team.slug}/").content.decode()
    assert "Resource policy" in page and "Save the policy" not in page
    response = client.post(f"/teams/{team.slug}/policy/", {"max_sandboxes": "500"})
    assert response.status_code == 403
    assert TeamPolicy.objects.get(team=team).max_sandboxes == 5


def test_the_admin_is_for_superusers_and_audited(logged_in, team, client, django_user_model):
    response = logged_in.post(
        "/admin/teams/teampolicy/add/",
        {"team": team.pk, "max_sandboxes": "2", "max_cpus": "-1"},
    )
    assert response.status_code == 200 and not TeamPolicy.objects.exists()  # refused: negative CPUs
    response = logged_in.post("/admin/teams/teampolicy/add/", {"team": team.pk, "max_sandboxes": "2"})
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = TeamPolicy.objects.get(team=team)
    assert saved.max_sandboxes == 2
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"team.policy_set", "admin.teampolicy.add"} <= actions
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/admin/teams/teampolicy/{saved.pk}/change/").status_code in (302, 403)


# --- the CLI -------------------------------------------------------------------------------------


def test_the_cli_names_the_limit(team, fake):
    set_policy(team, max_sandboxes=1, max_cpus=Decimal(1))
    call_command(
        "sandbox", "create", "cli1", "--image", TEST_IMAGE, "--memory-mb", "256", "--cpus", "1", "--network", "none", stdout=StringIO()
    )
    with pytest.raises(CommandError, match=r"Team 'Default' allows at most 1 sandboxes; it has 1\."):
        call_command("sandbox", "create", "cli2", "--image", TEST_IMAGE, "--memory-mb", "256", "--cpus", "1", stdout=StringIO())
    with pytest.raises(CommandError, match=r"allows at most 1 CPUs in total; its sandboxes have 1 and this one asks for 0.5"):
        call_command("sandbox", "create", "cli3", "--image", TEST_IMAGE, "--cpus", "0.5", stdout=StringIO())
    assert not Sandbox.objects.filter(name__in=["cli2", "cli3"]).exists()


# --- two creates at once -------------------------------------------------------------------------


def race(monkeypatch, make: Callable[[str], object], refusal: type[Exception], names: list[str]) -> list[str]:
    """Two threads `make` a sandbox at once (one of `names` each), with policy.usage slowed to
    widen the window between counting and saving; each one's outcome: "created", or the text of
    its `refusal`."""
    real_usage = policy.usage

    def slow_usage(*args, **kwargs):
        found = real_usage(*args, **kwargs)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(policy, "usage", slow_usage)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(name: str) -> None:
        try:
            barrier.wait()
            make(name)
            outcomes.append("created")
        except refusal as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_two_creates_at_once_cannot_both_take_the_last_place(team, fake, monkeypatch):
    set_policy(team, max_sandboxes=1)
    outcomes = race(monkeypatch, lambda name: create(team, name), services.InvalidInput, ["race0", "race1"])
    assert sorted(outcomes) == ["Team 'Default' allows at most 1 sandboxes; it has 1.", "created"]
    assert Sandbox.objects.filter(team=team).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_check_itself_holds_the_team_between_counting_and_saving(team, monkeypatch):
    """Without sandbox_create's own lock around it (as a later change of limits would call it):
    the team's row, locked by the check, keeps a second writer waiting until the first commits."""
    from django.db import transaction

    set_policy(team, max_sandboxes=1)

    def checked_create(name: str) -> None:
        with transaction.atomic():
            policy.check_create(team=team, memory_mb=256, cpus=Decimal(1))
            Sandbox.objects.create(name=name, team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)

    outcomes = race(monkeypatch, checked_create, policy.OverLimit, ["bare0", "bare1"])
    assert sorted(outcomes) == ["Team 'Default' allows at most 1 sandboxes; it has 1.", "created"]
