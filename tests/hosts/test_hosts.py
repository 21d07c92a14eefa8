"""Hosts, fast: the engine follows the row, the Hosts page (superusers only), host changes
audited, the heartbeat, and the dashboard naming hosts only when there are several."""

from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from hosts import heartbeat, selectors
from hosts import services as host_services
from hosts.models import Host
from sandboxes import engine, services
from teams.models import Membership
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db
SOCKET = "unix:///var/run/docker.sock"
CLI = services.SystemActor("test")


def create(team, name: str, **kwargs):
    params = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal(1), network_mode="none", enqueue=False)
    return services.sandbox_create(actor=CLI, team=team, name=name, **{**params, **kwargs})


def add_second(**kwargs) -> Host:
    params = {"name": "second", "docker_url": SOCKET, "cpus": Decimal(2), "memory_mb": 2048, "disk_mb": 10_000, **kwargs}
    return host_services.host_create(actor=CLI, **params)


def test_the_default_host_is_the_local_rows_and_a_blank_url_follows_the_settings():
    local = host_services.local_host()
    assert engine.default_host() == engine.Host("local", None, settings.DOCKER_TIMEOUT)
    with override_settings(DOCKER_HOST="unix:///elsewhere.sock"):
        assert engine.default_host().base_url == "unix:///elsewhere.sock"
    Host.objects.filter(pk=local.pk).update(docker_url=SOCKET)
    assert engine.default_host().base_url == SOCKET


def test_without_a_local_row_the_default_host_is_the_settings():
    Host.objects.all().delete()
    with override_settings(DOCKER_HOST="unix:///before-migrate.sock"):
        assert engine.default_host() == engine.Host("local", "unix:///before-migrate.sock", settings.DOCKER_TIMEOUT)


def test_a_new_host_takes_this_machines_capacity_unless_told():
    host = host_services.host_create(actor=CLI, name="plain", labels="gpu, fast-disk gpu")
    assert host.cpus >= 1 and host.memory_mb > 0 and host.disk_mb > 0
    assert host.labels == ["fast-disk", "gpu"]
    with pytest.raises(host_services.HostError) as refused:
        host_services.host_create(actor=CLI, name="Bad Name", docker_url="http://x", labels=["UPPER"])
    assert set(refused.value.errors) == {"name", "docker_url", "labels"}
    with pytest.raises(host_services.HostError, match="exists"):
        host_services.host_create(actor=CLI, name="plain")


def test_host_changes_are_audited(admin_user):
    host = host_services.host_create(actor=admin_user, name="audited", docker_url=SOCKET, memory_mb=1024, source_ip="127.0.0.2")
    host_services.host_set_state(actor=admin_user, host=host, draining=True)
    host_services.host_set_state(actor=admin_user, host=host, draining=True)  # no change: no event
    host_services.host_set_state(actor=admin_user, host=host, enabled=False, draining=False)
    host_services.host_delete(actor=admin_user, host=host)
    events = list(AuditEvent.objects.filter(target="host audited").order_by("seq"))
    assert [e.action for e in events] == ["host.create", "host.update", "host.update", "host.delete"]
    assert events[0].details["docker_url"] == SOCKET and events[0].source_ip == "127.0.0.2"
    assert events[1].details == {"draining": {"was": False, "now": True}}
    assert events[2].details == {"enabled": {"was": True, "now": False}, "draining": {"was": True, "now": False}}
    assert all(e.actor_name == "admin" for e in events)


def test_only_a_superuser_changes_hosts(team, django_user_model):
    user = django_user_model.objects.create_user("member", password="pw-123-long")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    with pytest.raises(host_services.PermissionDenied):
        host_services.host_create(actor=user, name="nope")
    assert not Host.objects.filter(name="nope").exists()


def test_a_host_with_sandboxes_cannot_be_deleted(fake_engine, clean_workspace, team):
    add_second()
    sandbox = create(team, "holder", host="second")
    with pytest.raises(host_services.HostError, match="holds 1 sandbox"):
        host_services.host_delete(actor=CLI, host=sandbox.host)
    assert Host.objects.filter(name="second").exists()
    assert not AuditEvent.objects.filter(action="host.delete").exists()


def test_a_heartbeat_writes_the_engine_version_or_its_error(fake_engine):
    local = host_services.local_host()
    assert heartbeat.beat(engine.default_host()) == ""
    local.refresh_from_db()
    version = fake_engine.ping()
    assert local.engine_version == version and local.last_error == "" and not selectors.is_stale(local.last_heartbeat)
    fake_engine.down = True
    assert "not reachable" in heartbeat.beat(engine.default_host())
    local.refresh_from_db()
    assert "not reachable" in local.last_error and local.engine_version == version  # the version seen last is kept


def test_the_hosts_page_shows_each_host_to_a_superuser(logged_in, fake_engine, clean_workspace, team):
    local = host_services.local_host()
    host_services.host_heartbeat(host_name="local", engine_version="27.5.1")
    add_second(labels=["gpu"])
    create(team, "on-second", memory_mb=512, host="second")
    page = logged_in.get("/hosts/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/hosts/"' in html  # the nav link, for superusers
    assert "27.5.1" in html and "reachable" in html  # local beat just now
    second_row = html[html.index('id="host-second"') :]
    assert SOCKET in second_row and "never seen" in second_row and "512 / 2048" in second_row and "gpu" in second_row
    # A beat older than three intervals is shown as stale.
    Host.objects.filter(pk=local.pk).update(last_heartbeat=local.created_at - selectors.STALE_AFTER)
    assert "(stale)" in logged_in.get("/hosts/").content.decode()


def test_the_hosts_page_adds_drains_and_deletes_through_the_services(logged_in):
    response = logged_in.post("/hosts/new/", {"name": "third", "docker_url": SOCKET, "memory_mb": "1024", "labels": "gpu"})
    assert response.status_code == 302
    host = Host.objects.get(name="third")
    assert host.memory_mb == 1024 and host.labels == ["gpu"]
    assert logged_in.post(f"/hosts/{host.pk}/state/", {"draining": "1"}).status_code == 302
    host.refresh_from_db()
    assert host.draining
    assert logged_in.post("/hosts/new/", {"name": "third"}).status_code == 400  # taken
    assert logged_in.post(f"/hosts/{host.pk}/delete/").status_code == 302
    assert not Host.objects.filter(name="third").exists()
    assert list(AuditEvent.objects.filter(target="host third").values_list("action", flat=True).order_by("seq")) == [
        "host.create",
        "host.update",
        "host.delete",
    ]


def test_the_hosts_page_offers_delete_where_host_delete_allows_it_with_no_query_per_host(logged_in, fake_engine, clean_workspace, team):
    """Delete is offered only for a host no sandbox row names (a destroyed sandbox's included, as
    host_delete rules), and the page reads that with the hosts: its queries do not grow with them."""
    from sandboxes.models import Sandbox

    add_second()
    holder = create(team, "holder", host="second")
    Sandbox.objects.filter(pk=holder.pk).update(status=Sandbox.Status.DESTROYED)  # its row stays: history
    empty = add_second(name="third")

    def page() -> tuple[str, int]:
        with CaptureQueriesContext(connection) as queries:
            html = logged_in.get("/hosts/").content.decode()
        return html, len(queries)

    html, few = page()
    assert f'action="/hosts/{empty.pk}/delete/"' in html
    assert f'action="/hosts/{holder.host.pk}/delete/"' not in html
    for n in range(3):
        add_second(name=f"more{n}")
    html, more = page()
    assert more == few and html.count("/delete/") == 5  # local, third and the three more


def test_the_hosts_page_is_not_there_for_anyone_else(client, team, django_user_model):
    user = django_user_model.objects.create_user("teamadmin", password="pw-123-long")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    client.force_login(user)
    host = host_services.local_host()
    assert client.get("/hosts/").status_code == 404
    assert client.post("/hosts/new/", {"name": "sneaky"}).status_code == 404
    assert client.post(f"/hosts/{host.pk}/state/", {"enabled": "0"}).status_code == 404
    assert client.post(f"/hosts/{host.pk}/delete/").status_code == 404
    assert Host.objects.get(pk=host.pk).enabled and not Host.objects.filter(name="sneaky").exists()
    assert 'href="/hosts/"' not in client.get("/").content.decode()


def test_the_dashboard_names_hosts_only_when_there_are_several(logged_in, fake_engine, clean_workspace, team):
    create(team, "here")
    logged_in.get("/")  # the session's first page: what it sets up is not counted
    with CaptureQueriesContext(connection) as one_host:
        html = logged_in.get("/").content.decode()
    assert "<th>Host</th>" not in html and 'class="host"' not in html
    add_second()
    with CaptureQueriesContext(connection) as two_hosts:
        html = logged_in.get("/").content.decode()
    assert "<th>Host</th>" in html and '<td class="host">local</td>' in html
    assert len(two_hosts) == len(one_host)  # the host's name and the count come with the page's own query
    form = logged_in.get("/sandboxes/new/").content.decode()
    assert 'name="host"' in form and '<option value="second">' in form


def test_the_hosts_page_shows_each_hosts_warm_pool(logged_in, settings):
    from sandboxes.models import WarmSlot

    local = host_services.local_host()
    settings.WARM_POOL = (("img:a", "internet", 2), ("img:b", "none", 1))
    WarmSlot.objects.create(key="0123456789abcdef", host=local, image="img:a", network_mode="internet", status=WarmSlot.Status.READY)
    WarmSlot.objects.create(key="fedcba9876543210", host=local, image="img:a", network_mode="internet")  # preparing: not ready
    row = logged_in.get("/hosts/").content.decode().split('id="host-local"')[1].split("</tr>")[0]
    assert "1 / 3 ready" in row
    Host.objects.filter(pk=local.pk).update(draining=True)  # a draining host is asked for none
    row = logged_in.get("/hosts/").content.decode().split('id="host-local"')[1].split("</tr>")[0]
    assert "1 / 0 ready" in row


@pytest.mark.django_db
def test_a_host_with_a_warm_pool_cannot_be_deleted():
    """Its slots' rows went with it (CASCADE) while their started containers and folders stayed
    on its engine, where nothing would tidy them again."""
    from sandboxes.models import WarmSlot

    host = host_services.host_create(actor=CLI, name="pooled", docker_url="unix:///var/run/docker.sock")
    WarmSlot.objects.create(key="k1", host=host, image="img", network_mode="internet", status=WarmSlot.Status.READY)
    with pytest.raises(host_services.HostError, match="warm pool"):
        host_services.host_delete(actor=CLI, host=host)
    assert Host.objects.filter(pk=host.pk).exists() and WarmSlot.objects.filter(key="k1").exists()
    WarmSlot.objects.all().delete()
    host_services.host_delete(actor=CLI, host=host)
    assert not Host.objects.filter(pk=host.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"), [("memory_mb", str(2**31)), ("disk_mb", str(10**20)), ("cpus", "100000"), ("memory_mb", "1" * 400)]
)
def test_a_capacity_beyond_its_column_is_a_message_not_a_500(logged_in, field, value):
    """PostgreSQL refuses an integer beyond its column (SQLite one beyond 64 bits): judged first."""
    logged_in.raise_request_exception = False
    response = logged_in.post("/hosts/new/", {"name": "huge", "docker_url": SOCKET, field: value})
    assert response.status_code == 400
    assert not Host.objects.filter(name="huge").exists()
    with pytest.raises(host_services.HostError):
        host_services.host_create(actor=CLI, name="huge2", docker_url=SOCKET, **{field: int(value) if field != "cpus" else value})
