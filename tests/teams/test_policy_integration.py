"""The team policy on the real engine: what a refused create leaves behind is nothing at all,
and a lowered policy leaves running containers running."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from sandboxes import engine
from sandboxes.models import Sandbox
from teams import policy
from tests.support.docker import docker_cli

pytestmark = pytest.mark.django_db


def ours() -> list[str]:
    return [c.name for c in engine.engine_for().instance_containers()]


@pytest.mark.docker
def test_the_cli_refuses_beyond_each_limit_and_leaves_nothing(team, test_image, clean_docker, settings):
    settings.SANDBOX_MAX_CPUS = 2
    actor = policy.SystemActor("test")
    limits = {"max_sandboxes": 2, "max_memory_mb": 768, "max_cpus": Decimal("1.5"), "max_disk_mb": 3000, "default_disk_mb": 1000}
    policy.policy_set(actor=actor, team=team, values={**dict.fromkeys(policy.FIELDS), **limits})

    def create(name: str, *args: str) -> str:
        out = StringIO()
        call_command("sandbox", "create", name, "--image", test_image, "--network", "none", *args, stdout=out)
        return out.getvalue()

    assert "real1: running" in create("real1", "--memory-mb", "512", "--cpus", "1")
    before = ours()
    with pytest.raises(
        CommandError, match=r"allows at most 768 MB of memory in total; its sandboxes have 512 MB and this one asks for 512 MB"
    ):
        create("real2", "--memory-mb", "512", "--cpus", "0.5")
    with pytest.raises(CommandError, match=r"allows at most 1\.5 CPUs in total; its sandboxes have 1 and this one asks for 1\b"):
        create("real2", "--memory-mb", "256", "--cpus", "1")
    policy.policy_set(actor=actor, team=team, values={**dict.fromkeys(policy.FIELDS), **limits, "max_disk_mb": 1500})
    with pytest.raises(
        CommandError, match=r"allows at most 1500 MB of disk in total; its sandboxes have 1000 MB and this one asks for 1000 MB"
    ):
        create("real2", "--memory-mb", "256", "--cpus", "0.5")
    policy.policy_set(actor=actor, team=team, values={**dict.fromkeys(policy.FIELDS), **limits})
    assert "real2: running" in create("real2", "--memory-mb", "256", "--cpus", "0.5")
    with pytest.raises(CommandError, match=r"Team 'Default' allows at most 2 sandboxes; it has 2\."):
        create("real3", "--memory-mb", "256", "--cpus", "0.25")
    assert not Sandbox.objects.filter(name="real3").exists()
    assert len(ours()) == len(before) + 1  # real2 only: the refused creates made no container

    # Lowered below what runs: the running containers keep running, new ones are refused.
    _saved, over = policy.policy_set(actor=actor, team=team, values={**dict.fromkeys(policy.FIELDS), "max_sandboxes": 1})
    assert over == ["2 sandboxes (limit 1)"]
    for sandbox in Sandbox.objects.filter(name__in=["real1", "real2"]):
        assert docker_cli("inspect", "-f", "{{.State.Status}}", sandbox.container_id).stdout.strip() == "running"
    with pytest.raises(CommandError, match=r"allows at most 1 sandboxes; it has 2\."):
        create("real3")
