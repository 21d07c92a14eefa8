"""The default Claude Code image, built offline by `make run`/`make test`, works in a sandbox."""

import pytest
from django.conf import settings
from django.core.management import call_command

from sandboxes import engine, services
from sandboxes.management.commands.build_images import OFFICIAL_BASE, OFFLINE_BASE
from tests.support.docker import docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
IMAGE = "ccpanel/claude-code:latest"


def test_claude_runs_as_uid_1000_in_a_sandbox(make_sandbox, clean_docker, capsys):
    call_command("build_images", tag=IMAGE)  # built already by make: reused, not rebuilt
    assert "present; reusing it" in capsys.readouterr().out
    assert engine.engine_for().image_exists(OFFLINE_BASE) or engine.engine_for().image_exists(OFFICIAL_BASE)
    sandbox = make_sandbox("agent", image=IMAGE, memory_mb=1024)
    assert sandbox.status == "running", sandbox.status_detail
    code, out = engine.engine_for().exec_run(sandbox.container_id, ["claude", "--version"])
    assert code == 0 and "Claude Code" in out
    code, out = engine.engine_for().exec_run(sandbox.container_id, ["id", "-u"])
    assert out.strip() == str(settings.SANDBOX_UID)
    code, out = engine.engine_for().exec_run(sandbox.container_id, ["sh", "-c", "node --version; git --version; rg --version; ssh -V 2>&1"])
    assert code == 0 and out.startswith("v22.") and "git version" in out and "ripgrep" in out and "OpenSSH" in out
    data = engine.engine_for().inspect_container(sandbox.container_id)
    assert data["Config"]["User"] == "1000:1000"
    # The CIS Docker Benchmark's image and runtime checks (4.6, 4.8, 5.13, 5.19), read back.
    health = data["Config"]["Healthcheck"]["Test"]
    code, out = engine.engine_for().exec_run(sandbox.container_id, health[1:] if health[0] == "CMD" else ["sh", "-c", health[1]])
    assert code == 0, out
    # No setuid or setgid program in the image (read by root with Docker's default capabilities,
    # in a container of the test's own: the sandbox's root can read no one's folders).
    found = docker_cli(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "find", IMAGE, "/", "-xdev", "-type", "f", "-perm", "/6000"
    )
    assert found.stdout.strip() == "", found.stdout
    assert data["HostConfig"]["ReadonlyRootfs"] is True
    code, out = engine.engine_for().exec_run(
        sandbox.container_id,
        ["sh", "-c", "touch /usr/x 2>/dev/null && echo root-writable; touch /tmp/t $HOME/h /workspace/Projects/p && echo ok; ulimit -n"],
    )
    assert out.split() == ["ok", str(settings.SANDBOX_NOFILE)], out
    services.sandbox_request_action(actor=services.SystemActor("t"), sandbox=sandbox, action="destroy", enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action="destroy")
