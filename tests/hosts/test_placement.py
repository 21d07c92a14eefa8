"""Placement, fast: the real database, policy and workspace, the in-memory engine. The second
host points at this machine's own Docker socket, so the same rows work on the real engine
(test_second_host.py starts a sandbox there)."""

from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from hosts import services as host_services
from hosts.models import Host
from sandboxes import engine, services
from sandboxes.models import Sandbox
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.django_db
SOCKET = "unix:///var/run/docker.sock"
CLI = services.SystemActor("test")


@pytest.fixture
def local(fake_engine, clean_workspace):
    host = host_services.local_host()
    Host.objects.filter(pk=host.pk).update(memory_mb=4096, labels=[])
    return host


def second(**kwargs) -> Host:
    params = {"name": "second", "docker_url": SOCKET, "cpus": Decimal(2), "memory_mb": 2048, "disk_mb": 100_000, **kwargs}
    return host_services.host_create(actor=CLI, **params)


def create(team, name: str, memory_mb: int = 512, **kwargs) -> Sandbox:
    params = dict(image=TEST_IMAGE, memory_mb=memory_mb, cpus=Decimal("1"), network_mode="none", enqueue=False)
    return services.sandbox_create(actor=CLI, team=team, name=name, **{**params, **kwargs})


def test_with_one_host_every_sandbox_goes_to_local(local, team):
    sandbox = create(team, "only")
    assert sandbox.host.name == "local"
    assert engine.host_for(sandbox).base_url is None  # blank URL: this machine's socket, as the settings say


def test_a_new_sandbox_goes_to_the_host_with_the_most_free_memory(local, team):
    second(memory_mb=3000)
    assert create(team, "one", memory_mb=1024).host.name == "local"  # 4096 free against 3000
    assert create(team, "two", memory_mb=1024).host.name == "local"  # 3072 against 3000
    assert create(team, "three", memory_mb=1024).host.name == "second"  # 2048 against 3000
    assert create(team, "four", memory_mb=1024).host.name == "local"  # 2048 against 1976


def test_destroyed_sandboxes_hold_no_memory(local, team):
    second(memory_mb=3000)
    big = create(team, "big", memory_mb=2048)
    assert big.host.name == "local"
    assert create(team, "next", memory_mb=256).host.name == "second"  # local has 2048 left, second 3000
    Sandbox.objects.filter(pk=big.pk).update(status=Sandbox.Status.DESTROYED)
    assert create(team, "after", memory_mb=256).host.name == "local"  # 4096 free again


def test_labels_asked_for_choose_the_host(local, team):
    second(labels=["gpu", "fast-disk"])
    assert create(team, "gpu-one", host_labels=["gpu"]).host.name == "second"
    with pytest.raises(services.InvalidInput) as refused:
        create(team, "tpu-one", host_labels=["tpu"])
    assert "No enabled host that is not draining with the label(s) tpu" in refused.value.errors["host"][0]


def test_disabled_and_draining_hosts_take_no_new_sandbox(local, team):
    other = second(memory_mb=64_000)
    host_services.host_set_state(actor=CLI, host=other, draining=True)
    assert create(team, "a", memory_mb=256).host.name == "local"
    host_services.host_set_state(actor=CLI, host=other, draining=False, enabled=False)
    assert create(team, "b", memory_mb=256).host.name == "local"
    host_services.host_set_state(actor=CLI, host=other, enabled=True)
    assert create(team, "c", memory_mb=256).host.name == "second"


@pytest.mark.parametrize(
    ("setup", "asked", "message"),
    [
        ({"enabled": False}, {}, "Host second is disabled"),
        ({"draining": True}, {}, "Host second is draining"),
        ({}, {"host_labels": ["gpu"]}, "Host second lacks the label(s) gpu"),
    ],
)
def test_a_named_host_that_cannot_take_it_is_refused_saying_why(local, team, setup, asked, message):
    other = second()
    if setup:
        host_services.host_set_state(actor=CLI, host=other, **setup)
    with pytest.raises(services.InvalidInput) as refused:
        create(team, "named", host="second", **asked)
    assert message in refused.value.errors["host"][0]
    assert not Sandbox.objects.filter(name="named").exists()


def test_an_unknown_host_is_refused(local, team):
    with pytest.raises(services.InvalidInput) as refused:
        create(team, "nowhere", host="atlantis")
    assert refused.value.errors["host"] == ["There is no host named 'atlantis'."]


def test_a_named_host_takes_the_sandbox_and_its_engine_is_the_rows(local, team):
    second()
    sandbox = create(team, "there", host="second")
    assert sandbox.host.name == "second"
    assert engine.host_for(sandbox) == engine.Host("second", SOCKET, settings.DOCKER_TIMEOUT)


def test_the_memory_left_counts_stopped_sandboxes_too(local, team):
    second(memory_mb=5000)
    create(team, "stopped-one", memory_mb=2048, host="second")  # never started: still reserved
    assert create(team, "next", memory_mb=256).host.name == "local"  # 4096 left against 2952


def test_memory_decides_where_never_whether(local, team):
    """Docker's limits are caps: a host's sandboxes may be given more than it has, as on any
    Docker host (a team's resource policy bounds them where an admin wants)."""
    second(memory_mb=1024)
    assert create(team, "big", memory_mb=2048, host="second").host.name == "second"
    assert create(team, "bigger", memory_mb=8192).host.name == "local"  # the most left, though not enough


def test_the_cli_takes_a_host_and_says_why_it_refuses_one(local, team):
    with pytest.raises(CommandError, match="There is no host named 'atlantis'"):
        call_command("sandbox", "create", "cli-one", "--host", "atlantis", "--image", TEST_IMAGE, "--memory-mb", "256", "--network", "none")


def test_an_unreachable_host_takes_no_new_sandbox(local, team):
    """Its queue is read by no one: a sandbox placed there would wait in "creating" for good."""
    from datetime import timedelta

    from django.utils import timezone

    from hosts import placement

    far = second(memory_mb=1_000_000)  # the most memory left: chosen while it answers
    assert placement.place(memory_mb=512).name == "second"
    Host.objects.filter(pk=far.pk).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
    assert placement.place(memory_mb=512).name == local.name
    with pytest.raises(placement.Unplaceable, match="unreachable"):
        placement.place(memory_mb=512, host_name="second")
    with pytest.raises(services.InvalidInput, match="unreachable"):
        create(team, "named-there", host="second")
    assert not Sandbox.objects.filter(name="named-there").exists()


def test_an_agents_host_whose_agent_never_beat_takes_no_sandbox(local, team):
    """Joined, but its agent not started: nothing reads its queue, so a start would wait for good."""
    from django.utils import timezone

    from hosts import placement

    joined = Host.objects.create(name="joined", agent=True, panel_url="tcp://198.18.0.2:2376", memory_mb=10**6)
    assert placement.place(memory_mb=512).name == local.name
    with pytest.raises(placement.Unplaceable, match="make agent"):
        placement.place(memory_mb=512, host_name="joined")
    Host.objects.filter(pk=joined.pk).update(last_heartbeat=timezone.now())
    assert placement.place(memory_mb=512).name == "joined"
