"""The production defaults (8 GB, 4 CPUs or all there are) give a sandbox that starts here."""

import json
import os
from decimal import Decimal

import pytest

from tests.support.settings import base_settings

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def production_defaults() -> dict:
    memory, cpus, max_cpus = base_settings(
        "SANDBOX_DEFAULT_MEMORY_MB", "SANDBOX_DEFAULT_CPUS", "SANDBOX_MAX_CPUS", unset=lambda name: name.startswith("SANDBOX_")
    )
    return {"memory_mb": memory, "cpus": cpus, "max_cpus": max_cpus}


def test_default_limits_fit_this_machine_and_start(make_sandbox, clean_docker):
    defaults = production_defaults()
    assert defaults["memory_mb"] == 8192
    assert defaults["cpus"] == min(4, os.cpu_count()) and defaults["max_cpus"] == os.cpu_count()
    sandbox = make_sandbox("defaults", memory_mb=defaults["memory_mb"], cpus=Decimal(str(defaults["cpus"])))
    assert sandbox.status == "running", sandbox.status_detail


def test_a_sandbox_has_a_read_only_root_unless_it_opts_out(make_sandbox, clean_docker, settings):
    """CIS Docker 5.13 and 5.19, read back from Docker; the opt-out is the sandbox's own."""
    from tests.support.docker import docker_cli

    hardened = make_sandbox("rootfs-ro")
    loose = make_sandbox("rootfs-rw", writable_root=True)
    for sandbox, read_only in ((hardened, True), (loose, False)):
        assert sandbox.status == "running", sandbox.status_detail
        host = json.loads(docker_cli("inspect", "-f", "{{json .HostConfig}}", sandbox.container_id).stdout)
        assert host["ReadonlyRootfs"] is read_only
        # Each at most a quarter of the memory: both full still leave half of it to the processes.
        size = min(settings.SANDBOX_TMP_MB, sandbox.memory_mb // 4) * 1024 * 1024
        assert host["Tmpfs"] == {
            **{t: f"rw,nosuid,nodev,size={size}" for t in ("/tmp", "/var/tmp")},
            "/run/secrets": f"rw,nosuid,nodev,size={4 << 20},noexec,mode=0700,uid=1000,gid=1000",
        }
        assert sorted((u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]) == [
            ("nofile", settings.SANDBOX_NOFILE, settings.SANDBOX_NOFILE),
            ("nproc", settings.SANDBOX_NPROC, settings.SANDBOX_NPROC),
        ]
        wrote = docker_cli("exec", "-u", "0", sandbox.container_id, "sh", "-c", "touch /etc/x && echo wrote", check=False).stdout.strip()
        assert (wrote == "wrote") is not read_only
        tmp = docker_cli("exec", sandbox.container_id, "sh", "-c", "touch /tmp/x /workspace/Projects/x && echo ok", check=False)
        assert tmp.stdout.strip() == "ok", tmp.stderr


def test_filling_tmp_leaves_the_sandbox_room_to_run(make_sandbox, clean_docker):
    """/tmp and /var/tmp are in memory and count against the limit: filled to the brim, they
    still leave half of it, so later processes (the shell, the health check, the `rm` that
    cleans up) are not killed."""
    from tests.support.docker import docker_cli

    sandbox = make_sandbox("tmpfill", memory_mb=256)
    for target in ("/tmp", "/var/tmp"):
        docker_cli("exec", sandbox.container_id, "sh", "-c", f"dd if=/dev/zero of={target}/fill bs=1M count=1000", check=False)
    done = docker_cli(
        "exec",
        sandbox.container_id,
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null && echo 100M; rm /tmp/fill /var/tmp/fill; echo alive",
        check=False,
    )
    assert done.returncode == 0 and done.stdout.split() == ["100M", "alive"], done
    state = json.loads(docker_cli("inspect", "-f", "{{json .State}}", sandbox.container_id).stdout)
    assert state["Running"] and not state["OOMKilled"]
