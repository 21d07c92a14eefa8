"""What the panel may assume of a host's engine: only this machine's own engine (its default
socket, by whatever name) is filtered by the egress rules and shares our process ids; only an
engine on a Unix socket mounts this machine's folders. Found in review: any unix:// URL counted
as this machine's engine, and a tcp:// or ssh:// host took sandboxes whose folders were judged
here and mounted there."""

import os
import socket
from decimal import Decimal

import pytest

from hosts import services as host_services
from hosts.models import Host
from sandboxes import engine, network, services
from sandboxes.models import Sandbox
from tests.support.docker import TEST_IMAGE
from tests.support.relay import Relay

CLI = services.SystemActor("test")


def test_only_the_default_socket_is_this_machines_engine(tmp_path):
    link = tmp_path / "docker.sock"
    link.symlink_to("/var/run/docker.sock")
    assert engine.Host("a", None, 1).is_local
    assert engine.Host("a", "unix:///var/run/docker.sock", 1).is_local
    assert engine.Host("a", f"unix://{link}", 1).is_local == os.path.exists("/var/run/docker.sock")  # the same file
    assert not engine.Host("a", "unix:///run/netns-two/docker.sock", 1).is_local  # another dockerd, maybe
    assert not engine.Host("a", "tcp://127.0.0.1:2375", 1).is_local
    assert engine.Host("a", "unix:///run/netns-two/docker.sock", 1).on_this_machine
    assert not engine.Host("a", "tcp://10.0.0.2:2375", 1).on_this_machine
    assert not engine.Host("a", "ssh://panel@elsewhere", 1).on_this_machine


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["unix://var/redis.sock", "unix:///x\x00y", "unix:///a b", "tcp://h:1/" + "x" * 300, "http://127.0.0.1:8000"]
)
def test_odd_docker_urls_are_refused(url):
    with pytest.raises(host_services.HostError) as refused:
        host_services.host_create(actor=CLI, name="odd", docker_url=url)
    assert "docker_url" in refused.value.errors
    assert not Host.objects.filter(name="odd").exists()


@pytest.fixture
def local(fake_engine, clean_workspace):
    host = host_services.local_host()
    Host.objects.filter(pk=host.pk).update(memory_mb=4096, labels=[])
    return host


def create(team, name: str, **kwargs) -> Sandbox:
    params = dict(image=TEST_IMAGE, memory_mb=512, cpus=Decimal("1"), network_mode="none", enqueue=False)
    return services.sandbox_create(actor=CLI, team=team, name=name, **{**params, **kwargs})


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["tcp://127.0.0.1:2375", "ssh://panel@elsewhere"])
def test_a_host_on_another_machine_takes_no_sandbox(local, team, url):
    host_services.host_create(actor=CLI, name="far", docker_url=url, cpus=Decimal(8), memory_mb=64_000, disk_mb=100_000)
    assert create(team, "auto").host.name == "local"  # the most memory, but not on this machine
    with pytest.raises(services.InvalidInput) as refused:
        create(team, "named", host="far")
    assert "another machine" in refused.value.errors["host"][0]


@pytest.mark.django_db
def test_a_sandbox_placed_on_another_machine_before_does_not_start(local, team):
    far = host_services.host_create(actor=CLI, name="far", docker_url="tcp://127.0.0.1:2375", memory_mb=4096, disk_mb=1000)
    sandbox = create(team, "old")
    Sandbox.objects.filter(pk=sandbox.pk).update(host=far)  # as a create before the rule did
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.ERROR and "another machine" in sandbox.status_detail, sandbox.status_detail


@pytest.mark.docker
@pytest.mark.django_db
def test_a_sandbox_on_another_dockers_socket_gets_no_network_while_the_rules_are_on(make_sandbox, clean_docker, settings, tmp_path):
    """The engine behind another socket has its own bridges, in a namespace the rules here may
    not filter: with the rules on, an internet-mode sandbox there is refused before it starts."""
    proxy = Relay.unix(str(tmp_path / "other-docker.sock"), "/var/run/docker.sock")  # to the panel, a dockerd of its own
    try:
        settings.SANDBOX_EGRESS_RULES = True
        host_services.local_host()
        host_services.host_create(
            actor=CLI, name="other", docker_url=f"unix://{tmp_path}/other-docker.sock", memory_mb=64_000, disk_mb=100_000
        )
        sandbox = make_sandbox("behind-proxy", network_mode="internet", host="other")
        assert sandbox.host.name == "other"
        assert sandbox.status == Sandbox.Status.ERROR, sandbox.status
        assert network.gate.REMOTE_ENGINE in sandbox.status_detail, sandbox.status_detail
        state = engine.engine_for(sandbox).container_state(sandbox.container_id) if sandbox.container_id else None
        assert state is None or state.status != "running"
    finally:
        proxy.close()


def test_a_local_socket_named_in_the_settings_counts_only_if_its_dockerd_shares_our_network(tmp_path, settings, monkeypatch):
    """DOCKER_LOCAL_SOCKET names the engine whose containers the egress rules here filter. Set to
    a dockerd in another network namespace (a mistake), its sandboxes would start "filtered" by
    rules they never pass through: the kernel is asked who answers the socket, and where it is."""
    from sandboxes.engine import client

    path = str(tmp_path / "own-docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    try:
        settings.DOCKER_LOCAL_SOCKET = path
        assert client.peer_in_our_network_namespace(path)  # this process answers: our namespace
        assert engine.Host("a", f"unix://{path}", 1).is_local
        ours = os.readlink("/proc/self/ns/net")
        real_readlink = os.readlink
        monkeypatch.setattr(client.os, "readlink", lambda p: "net:[1]" if p != "/proc/self/ns/net" else real_readlink(p))
        assert ours != "net:[1]"
        assert not client.peer_in_our_network_namespace(path)
        assert not engine.Host("a", f"unix://{path}", 1).is_local  # named local, but its dockerd is elsewhere
        monkeypatch.undo()
        assert not client.peer_in_our_network_namespace(str(tmp_path / "none.sock"))  # nobody answers: not counted
        settings.DOCKER_LOCAL_SOCKET = str(tmp_path / "none.sock")
        assert not engine.Host("a", f"unix://{tmp_path / 'none.sock'}", 1).is_local
    finally:
        server.close()
