"""Each host's tasks go to its own queues: asked of Celery's own router, and sent for real to the
tests' Redis, where the message is read back from the queue's list. The second host's engine is
never contacted (tcp:// on an address nothing listens at; or an agent's host with no URL here)."""

import base64
import json
import ssl
from decimal import Decimal

import pytest
from django.conf import settings

from backups import tasks as backup_tasks
from backups.models import Backup
from controlpanel.celery import app
from hosts import queues
from hosts import services as host_services
from hosts.models import Host
from sandboxes import services
from sandboxes.models import Sandbox
from sandboxes.tasks import sandbox_action_task
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db
CLI = services.SystemActor("test")


@pytest.fixture
def broker():
    """The tests' Redis as Celery's broker sees it; every queue a test used is emptied after."""
    used: list[str] = []
    with app.connection_for_write() as conn:
        client = conn.default_channel.client

        def waiting(queue: str) -> list[bytes]:
            used.append(queue)
            return client.lrange(queue, 0, -1)

        yield waiting
        client.delete(*used) if used else None


@pytest.fixture
def two_hosts(fake_engine, clean_workspace, team):
    """A sandbox on "alpha" (an engine at a tcp:// URL) and one on "beta" (served by an agent)."""
    host_services.local_host()
    alpha = host_services.host_create(actor=CLI, name="alpha", docker_url="tcp://198.18.59.1:2375", memory_mb=1, disk_mb=1)
    beta = host_services.host_create(actor=CLI, name="beta", memory_mb=1, disk_mb=1)
    Host.objects.filter(pk=beta.pk).update(agent=True)
    made = {}
    for name, host in (("on-alpha", alpha), ("on-beta", beta)):
        sandbox = services.sandbox_create(
            actor=CLI, team=team, name=name, image=TEST_IMAGE, memory_mb=256, cpus=Decimal(1), network_mode="none", enqueue=False
        )
        Sandbox.objects.filter(pk=sandbox.pk).update(host=host)  # placed there by hand: placement refuses both
        made[name] = Sandbox.objects.get(pk=sandbox.pk)
    return made


def sent(raw: bytes) -> tuple[str, list]:
    """The task name and arguments of a message as it waits in Redis (Celery's protocol 2)."""
    message = json.loads(raw)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args


def routed(name: str, *args) -> str:
    return app.amqp.router.route({}, name, args, {})["queue"].name


def test_the_queues_are_named_for_the_instance_and_the_host(settings):
    assert queues.lifecycle_queue("alpha") == f"ccpanel-{settings.PANEL_INSTANCE}-host-alpha"
    assert queues.jobs_queue("alpha") == f"ccpanel-{settings.PANEL_INSTANCE}-host-alpha-jobs"


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_each_sandboxs_action_lands_in_its_own_hosts_queue(two_hosts, broker, django_assert_max_num_queries):
    alpha, beta = two_hosts["on-alpha"], two_hosts["on-beta"]
    with django_assert_max_num_queries(1):
        assert routed("sandboxes.tasks.sandbox_action_task", alpha.pk, "start") == queues.lifecycle_queue("alpha")
    sandbox_action_task.delay(alpha.pk, "start")
    sandbox_action_task.delay(beta.pk, "stop")
    on_alpha, on_beta = broker(queues.lifecycle_queue("alpha")), broker(queues.lifecycle_queue("beta"))
    assert len(on_alpha) == 1 and len(on_beta) == 1
    assert f'[{alpha.pk}, "start"]'.encode() in on_alpha[0] or b"start" in on_alpha[0]
    assert b"stop" in on_beta[0] and b"start" not in on_beta[0]
    assert broker(settings.CELERY_TASK_DEFAULT_QUEUE) == []


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_a_backup_lands_in_its_hosts_jobs_queue_and_an_import_in_the_panels(two_hosts, broker, team):
    beta = two_hosts["on-beta"]
    backup = Backup.objects.create(sandbox=beta, team=team, sandbox_name=beta.name, file_name="on-beta-x.tar.gz", created_by_name="t")
    imported = Backup.objects.create(sandbox=None, team=team, sandbox_name="gone", file_name="gone-x.tar.gz", created_by_name="t")
    backup_tasks.backup_task.delay(backup.pk)
    backup_tasks.backup_verify_task.delay(backup.pk)
    backup_tasks.backup_import_task.delay(imported.pk)
    on_beta = sorted(sent(m) for m in broker(queues.jobs_queue("beta")))
    assert on_beta == [("backups.tasks.backup_task", [backup.pk]), ("backups.tasks.backup_verify_task", [backup.pk])]
    assert [sent(m) for m in broker(settings.CELERY_JOBS_QUEUE)] == [("backups.tasks.backup_import_task", [imported.pk])]
    assert broker(queues.lifecycle_queue("beta")) == []


def test_a_task_whose_row_is_gone_and_one_about_no_host_go_to_the_default_queue(two_hosts):
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    assert routed("sandboxes.tasks.sandbox_action_task", 999_999, "start") == default
    assert routed("backups.tasks.backup_task", 999_999) == default
    assert routed("backups.tasks.restore_task", 999_999) == default
    assert routed("incidents.tasks.incident_step_task", 999_999) == default
    for name in ("audit.tasks.audit_verify_task", "teams.tasks.idle_sweep_task", "sandboxes.tasks.reconcile_all_task"):
        assert routed(name) == default


def test_a_webhook_delivery_has_a_queue_no_lifecycle_or_jobs_worker_reads(two_hosts, settings):
    """A delivery may wait on a team admin's receiver for WEBHOOK_TOTAL_SECONDS, five times: on
    the lifecycle worker (two processes) a few slow receivers would hold up every Stop, Start and
    incident freeze of the panel's machine."""
    assert routed("webhooks.tasks.delivery_task", 1) == settings.CELERY_WEBHOOKS_QUEUE
    assert queues.worker_queues("webhooks") == [settings.CELERY_WEBHOOKS_QUEUE]
    for role in ("lifecycle", "jobs"):
        assert settings.CELERY_WEBHOOKS_QUEUE not in queues.worker_queues(role)
    assert routed("webhooks.tasks.delivery_sweep_task") == settings.CELERY_TASK_DEFAULT_QUEUE  # only queues: stays
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "beta", True
    with pytest.raises(ValueError, match="panel's machine"):
        queues.worker_queues("webhooks")  # an agent has no secrets key to sign with


def test_a_host_name_ending_in_jobs_is_refused(db):
    with pytest.raises(host_services.HostError, match="jobs"):
        host_services.host_create(actor=CLI, name="alpha-jobs")


def test_the_panels_workers_read_their_own_and_every_agentless_hosts_queues(two_hosts, settings):
    lifecycle, jobs = queues.worker_queues("lifecycle"), queues.worker_queues("jobs")
    assert lifecycle == [settings.CELERY_TASK_DEFAULT_QUEUE, queues.lifecycle_queue("local"), queues.lifecycle_queue("alpha")]
    assert jobs == [queues.jobs_queue("local"), queues.jobs_queue("alpha"), settings.CELERY_JOBS_QUEUE]


def test_an_agents_workers_read_their_hosts_queues_only(two_hosts, settings):
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "beta", True
    assert queues.worker_queues("lifecycle") == [queues.lifecycle_queue("beta")]
    assert queues.worker_queues("jobs") == [queues.jobs_queue("beta")]


# --- the periodic work, per host ------------------------------------------------------------------


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_the_beats_tasks_send_one_task_per_enabled_host_to_its_queue(two_hosts, broker):
    from sandboxes.tasks import checklist_refresh_task, reconcile_all_task

    Host.objects.filter(name="local").update(enabled=False)  # (the suite's shared worker reads local's queue)
    host_services.host_create(actor=CLI, name="gamma", docker_url="tcp://198.18.59.2:2375", memory_mb=1, disk_mb=1)
    Host.objects.filter(name="gamma").update(enabled=False)
    assert reconcile_all_task.apply().get() == 2
    assert checklist_refresh_task.apply().get() == 2
    for name in ("alpha", "beta"):
        assert sorted(sent(m) for m in broker(queues.lifecycle_queue(name))) == [
            ("sandboxes.tasks.host_checklist_task", [name]),
            ("sandboxes.tasks.host_reconcile_task", [name]),
        ]
    assert broker(queues.lifecycle_queue("gamma")) == [] and broker(queues.lifecycle_queue("local")) == []
    assert broker(settings.CELERY_TASK_DEFAULT_QUEUE) == []


def gone_container(*sandboxes: Sandbox) -> None:
    """Each sandbox running, by its row, in a container its engine does not have."""
    for sandbox in sandboxes:
        Sandbox.objects.filter(pk=sandbox.pk).update(status="running", pending_action="", container_id=f"gone{sandbox.pk}")


def test_a_hosts_resync_touches_its_own_sandboxes_only(two_hosts, settings):
    from sandboxes.tasks import host_checklist_task, host_reconcile_task

    alpha, beta = two_hosts["on-alpha"], two_hosts["on-beta"]
    gone_container(alpha, beta)
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "alpha", True  # alpha's agent
    assert host_reconcile_task.apply(args=("alpha",)).get() == 1
    assert Sandbox.objects.get(pk=alpha.pk).status == "stopped"  # its container was removed outside the panel
    assert Sandbox.objects.get(pk=beta.pk).status == "running"  # another host's: not looked at
    assert host_checklist_task.apply(args=("alpha",)).get() == 1
    assert Sandbox.objects.get(pk=alpha.pk).checklist_checked_at is not None
    assert Sandbox.objects.get(pk=beta.pk).checklist_checked_at is None


def test_a_worker_refuses_another_hosts_periodic_work(two_hosts, settings, caplog):
    from sandboxes.tasks import host_checklist_task, host_reconcile_task

    alpha, beta = two_hosts["on-alpha"], two_hosts["on-beta"]
    gone_container(alpha, beta)
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "alpha", True
    assert host_reconcile_task.apply(args=("beta",)).get() == 0
    assert host_checklist_task.apply(args=("beta",)).get() == 0
    assert Sandbox.objects.get(pk=beta.pk).status == "running" and Sandbox.objects.get(pk=beta.pk).checklist_checked_at is None
    assert "the resync for host beta refused: this worker serves alpha" in caplog.text
    # The panel's own machine serves the hosts no agent serves (alpha's engine is reached from
    # there), never an agent's host.
    settings.PANEL_HOST, settings.PANEL_HOST_AGENT = "local", False
    assert host_reconcile_task.apply(args=("beta",)).get() == 0
    assert host_reconcile_task.apply(args=("alpha",)).get() == 1
    assert Sandbox.objects.get(pk=beta.pk).status == "running"


def test_a_tls_redis_url_has_its_certificate_checked_by_the_broker():
    from kombu import Connection

    from controlpanel.settings.queue import celery_broker_url

    url = celery_broker_url("rediss://:pw@198.18.59.1:6390/0")
    assert Connection(url).ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # kombu's own default is CERT_NONE
    assert celery_broker_url("rediss://:pw@198.18.59.1:6390/0?ssl_cert_reqs=optional").endswith("?ssl_cert_reqs=optional")


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_a_team_freeze_sends_each_incident_and_each_hosts_snapshots_to_its_host(
    two_hosts, broker, admin_user, django_capture_on_commit_callbacks
):
    from incidents import services as incidents

    for sandbox in two_hosts.values():
        Sandbox.objects.filter(pk=sandbox.pk).update(status="running", pending_action="", container_id=f"c{sandbox.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        made, skipped = incidents.freeze_team(actor=admin_user, team=two_hosts["on-alpha"].team, severity="high", summary="seen")
    assert len(made) == 2 and not skipped
    group = str(made[0].group)
    for name in ("alpha", "beta"):
        incident = next(i for i in made if i.sandbox.host.name == name)
        assert [sent(m) for m in broker(queues.lifecycle_queue(name))] == [("incidents.tasks.incident_step_task", [incident.pk])]
        # The snapshots, each an evidence archive, one after another: a job, as long as backups.
        assert [sent(m) for m in broker(queues.jobs_queue(name))] == [("incidents.tasks.incident_group_snapshot_task", [group, name])]
    assert broker(settings.CELERY_TASK_DEFAULT_QUEUE) == []


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_an_incidents_snapshot_and_reset_are_jobs_on_its_hosts_jobs_queue_with_the_jobs_time_limits(
    two_hosts, broker, admin_user, django_capture_on_commit_callbacks
):
    """The evidence archive (snapshot) and a reset's restore take as long as a backup: they must
    not hold a lifecycle worker, nor stop at the lifecycle tasks' 15 minutes."""
    from controlpanel.celery import app
    from incidents import services as incidents
    from incidents.models import Incident

    beta = two_hosts["on-beta"]
    Sandbox.objects.filter(pk=beta.pk).update(status="running", pending_action="", container_id="c1")
    with django_capture_on_commit_callbacks(execute=True):
        incident = incidents.incident_declare(actor=admin_user, sandbox=Sandbox.objects.get(pk=beta.pk), severity="high", summary="seen")
    assert [sent(m) for m in broker(queues.lifecycle_queue("beta"))] == [("incidents.tasks.incident_step_task", [incident.pk])]
    Incident.objects.filter(pk=incident.pk).update(state=Incident.State.DONE)
    Sandbox.objects.filter(pk=beta.pk).update(pending_action="")  # the declare step ended
    with django_capture_on_commit_callbacks(execute=True):
        incidents.incident_advance(actor=admin_user, incident=Incident.objects.get(pk=incident.pk), step="snapshot")
    assert [sent(m) for m in broker(queues.jobs_queue("beta"))] == [("incidents.tasks.incident_job_task", [incident.pk])]
    assert len(broker(queues.lifecycle_queue("beta"))) == 1  # the declare step's, nothing more
    for name in ("incidents.tasks.incident_job_task", "incidents.tasks.incident_group_snapshot_task"):
        limits = app.tasks[name]
        assert limits.soft_time_limit > settings.BACKUP_MAX_SECONDS and limits.time_limit > limits.soft_time_limit, name
    assert app.tasks["incidents.tasks.incident_step_task"].soft_time_limit in (None, settings.CELERY_TASK_SOFT_TIME_LIMIT)


@pytest.mark.docker  # the tests' Redis, which `make test` starts (not the fast tier)
def test_a_terminal_on_an_agents_host_is_hung_up_by_that_hosts_worker(two_hosts, broker):
    """The page's websocket closes on the panel's machine; a shell on another machine's engine is
    not ours to signal, so its hang-up goes to that host's queue, for the agent there. An engine
    reached from here with no agent (alpha: a URL) gets none: nothing would read it."""
    from sandboxes.services import terminals

    Sandbox.objects.filter(pk__in=[s.pk for s in two_hosts.values()]).update(container_id="c" * 64)  # running there
    alpha, beta = (Sandbox.objects.get(pk=two_hosts[name].pk) for name in ("on-alpha", "on-beta"))
    assert routed("sandboxes.tasks.terminal_end_task", "beta", "e" * 64) == queues.lifecycle_queue("beta")
    terminals.end_shell(sandbox=beta, exec_id="e" * 64)
    terminals.end_shell(sandbox=alpha, exec_id="a" * 64)
    on_beta = broker(queues.lifecycle_queue("beta"))
    assert [sent(raw) for raw in on_beta] == [("sandboxes.tasks.terminal_end_task", ["beta", "e" * 64, beta.pk])]
    assert broker(queues.lifecycle_queue("alpha")) == [] and broker(settings.CELERY_TASK_DEFAULT_QUEUE) == []
