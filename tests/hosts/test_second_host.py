"""A second host row, on the real engine: it points at this machine's own Docker socket by its
URL, so the panel reaches it through a client of its own; and the events watcher's heartbeat."""

from decimal import Decimal

import pytest

from hosts import services as host_services
from hosts.models import Host
from sandboxes import engine, services
from tests.support.docker import docker_cli
from tests.support.sandboxes import act
from tests.support.waiting import wait_for

SOCKET = "unix:///var/run/docker.sock"
CLI = services.SystemActor("test")


@pytest.mark.docker
@pytest.mark.django_db
def test_a_sandbox_placed_on_the_second_host_starts_there_for_real(make_sandbox, clean_docker):
    host_services.local_host()
    host_services.host_create(actor=CLI, name="second", docker_url=SOCKET, cpus=Decimal(2), memory_mb=64_000, disk_mb=100_000)
    sandbox = make_sandbox("elsewhere", network_mode="none")  # placed by memory: second has the most
    assert sandbox.host.name == "second" and sandbox.status == "running", sandbox.status_detail
    assert engine.host_for(sandbox).base_url == SOCKET
    assert engine.engine_for(sandbox).host.name == "second"  # the second row's own client, not local's
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "true"
    sandbox = act(sandbox, "stop")
    assert docker_cli("inspect", "-f", "{{.State.Running}}", sandbox.container_id).stdout.strip() == "false"
    act(sandbox, "destroy")


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_events_watcher_writes_its_hosts_heartbeat(engine_watcher):
    local = host_services.local_host()
    version = docker_cli("version", "-f", "{{.Server.Version}}").stdout.strip()

    def beaten():
        row = Host.objects.get(pk=local.pk)
        return row.last_heartbeat is not None and row.engine_version == version and row.last_error == "" and row

    first = wait_for(beaten, timeout=15, what="a heartbeat").last_heartbeat
    wait_for(lambda: Host.objects.get(pk=local.pk).last_heartbeat > first, timeout=15, what="the next heartbeat")
