"""The security policy is an allowlist: it refuses every unsafe spec, judges host folders as they
are on disk at the moment of the check, and engine.create_container cannot skip it."""

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from sandboxes import engine, policy, seccomp
from tests.support.docker import docker_cli

UUID = "01234567-89ab-cdef-0123-456789abcdef"


@pytest.fixture
def ws() -> Iterator[Path]:
    """A workspace root with one sandbox's Projects folder. Under var/, not /tmp: /tmp is
    writable by everyone, so nothing under it may be mounted (see the ownership tests)."""
    root = Path(settings.VAR_DIR) / f"{settings.PANEL_INSTANCE}-policy-{uuid.uuid4().hex[:8]}"
    (root / "ws" / "box" / "Projects").mkdir(parents=True)
    yield root / "ws"
    shutil.rmtree(root)


def rules(ws: Path, mount_roots=()) -> policy.Rules:
    return policy.Rules(workspace_root=str(ws), mount_roots=tuple(str(r) for r in mount_roots), networks=("ccpanel-test",))


def bind(path: Path, target="/workspace/Projects", **kw) -> policy.BindMount:
    kw.setdefault("workspace", True)
    return policy.BindMount(str(path), target, chain=policy.dir_chain(str(path)), **kw)


def good_spec(ws: Path, **changes) -> policy.ContainerSpec:
    spec = policy.ContainerSpec(
        name="ccpanel-test-policy",
        image="ccpanel/test-busybox:latest",
        memory_bytes=256 << 20,
        nano_cpus=10**9,
        pids_limit=100,
        network="none",
        runtime="runc",
        binds=(bind(ws / "box" / "Projects"),),
        volumes=(policy.VolumeMount(f"ccpanel-test-box-home-{UUID}", "/home/claude"),),
        labels={policy.LABEL_UUID: UUID},
    )
    return dataclasses.replace(spec, **changes)


def problems(spec, r) -> list[str]:
    with pytest.raises(policy.PolicyViolation) as info:
        policy.check(spec, r)
    return info.value.problems


def test_good_spec_passes(ws):
    policy.check(good_spec(ws), rules(ws))
    policy.check(good_spec(ws, network="ccpanel-test", runtime="runsc"), rules(ws))


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"privileged": True}, "Privileged"),
        ({"cap_add": ("NET_ADMIN",)}, "capabilities"),
        ({"cap_drop": ()}, "capabilities"),
        ({"cap_drop": ("ALL", "NET_RAW")}, "capabilities"),
        ({"security_opt": ()}, "Security options"),
        ({"security_opt": ("no-new-privileges:true", "seccomp=unconfined")}, "Security options"),
        ({"security_opt": ("no-new-privileges:true", "apparmor=unconfined")}, "Security options"),
        ({"security_opt": ("no-new-privileges:true", "label=disable")}, "Security options"),
        ({"security_opt": ("no-new-privileges:false",)}, "Security options"),
        ({"security_opt": ("no-new-privileges:true", "no-new-privileges:true")}, "Security options"),
        ({"user": "0:0"}, "non-root"),
        ({"user": "1000:0"}, "non-root"),
        ({"user": "0:1000"}, "non-root"),
        ({"user": "root"}, "non-root"),
        ({"user": "claude"}, "non-root"),  # a name may map to uid 0 in the image
        ({"user": "1000"}, "non-root"),
        ({"memory_bytes": 0}, "limits"),
        ({"pids_limit": 0}, "limits"),
        ({"network": "host"}, "Network 'host'"),
        ({"network": "container:abc"}, "Network 'container:abc'"),
        ({"network": "bridge"}, "Network 'bridge'"),
        ({"pid_mode": "host"}, "PID namespace"),
        ({"ipc_mode": "host"}, "IPC namespace"),
        ({"uts_mode": "host"}, "UTS namespace"),
        ({"userns_mode": "host"}, "user namespace"),
        ({"devices": ("/dev/kvm:/dev/kvm:rwm",)}, "devices"),
        ({"runtime": "kata"}, "Runtime"),
        ({"runtime": ""}, "Runtime"),
        ({"runtime": None}, "Runtime"),  # the daemon's default, whatever it is configured to be
        ({"ports": (policy.PortBinding(8080, 8080, "0.0.0.0"),)}, "127.0.0.1"),
        ({"volumes": (policy.VolumeMount(f"v-{UUID}", "/etc"),)}, "home directory"),
        ({"volumes": (policy.VolumeMount("someone-elses-home", "/home/claude"),)}, "does not belong"),
        ({"image": "NOT AN IMAGE"}, "image reference"),
        ({"hostname": "a/b"}, "Hostname"),
        ({"environment": {"BAD NAME": "x"}}, "Environment"),
        ({"tmpfs": (("/etc", 1 << 20),)}, "in-memory folder"),
        ({"tmpfs": (("/tmp", 1 << 40),)}, "in-memory folder"),  # beyond the memory limit
        ({"ulimits": (("memlock", 1, 1),)}, "Limit 'memlock'"),
        ({"ulimits": (("nofile", 10, 5),)}, "Limit 'nofile'"),
        ({"sysctls": {}}, "Kernel settings"),  # Docker's defaults: low ports and ping for anyone
        ({"sysctls": {policy.PORT_START: "0", policy.PING_GROUPS: "1 0"}}, "Kernel settings"),  # half opted in
        ({"sysctls": {**policy.STRICT_SYSCTLS, "net.ipv4.ip_forward": "1"}}, "Kernel settings"),
    ],
)
def test_unsafe_settings_are_refused(ws, changes, expected):
    assert any(expected in p for p in problems(good_spec(ws, **changes), rules(ws)))


@pytest.mark.parametrize(
    "target",
    [
        "/etc",
        "/",
        "/workspace/../etc",
        "relative",
        "/workspace",
        "/workspace/",
        "/workspace//x",
        "/workspace/./x",
        "/mnt",
        "/home/claude/x",
    ],
)
def test_extra_mount_targets_must_be_normalised_and_inside_workspace_or_mnt(target):
    assert policy.check_container_path(target)


def test_targets_are_unique_and_never_nested(ws):
    projects = ws / "box" / "Projects"
    for second in ("/workspace/Projects", "/workspace/Projects/sub"):
        spec = good_spec(ws, binds=(bind(projects), bind(projects, second)))
        assert any("overlap" in p for p in problems(spec, rules(ws)))


@pytest.mark.parametrize(
    "source",
    [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run",
        "/run",
        "/",
        "/etc",
        "/usr",
        "/root",
        "/home",
        "/proc",
        "/var/lib/docker",
        "/tmp/x",
        "/srv",
        "/mnt",
    ],
)
def test_system_paths_and_docker_socket_are_refused_as_extra_mounts(ws, source):
    spec = good_spec(ws, binds=(policy.BindMount(source, "/workspace/x", chain=((1, 1),)),))
    assert problems(spec, rules(ws, ["/srv/data"]))


def test_extra_mounts_are_off_without_mount_roots(ws):
    spec = good_spec(ws, binds=(policy.BindMount("/srv/data/x", "/workspace/x", chain=((1, 1),)),))
    assert any("extra mounts are off" in p for p in problems(spec, rules(ws)))


@pytest.mark.parametrize("source", ["{ws}", "{ws}/box", "{ws}/box/Projects", "{parent}"])
def test_extra_mounts_never_reach_into_the_workspace(ws, source):
    path = source.format(ws=ws, parent=ws.parent)
    spec = good_spec(ws, binds=(policy.BindMount(path, "/mnt/all", chain=((1, 1),)),))
    assert any("workspace root" in p for p in problems(spec, rules(ws, [str(ws.parent)])))


def test_overlapping_extra_mounts_need_both_read_only(ws):
    r = rules(ws, ["/srv/data"])
    a = policy.BindMount("/srv/data", "/mnt/a", chain=((1, 1),))
    b = policy.BindMount("/srv/data/sub", "/mnt/b", read_only=True, chain=((1, 2),))
    assert any("overlap and one of them is writable" in p for p in policy.check_config(good_spec(ws, binds=(a, b)), r))
    both_ro = (dataclasses.replace(a, read_only=True), b)
    assert not policy.check_config(good_spec(ws, binds=both_ro), r)


def test_path_outside_allowed_root_is_refused(ws):
    spec = good_spec(ws, binds=(policy.BindMount("/srv/elsewhere", "/workspace/x", chain=((1, 1),)),))
    assert any("outside the allowed folders" in p for p in problems(spec, rules(ws, ["/srv/data"])))


def test_a_link_in_any_component_is_refused(ws):
    """Judged on disk, not on the path as written: a link anywhere on the way is refused."""
    real = ws / "box" / "Projects"
    os.symlink(ws / "box", ws / "alias")
    spec = good_spec(
        ws,
        binds=(policy.BindMount(str(ws / "alias" / "Projects"), "/workspace/Projects", workspace=True, chain=policy.dir_chain(str(real))),),
    )
    found = problems(spec, rules(ws))
    assert any("alias is a symbolic link" in p for p in found), found


def test_a_folder_swapped_for_a_link_or_another_folder_is_refused(ws):
    projects = ws / "box" / "Projects"
    spec = good_spec(ws)
    projects.rename(ws / "box" / "old")
    os.symlink("/etc", projects)
    assert any("symbolic link (to /etc)" in p for p in problems(spec, rules(ws)))
    projects.unlink()
    projects.mkdir()  # a different folder under the same name
    assert any("was replaced since the sandbox was created" in p for p in problems(spec, rules(ws)))
    (ws / "box" / "old").rename(ws / "box" / "back")
    projects.rmdir()
    (ws / "box" / "back").rename(projects)  # the same folder, moved back: same inode
    policy.check(spec, rules(ws))


def test_a_bind_without_a_recorded_identity_is_refused(ws):
    spec = good_spec(ws, binds=(policy.BindMount(str(ws / "box" / "Projects"), "/workspace/Projects", workspace=True),))
    assert any("no recorded identity" in p for p in problems(spec, rules(ws)))


def test_workspace_folders_must_lie_inside_the_workspace_root(ws):
    (ws.parent / "other").mkdir()
    spec = good_spec(ws, binds=(bind(ws.parent / "other"),))
    assert any("must lie inside" in p for p in problems(spec, rules(ws)))


def test_all_problems_are_reported_together(ws):
    found = problems(good_spec(ws, privileged=True, user="0:0", network="host"), rules(ws))
    assert len(found) == 3


@pytest.mark.parametrize(
    "root, reason",
    [
        ("/", "other than /"),
        ("/etc/x", "/etc"),
        ("/var/lib/sandboxes", "/var"),
        ("/usr", "/usr"),
        ("/tmp/shared", "/tmp"),
        ("/home", "/home"),
        ("/home/alice/data", "home directory /home/alice"),
        ("/data", "home directory /data/bob"),
        ("/srv", "/srv"),
        ("/srv/ws/sub", "workspace root"),
        ("/srv/../etc", "normalised"),
    ],
)
def test_unsafe_mount_roots_are_refused_at_start_up(root, reason):
    found = policy.check_mount_roots([root], workspace_root="/srv/ws", homes=["/root", "/home/alice", "/data/bob", "/"])
    assert found and reason in found[0], found


def test_a_safe_mount_root_is_accepted():
    assert not policy.check_mount_roots(
        ["/srv/shared", "/data2"], workspace_root="/root/ClaudeCodeWorkspace", homes=["/root", "/home/alice", "/", "/nonexistent"]
    )


@pytest.mark.docker
def test_engine_refuses_before_docker_sees_the_spec(ws, docker_engine, test_image):
    spec = good_spec(ws, name="ccpanel-test-refused", privileged=True)
    with pytest.raises(policy.PolicyViolation):
        engine.engine_for().create_container(spec, rules=rules(ws))
    assert docker_cli("inspect", "ccpanel-test-refused", check=False).returncode != 0


def test_inspect_report_flags_what_does_not_hold():
    data = {
        "Config": {"User": ""},
        "Mounts": [{"Source": "/var/run/docker.sock", "Destination": "/d", "RW": True}],
        "HostConfig": {
            "CapDrop": None,
            "CapAdd": ["SYS_ADMIN"],
            "Privileged": True,
            "Memory": 0,
            "NanoCpus": 0,
            "PidsLimit": None,
            "NetworkMode": "host",
            "SecurityOpt": None,
            "Devices": [{}],
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]},
        },
    }
    processes = [{"pid": 7, "command": "sh", "uid": 0, "cap_eff": 0xFFFF, "cap_bnd": 0xFFFF, "no_new_privs": False}]
    assert [holds for _, holds, _ in policy.inspect_report(data, processes=processes)] == [False] * 16


@pytest.mark.parametrize(
    "root, ok",
    [
        ("/root/ClaudeCodeWorkspace", True),
        ("/home/alice/ClaudeCodeWorkspace", True),
        ("/srv/sandboxes", True),
        ("/", False),
        ("/home", False),
        ("/home/alice", False),
        ("/etc", False),
        ("/var", False),
        ("/srv", False),
    ],
)
def test_workspace_root_may_lie_in_a_home_but_not_contain_one(root, ok):
    found = policy.check_workspace_root(root, homes=["/root", "/home/alice", "/"])
    assert (not found) == ok, found


def test_a_folder_on_the_way_that_others_can_write_is_refused(ws):
    """Whoever can write a folder on the way could swap the bind source for a link between the
    check and Docker's mount: refused, above the root (group or others may write) and below it
    (also: owned by anyone but root or the panel)."""
    spec = good_spec(ws)
    (ws / "box").chmod(0o777)
    assert any("writable by its group or by others" in p for p in problems(spec, rules(ws)))
    (ws / "box").chmod(0o755)
    os.chown(ws / "box", 1000, 1000)
    assert any("belongs to uid 1000" in p for p in problems(spec, rules(ws)))
    os.chown(ws / "box", 0, 0)
    ws.parent.chmod(0o775)  # above the root: the group could swap the whole workspace
    assert any("writable by its group or by others" in p for p in problems(spec, rules(ws)))
    ws.parent.chmod(0o755)
    policy.check(spec, rules(ws))


@pytest.mark.parametrize("root, reason", [("/work", "the panel's own"), ("/srv/x", None)])
def test_mount_roots_may_not_hold_the_panels_own_folders(root, reason):
    found = policy.check_mount_roots([root], workspace_root="/root/ws", homes=[], protected=["/work/main", "/work/main/.venv"])
    assert (reason in found[0]) if reason else not found


def test_a_home_reached_through_a_link_is_judged_at_its_target(mount_root):
    (mount_root / "data" / "home" / "alice").mkdir(parents=True)
    os.symlink(mount_root / "data" / "home", mount_root / "home")
    found = policy.check_mount_roots(
        [str(mount_root / "data" / "home")], workspace_root="/root/ws", homes=[str(mount_root / "home" / "alice")]
    )
    assert found and "home directory" in found[0]


def test_names_with_a_trailing_newline_are_refused():
    assert policy.check_name("abc\n") and policy.check_image_ref("busybox\n")


def test_a_folder_with_a_second_name_is_refused_and_a_btrfs_root_is_one_name():
    M = policy.MountEntry
    bind = [M("/", "/", "8:1"), M("/srv/shared/alias", "/root/ClaudeCodeWorkspace/box", "8:1")]
    assert policy.check_single_name("/srv/shared/alias/Projects", bind)  # also /root/.../box/Projects
    assert not policy.check_single_name("/srv/shared/data", bind)
    twice = [M("/", "/", "8:1"), M("/mnt/again", "/", "8:1")]  # the same file system mounted twice
    assert policy.check_single_name("/srv/shared/data", twice)
    btrfs = [M("/", "/@", "0:30"), M("/home", "/@home", "0:30")]  # Fedora, openSUSE, Ubuntu on btrfs
    assert not policy.check_single_name("/srv/shared/data", btrfs)
    btrfs_top = [*btrfs, M("/mnt/pool", "/", "0:30")]  # the top of the pool mounted too: /@ has a second name
    assert "/mnt/pool/@/srv/shared/data" in policy.check_single_name("/srv/shared/data", btrfs_top)[0]


def test_the_list_of_mounts_must_be_readable(tmp_path):
    with pytest.raises(policy.HostPathError, match="cannot be read"):
        policy.read_mountinfo(str(tmp_path / "missing"))


def test_overlap_is_judged_by_identity_too():
    outer = ((1, 2), (1, 10), (1, 11))
    inner_by_another_name = ((1, 2), (1, 50), (1, 11), (1, 12))  # /srv/b/sub where /srv/b is /srv/a
    assert policy.same_folder_or_nested(outer, inner_by_another_name)
    assert not policy.same_folder_or_nested(outer, ((1, 2), (1, 10), (1, 13)))


def test_a_sticky_folder_on_the_way_is_safe_when_the_entry_is_roots(ws):
    """/tmp is writable by everyone but sticky: nobody but root may rename root's entries there,
    so a workspace under /tmp/<root's folder> is safe, and one under someone else's folder is not."""
    spec = good_spec(ws)
    ws.parent.chmod(0o1777)
    policy.check(spec, rules(ws))
    os.chown(ws, 1000, 1000)  # the entry in the sticky folder is someone else's: they may swap it
    assert any("writable by its group or by others" in p or "belongs to uid 1000" in p for p in problems(spec, rules(ws)))
    os.chown(ws, 0, 0)
    ws.parent.chmod(0o755)


@pytest.mark.parametrize(
    "level, ok",
    [
        ("s0:c100,c200", True),
        ("s0", True),
        ("s0-s15:c0.c1023", True),
        ("s16", False),
        ("s0:c1024", False),
        ("s0:c100,c200 ", False),
        ("system_u:object_r:container_t:s0", False),  # a type or role change is not a level
        ("", False),
    ],
)
def test_selinux_levels_are_validated_and_only_used_where_selinux_is(ws, level, ok):
    with_selinux = policy.Rules(**{**rules(ws).__dict__, "selinux": True})
    spec = good_spec(ws, security_opt=(policy.NO_NEW_PRIVILEGES, seccomp.option(), policy.selinux_level_option(level)))
    if ok:
        policy.check(spec, with_selinux)  # passes
    else:
        assert any("not valid" in p for p in problems(spec, with_selinux))
    assert any("no SELinux" in p or "not valid" in p for p in problems(spec, rules(ws)))  # a host without it


def test_a_label_never_replaces_no_new_privileges(ws):
    with_selinux = policy.Rules(**{**rules(ws).__dict__, "selinux": True})
    spec = good_spec(ws, security_opt=(policy.selinux_level_option("s0:c1,c2"),))
    assert any("Security options must be exactly" in p for p in problems(spec, with_selinux))
