"""Sandboxes made and driven in the test's own process (no worker)."""

from sandboxes import services
from sandboxes.models import Sandbox
from teams.models import Team
from tests.support.docker import TEST_IMAGE


def act(sandbox: Sandbox, action: str) -> Sandbox:
    """Request `action` of the sandbox and carry it out here (no worker); the sandbox after it."""
    services.sandbox_request_action(actor=services.SystemActor("test"), sandbox=sandbox, action=action, enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action=action)
    return Sandbox.objects.get(pk=sandbox.pk)


def create_form(team: Team, **changes) -> dict:
    """What the New sandbox page posts for a sandbox "good" of `team` (512 MB, one CPU, on the
    internet, no extra mount), with `changes`."""
    return {
        "name": "good",
        "team": team.pk,
        "image": TEST_IMAGE,
        "memory_mb": 512,
        "cpus": "1",
        "network_mode": "internet",
        "extra_mounts": "",
        **changes,
    }
