"""The security policy refuses every unsafe spec, and engine.create_container cannot skip it."""

import dataclasses
import os

import pytest

from sandboxes import engine, policy
from tests.conftest import docker_cli


@pytest.fixture
def root(tmp_path):
    (tmp_path / "ws").mkdir()
    return str(tmp_path / "ws")


def good_spec(root: str, **changes) -> policy.ContainerSpec:
    spec = policy.ContainerSpec(
        name="ccpanel-test-policy", image="ccpanel/test-busybox:latest", memory_bytes=256 << 20,
        nano_cpus=10**9, pids_limit=100, network="none",
        binds=(policy.BindMount(root, "/workspace/Projects"),),
        volumes=(policy.VolumeMount("v", "/home/claude"),),
    )
    return dataclasses.replace(spec, **changes)


def problems(spec, root) -> list[str]:
    with pytest.raises(policy.PolicyViolation) as info:
        policy.check(spec, allowed_roots=[root])
    return info.value.problems


def test_good_spec_passes(root):
    policy.check(good_spec(root), allowed_roots=[root])


@pytest.mark.parametrize("changes, expected", [
    ({"privileged": True}, "Privileged"),
    ({"cap_add": ("NET_ADMIN",)}, "capabilities"),
    ({"cap_drop": ()}, "capabilities"),
    ({"security_opt": ()}, "no-new-privileges"),
    ({"security_opt": ("no-new-privileges:true", "seccomp=unconfined")}, "seccomp"),
    ({"security_opt": ("no-new-privileges:true", "apparmor=unconfined")}, "AppArmor"),
    ({"user": "0:0"}, "non-root"),
    ({"user": "root"}, "non-root"),
    ({"memory_bytes": 0}, "limits"),
    ({"pids_limit": 0}, "limits"),
    ({"network": "host"}, "host network"),
    ({"pid_mode": "host"}, "PID namespace"),
    ({"ipc_mode": "host"}, "IPC namespace"),
    ({"uts_mode": "host"}, "UTS namespace"),
    ({"userns_mode": "host"}, "user namespace"),
    ({"devices": ("/dev/kvm:/dev/kvm:rwm",)}, "devices"),
    ({"runtime": "kata"}, "Runtime"),
    ({"ports": (policy.PortBinding(8080, 8080, "0.0.0.0"),)}, "127.0.0.1"),
    ({"volumes": (policy.VolumeMount("v", "/etc"),)}, "home directory"),
])
def test_unsafe_settings_are_refused(root, changes, expected):
    assert any(expected in p for p in problems(good_spec(root, **changes), root))


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run", "/", "/etc", "/usr",
                                    "/root", "/home", "/proc", "/var/lib/docker"])
def test_system_paths_and_docker_socket_are_refused(root, source):
    spec = good_spec(root, binds=(policy.BindMount(source, "/workspace/x"),))
    assert problems(spec, root)


def test_path_outside_allowed_root_is_refused(root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    spec = good_spec(root, binds=(policy.BindMount(str(tmp_path / "elsewhere"), "/workspace/x"),))
    assert any("outside the allowed folders" in p for p in problems(spec, root))


def test_symlink_resolving_outside_is_refused(root):
    os.symlink("/etc", os.path.join(root, "innocent"))
    spec = good_spec(root, binds=(policy.BindMount(os.path.join(root, "innocent"), "/workspace/x"),))
    found = problems(spec, root)
    assert any("resolves to /etc" in p for p in found)


def test_mount_targets_must_stay_in_workspace(root):
    for target in ("/etc", "/", "/workspace/../etc", "relative", "/workspace"):
        assert problems(good_spec(root, binds=(policy.BindMount(root, target),)), root)


def test_all_problems_are_reported_together(root):
    found = problems(good_spec(root, privileged=True, user="0", network="host"), root)
    assert len(found) == 3


@pytest.mark.docker
def test_engine_refuses_before_docker_sees_the_spec(root, docker_engine, test_image):
    spec = good_spec(root, name="ccpanel-test-refused", privileged=True)
    with pytest.raises(policy.PolicyViolation):
        engine.create_container(spec, allowed_roots=[root])
    assert docker_cli("inspect", "ccpanel-test-refused", check=False).returncode != 0


def test_inspect_report_flags_what_does_not_hold():
    data = {"Config": {"User": ""}, "Mounts": [{"Source": "/var/run/docker.sock", "Destination": "/d", "RW": True}],
            "HostConfig": {"CapDrop": None, "CapAdd": ["SYS_ADMIN"], "Privileged": True, "Memory": 0, "NanoCpus": 0,
                           "PidsLimit": None, "NetworkMode": "host", "SecurityOpt": None, "Devices": [{}],
                           "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}}}
    assert [holds for _, holds, _ in policy.inspect_report(data)] == [False] * 12
