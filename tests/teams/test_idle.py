"""The idle rule: a running sandbox with no terminal open and CPU under the team's threshold for
its minutes is stopped, and the stop is in the audit trail and on the sandbox's page. Never a
sandbox with a terminal open, a paused one, or one busy with something else.

The fast tests feed Docker's CPU counters by hand (the fake engine has none); the last tests
measure real sandboxes through the engine's one-shot stats."""

import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from sandboxes import services
from sandboxes.models import Sandbox, TerminalSession
from teams import idle, policy
from teams.models import IdleWatch
from tests.support.docker import docker_cli
from tests.support.sandboxes import act

pytestmark = pytest.mark.django_db
ACTOR = services.SystemActor("test")
NS = 1_000_000_000


class Counters:
    """Docker's cumulative CPU counters of each container, advanced by the test: `busy` is the
    share of one CPU each container used since the last advance."""

    def __init__(self):
        self.total: dict[str, int] = {}
        self.system = 10 * NS

    def advance(self, seconds: float, **busy: float) -> None:
        self.system += int(seconds * NS)  # one online CPU: the host's counter grows with the clock
        for name, share in busy.items():
            cid = Sandbox.objects.get(name=name).container_id
            self.total[cid] = self.total.get(cid, 0) + int(seconds * share * NS)

    def __call__(self, sandbox: Sandbox) -> dict:
        return {
            "read": "now",
            "cpu_stats": {
                "cpu_usage": {"total_usage": self.total.get(sandbox.container_id, 0)},
                "system_cpu_usage": self.system,
                "online_cpus": 1,
            },
        }


@pytest.fixture
def counters() -> Counters:
    return Counters()


def rule(team, minutes: int = 10, percent: str = "5") -> None:
    policy.policy_set(
        actor=ACTOR, team=team, values={**dict.fromkeys(policy.FIELDS), "idle_minutes": minutes, "idle_cpu_percent": Decimal(percent)}
    )


def sweep(counters: Counters, at) -> list[int]:
    return idle.idle_sweep(now=at, sample=counters, enqueue_stop=False)


def first_look(team, counters: Counters, minutes: int) -> datetime:
    """The rule set (`minutes` under 5 %), and its first look taken now (it only reads the
    counters); when that was."""
    rule(team, minutes=minutes, percent="5")
    t0 = timezone.now()
    sweep(counters, t0)
    return t0


def perform(sandbox: Sandbox, action: str) -> Sandbox:
    services.sandbox_perform(sandbox_id=sandbox.pk, action=action)
    return Sandbox.objects.get(pk=sandbox.pk)


@pytest.fixture
def quiet(make_sandbox, fake_engine, clean_workspace, team):
    return make_sandbox("quiet")


def test_an_idle_sandbox_is_stopped_audited_and_shown(quiet, team, counters, client, admin_user):
    rule(team, minutes=10, percent="5")
    t0 = timezone.now()
    assert sweep(counters, t0) == []  # the first look only reads the counters
    for minute in range(1, 10):
        counters.advance(60, quiet=0.01)  # 1 % of a CPU
        assert sweep(counters, t0 + timedelta(minutes=minute)) == [], minute
    counters.advance(60, quiet=0.01)
    assert sweep(counters, t0 + timedelta(minutes=10)) == [quiet.pk]
    event = AuditEvent.objects.get(action="sandbox.idle_stop", sandbox_uuid=quiet.uuid)
    assert event.actor_name == "idle-rule"
    assert (
        event.details["idle_minutes"] == 10 and event.details["rule_minutes"] == 10 and event.details["cpu_percent"] == pytest.approx(1.0)
    )
    assert Sandbox.objects.get(pk=quiet.pk).pending_action == "stop"
    stopped = perform(quiet, "stop")
    assert stopped.status == "stopped"
    assert AuditEvent.objects.filter(sandbox_uuid=quiet.uuid, action="sandbox.stop.done", seq__gt=event.seq).exists()
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{quiet.pk}/").content.decode()
    assert "Stopped by team Default's idle rule" in page and "CPU under 5 % for 10 minutes" in page
    services.sandbox_request_action(actor=ACTOR, sandbox=stopped, action="start", enqueue=False)
    perform(stopped, "start")
    assert idle.last_idle_stop(Sandbox.objects.get(pk=quiet.pk)) is None  # started again: no longer said


def test_a_busy_sandbox_is_not_stopped_and_a_burst_restarts_the_idle_time(quiet, team, counters):
    t0 = first_look(team, counters, 5)
    for minute in range(1, 5):
        counters.advance(60, quiet=0.5)
        assert sweep(counters, t0 + timedelta(minutes=minute)) == []
    counters.advance(60, quiet=0.01)
    sweep(counters, t0 + timedelta(minutes=5))
    counters.advance(60, quiet=0.20)  # a burst between two looks counts
    sweep(counters, t0 + timedelta(minutes=6))
    for minute in range(7, 11):
        counters.advance(60, quiet=0.0)
        assert sweep(counters, t0 + timedelta(minutes=minute)) == []
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=11)) == [quiet.pk]  # five quiet minutes after the burst


def test_an_open_terminal_keeps_a_quiet_sandbox_running(quiet, team, counters):
    rule(team, minutes=2, percent="5")
    session = TerminalSession.objects.create(sandbox=quiet, user_name="someone")
    t0 = timezone.now()
    for minute in range(0, 30):
        counters.advance(60, quiet=0.0)
        assert sweep(counters, t0 + timedelta(minutes=minute)) == []
    TerminalSession.objects.filter(pk=session.pk).update(ended_at=t0 + timedelta(minutes=29, seconds=30))
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=30)) == []  # open for part of the last minute: idle from here on
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=31)) == []
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=32)) == [quiet.pk]


def test_a_terminal_open_only_between_two_looks_counts(quiet, team, counters):
    t0 = first_look(team, counters, 2)
    counters.advance(60, quiet=0.0)
    sweep(counters, t0 + timedelta(minutes=1))
    TerminalSession.objects.create(sandbox=quiet, user_name="someone", ended_at=t0 + timedelta(minutes=1, seconds=40))
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=2)) == []  # someone was there a moment ago


def test_a_terminal_opened_at_the_last_moment_wins(quiet, team, counters, monkeypatch):
    t0 = first_look(team, counters, 1)
    counters.advance(60, quiet=0.0)
    looks = iter([False, True])  # no terminal when judged, one open by the time of the claim
    monkeypatch.setattr(idle, "_has_open_terminal", lambda sandbox, since=None: next(looks))
    assert sweep(counters, t0 + timedelta(minutes=1)) == []
    assert next(looks, "both looked") == "both looked"
    assert Sandbox.objects.get(pk=quiet.pk).pending_action == ""


def test_a_paused_sandbox_is_never_stopped_and_starts_afresh_when_unpaused(quiet, team, counters):
    t0 = first_look(team, counters, 1)
    act(quiet, "pause")
    for minute in range(1, 20):
        counters.advance(60, quiet=0.0)
        assert sweep(counters, t0 + timedelta(minutes=minute)) == []
    assert Sandbox.objects.get(pk=quiet.pk).status == "paused"
    assert not IdleWatch.objects.exists()
    act(quiet, "unpause")
    assert sweep(counters, t0 + timedelta(minutes=20)) == []  # the first look after: counters only
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=21)) == [quiet.pk]


def test_a_sandbox_busy_with_another_action_or_held_is_tried_again_later(quiet, team, counters):
    t0 = first_look(team, counters, 1)
    Sandbox.objects.filter(pk=quiet.pk).update(pending_action="backup")
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=1)) == []
    assert not AuditEvent.objects.filter(action="sandbox.idle_stop").exists()
    Sandbox.objects.filter(pk=quiet.pk).update(pending_action="", on_hold=True)
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=2)) == []
    Sandbox.objects.filter(pk=quiet.pk).update(on_hold=False)
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=3)) == [quiet.pk]


def test_the_rule_is_off_by_default_and_per_team(quiet, team, counters):
    t0 = timezone.now()
    for minute in range(0, 100, 10):
        counters.advance(600, quiet=0.0)
        assert sweep(counters, t0 + timedelta(minutes=minute)) == []
    assert not IdleWatch.objects.exists()


def test_a_restarted_container_is_not_judged_on_its_old_counters(quiet, team, counters):
    rule(team, minutes=1, percent="5")
    t0 = timezone.now()
    counters.advance(60, quiet=1.0)
    sweep(counters, t0)
    counters.total[quiet.container_id] = 0  # the counters began again
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=1)) == []
    counters.advance(60, quiet=0.0)
    assert sweep(counters, t0 + timedelta(minutes=2)) == [quiet.pk]


def test_celery_beat_runs_the_rule(monkeypatch):
    from teams import tasks

    schedule = settings.CELERY_BEAT_SCHEDULE["team-idle-rules"]
    assert schedule["task"] == "teams.tasks.idle_sweep_task" and schedule["schedule"] == settings.TEAM_IDLE_CHECK_SECONDS
    monkeypatch.setattr(idle, "idle_sweep", lambda: [1, 2])
    assert tasks.idle_sweep_task() == 2


# --- on the real engine ------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_real_idle_sandbox_is_stopped_by_the_rule_and_a_busy_one_is_not(make_sandbox, clean_docker, team):
    idler = make_sandbox("idler", network_mode="none")
    worker = make_sandbox("worker", network_mode="none")
    docker_cli("exec", "-d", worker.container_id, "sh", "-c", "while :; do :; done")  # a whole CPU, busy
    rule(team, minutes=1, percent="5")
    t0 = timezone.now()
    assert idle.idle_sweep(now=t0, enqueue_stop=False) == []  # Docker's counters, read once
    time.sleep(2)  # CPU measured over these two seconds, by Docker's counters
    assert idle.idle_sweep(now=t0 + timedelta(minutes=1), enqueue_stop=False) == [idler.pk]
    busy = IdleWatch.objects.get(sandbox=worker)
    assert busy.idle_since is None
    event = AuditEvent.objects.get(action="sandbox.idle_stop", sandbox_uuid=idler.uuid)
    assert event.details["cpu_percent"] < 5
    services.sandbox_perform(sandbox_id=idler.pk, action="stop")
    assert Sandbox.objects.get(pk=idler.pk).status == "stopped"
    assert docker_cli("inspect", "-f", "{{.State.Status}}", idler.container_id).stdout.strip() == "exited"
    assert docker_cli("inspect", "-f", "{{.State.Status}}", worker.container_id).stdout.strip() == "running"
    assert Sandbox.objects.get(pk=worker.pk).status == "running"
    assert AuditEvent.objects.filter(sandbox_uuid=idler.uuid, action="sandbox.stop.done").exists()
