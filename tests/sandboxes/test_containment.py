"""No way out of a sandbox: the attack that got out, and its variants, all end refused.

The attack: an extra mount reaching the workspace let a sandbox replace its own Projects folder
with a link to /, and Docker followed the link at the next start. Now extra mounts never reach
the workspace, the sandbox's own folder is root's, and every start judges the folders on disk.
"""

import ctypes
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import policy, services, workspace
from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.sandboxes import act

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")


def running_containers(sandbox: Sandbox) -> list[str]:
    return docker_cli("ps", "-q", "--filter", f"label=io.ccpanel.sandbox-uuid={sandbox.uuid}").stdout.split()


def snapshot(path: Path) -> dict:
    """What a folder outside the workspace looks like: it must not change."""
    st = path.stat()
    return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "entries": sorted(os.listdir(path))}


@pytest.fixture
def outside(mount_root) -> Path:
    """A folder outside every workspace, standing for the host's / or ~/.ssh."""
    target = mount_root / "host-secrets"
    target.mkdir(mode=0o700)
    (target / "id_ed25519").write_text("private\n")
    return target


def create(name: str, test_image: str, team, mounts=()) -> Sandbox:
    return services.sandbox_create(
        actor=ACTOR, team=team, name=name, image=test_image, memory_mb=256, cpus=1, network_mode="none", extra_mounts=mounts, enqueue=False
    )


def test_the_original_attack_mount_of_the_workspace_is_refused(team, test_image, clean_docker, mount_root, settings):
    """Even if an admin named the workspace's parent as a mount root (the start-up check refuses
    that, see test_policy), the workspace and any folder around it can never be mounted."""
    workspace_root = Path(settings.WORKSPACE_ROOT)
    workspace_root.mkdir(parents=True, exist_ok=True)
    settings.SANDBOX_MOUNT_ROOTS = [workspace_root.parent]
    for source in (workspace_root, workspace_root.parent):
        with pytest.raises(policy.PolicyViolation, match="workspace root"):
            create("attacker", test_image, team, [(str(source), "/mnt/all", False)])
    first = create("victim", test_image, team)
    services.sandbox_perform(sandbox_id=first.pk, action="start")
    with pytest.raises(policy.PolicyViolation, match="workspace root"):
        create("attacker", test_image, team, [(str(first.workspace_path), "/mnt/all", False)])
    assert not Sandbox.objects.filter(name="attacker").exists()
    assert policy.check_mount_roots([str(workspace_root.parent)], workspace_root=str(workspace_root), homes=[])


def test_a_sandbox_cannot_rename_its_own_mount_points(make_sandbox, clean_docker):
    sandbox = make_sandbox("tenant")
    base = sandbox.workspace_path
    assert (base.stat().st_uid, base.stat().st_mode & 0o777) == (0, 0o755)
    out = docker_cli(
        "exec",
        sandbox.container_id,
        "sh",
        "-c",
        "mv /workspace/Projects /workspace/P2; ln -s / /workspace/Projects; ls -ld /workspace/Projects",
        check=False,
    )
    assert "Projects ->" not in out.stdout
    assert (base / "Projects").is_dir() and not (base / "Projects").is_symlink()
    assert sorted(os.listdir(base)) == sorted([workspace.MARKER, *workspace.FOLDERS, workspace.HOME])


def test_two_sandboxes_may_not_mount_overlapping_folders_unless_both_read_only(team, test_image, clean_docker, mount_root):
    (mount_root / "data" / "sub").mkdir(parents=True)
    create("writer", test_image, team, [(str(mount_root / "data"), "/mnt/data", False)])
    for source, ro in ((mount_root / "data" / "sub", True), (mount_root / "data", True), (mount_root, True)):
        with pytest.raises(policy.PolicyViolation, match="sandbox writer mounts"):
            create("reader", test_image, team, [(str(source), "/mnt/data", ro)])
    assert not Sandbox.objects.filter(name="reader").exists()
    (mount_root / "shared").mkdir()
    create("ro-a", test_image, team, [(str(mount_root / "shared"), "/mnt/shared", True)])
    create("ro-b", test_image, team, [(str(mount_root / "shared"), "/mnt/shared", True)])
    with pytest.raises(policy.PolicyViolation, match="sandbox ro-a mounts"):
        create("rw-c", test_image, team, [(str(mount_root / "shared"), "/mnt/shared", False)])


def test_two_overlapping_mounts_in_one_sandbox_are_refused(team, test_image, clean_docker, mount_root):
    (mount_root / "data" / "sub").mkdir(parents=True)
    with pytest.raises(policy.PolicyViolation, match="overlap and one of them is writable"):
        create(
            "nested", test_image, team, [(str(mount_root / "data"), "/mnt/a", False), (str(mount_root / "data" / "sub"), "/mnt/b", True)]
        )


@pytest.mark.parametrize("swap", ["link to outside", "another folder"])
def test_a_folder_swapped_between_stop_and_start_is_refused(make_sandbox, clean_docker, outside, swap):
    sandbox = make_sandbox("swapped")
    sandbox = act(sandbox, "stop")
    before = snapshot(outside)
    projects = sandbox.workspace_path / "Projects"
    projects.rename(sandbox.workspace_path / "moved")
    if swap == "link to outside":
        os.symlink(outside, projects)
    else:
        projects.mkdir()
    sandbox = act(sandbox, "start")
    assert sandbox.status == "error"
    assert "Refused by the security policy" in sandbox.status_detail
    assert ("symbolic link" if swap == "link to outside" else "was replaced since the sandbox was created") in sandbox.status_detail
    assert running_containers(sandbox) == []
    assert snapshot(outside) == before
    event = AuditEvent.objects.filter(sandbox_uuid=sandbox.uuid, action="sandbox.start.refused").get()
    assert "Projects" in event.details["detail"]


def test_a_folder_swapped_while_running_is_refused_at_restart(make_sandbox, clean_docker, outside):
    sandbox = make_sandbox("restarted")
    before = snapshot(outside)
    projects = sandbox.workspace_path / "Projects"
    projects.rename(sandbox.workspace_path / "moved")
    os.symlink(outside, projects)
    sandbox = act(sandbox, "restart")
    assert sandbox.status == "error" and "symbolic link" in sandbox.status_detail
    assert running_containers(sandbox) == []
    assert snapshot(outside) == before


def test_a_swap_racing_workspace_creation_changes_nothing_outside(clean_docker, outside):
    """Swap Projects for a link to the outside folder, over and over, while the folders are made:
    every step is fd-relative with O_NOFOLLOW, so the link is never followed."""
    root = Path(settings.WORKSPACE_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    before = snapshot(outside)
    stop = threading.Event()
    swaps = 0

    def swapper(base: Path):
        nonlocal swaps
        while not stop.is_set():
            try:
                (base / "Projects").rename(base / f"real-{swaps}")
                os.symlink(outside, base / "Projects")
                swaps += 1
            except OSError:
                pass

    outside_identity = policy.dir_identity(str(outside))
    outcomes = []
    for i in range(30):
        name = f"race{i}"
        (root / name).mkdir()
        thread = threading.Thread(target=swapper, args=(root / name,))
        thread.start()
        try:
            ids = workspace.workspace_create(name, f"uuid-{i}")
            outcomes.append("made")
            # What was recorded is a real folder of the workspace, never the link's target.
            assert outside_identity not in ids.values()
        except workspace.WorkspaceError as exc:
            outcomes.append(str(exc))
        finally:
            stop.set()
            thread.join()
            stop.clear()
    assert swaps > 0
    assert snapshot(outside) == before
    # Each run either made real folders or refused, naming the folder it would not use.
    assert all(o == "made" or "/Projects" in o for o in outcomes), outcomes


def report_row(client, sandbox: Sandbox, check: str) -> str:
    html = client.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    return next(line for line in html.splitlines() if check in line)


def test_a_capability_added_outside_the_panel_turns_the_report_red(client, admin_user, make_sandbox, clean_docker):
    """Docker cannot add a capability to a running container (and `exec --privileged` is refused,
    see below), so someone with Docker access replaces it: same name, labels and mounts, plus a
    capability. The page reports on what actually runs as the sandbox."""
    sandbox = make_sandbox("impostor")
    client.force_login(admin_user)
    assert "✗" not in client.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    refused = docker_cli("exec", "--privileged", sandbox.container_id, "true", check=False)
    assert refused.returncode != 0 and "operation not permitted" in refused.stdout + refused.stderr
    data = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]
    docker_cli("rm", "-f", sandbox.container_id)
    labels = [arg for k, v in data["Config"]["Labels"].items() if k.startswith("io.ccpanel.") for arg in ("--label", f"{k}={v}")]
    mounts = [arg for m in data["Mounts"] if m["Type"] == "bind" for arg in ("-v", f"{m['Source']}:{m['Destination']}")]
    docker_cli(
        "run",
        "-d",
        "--name",
        data["Name"].lstrip("/"),
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        *labels,
        *mounts,
        sandbox.image,
    )
    for check in (
        "All capabilities dropped, none added",
        "Only the panel&#x27;s own container claims this sandbox",
        "No process inside has capabilities",
    ):
        row = report_row(client, sandbox, check)
        assert 'class="bad"' in row, row


def test_a_root_process_or_a_loosened_limit_turns_the_report_red(client, admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("report")
    client.force_login(admin_user)
    assert "✗" not in client.get(f"/sandboxes/{sandbox.pk}/").content.decode()
    # Outside the panel: a root process inside the running container.
    docker_cli("exec", "-d", "-u", "0", sandbox.container_id, "sleep", "60")
    row = report_row(client, sandbox, "No process inside has capabilities")
    assert 'class="bad"' in row and "uid 0" in row
    # Outside the panel: the process limit lifted.
    docker_cli("update", "--pids-limit", "-1", sandbox.container_id)
    for check in ("Process limit", "Matches the sandbox&#x27;s saved settings"):
        row = report_row(client, sandbox, check)
        assert 'class="bad"' in row, row
    # The next start does not reuse the container that drifted: it is recreated from the spec.
    old_id = sandbox.container_id
    sandbox = act(act(sandbox, "stop"), "start")
    assert sandbox.status == "running" and sandbox.container_id != old_id
    data = json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]
    assert data["HostConfig"]["PidsLimit"] == settings.SANDBOX_PIDS_LIMIT


# --- found by the review: races with Docker's mount, second names for a folder, mounts inside ---

_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE)."""
    if _libc.renameat2(-100, str(a).encode(), -100, str(b).encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@pytest.fixture
def far_outside() -> Path:
    """A folder outside every allowed root (standing for the host's /), with a secret in it."""
    path = Path(settings.VAR_DIR) / f"{settings.PANEL_INSTANCE}-outside"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    (path / "SECRET").write_text("secret\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_swap_racing_dockers_mount_never_leaves_a_sandbox_running_on_the_wrong_folder(
    team, test_image, clean_docker, mount_root, far_outside
):
    """Someone able to write the mount root (root here; the rules keep anyone else out, see
    below) swaps the bind source for a link over and over while the sandbox starts. Whatever
    start wins the race, what Docker really mounted is compared with what was checked."""
    data = mount_root / "data"
    data.mkdir()
    os.symlink(far_outside, mount_root / "evil")
    sandbox = create("racer", test_image, team, [(str(data), "/mnt/data", False)])
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox = act(Sandbox.objects.get(pk=sandbox.pk), "stop")
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            try:
                exchange(data, mount_root / "evil")
            except OSError:
                pass

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    outcomes = []
    try:
        for _ in range(25):
            sandbox = act(sandbox, "start")
            outcomes.append(sandbox.status)
            if sandbox.status == "running":
                seen = docker_cli("exec", sandbox.container_id, "ls", "/mnt/data", check=False).stdout
                assert "SECRET" not in seen, "a sandbox runs with a folder outside every allowed root"
                sandbox = act(sandbox, "stop")
    finally:
        stop.set()
        thread.join()
    assert sorted(os.listdir(far_outside)) == ["SECRET"]
    assert "error" in outcomes, outcomes  # the swaps were seen, not missed


def test_two_names_for_one_folder_cannot_both_be_mounted(team, test_image, clean_docker, mount_root):
    """A bind mount (or a case-insensitive file system) gives one folder two names. A sandbox
    mounting it under one name is refused at its next start once the second name appears, and
    neither name is accepted for a new sandbox while both exist."""
    a, b = mount_root / "a", mount_root / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    one = create("one", test_image, team, [(str(a), "/mnt/shared", False)])
    services.sandbox_perform(sandbox_id=one.pk, action="start")
    one = act(Sandbox.objects.get(pk=one.pk), "stop")
    subprocess.run(["mount", "--bind", str(a), str(b)], check=True)
    try:
        for name, source in (("two", b), ("three", b / "sub"), ("four", a)):
            with pytest.raises(policy.PolicyViolation, match="one folder may have one name only"):
                create(name, test_image, team, [(str(source), "/mnt/shared", True)])
        one = act(one, "start")
        assert one.status == "error" and "one name only" in one.status_detail
    finally:
        subprocess.run(["umount", str(b)], check=False)
    assert sorted(Sandbox.objects.values_list("name", flat=True)) == ["one"]
    assert act(one, "start").status == "running"  # one name again: it starts


def test_a_folder_others_can_write_on_the_way_is_refused_at_create_and_at_start(team, test_image, clean_docker, mount_root):
    """A sandbox with a writable mount (uid 1000 inside) must never hold a folder on the way to
    another bind source: folders on the way must be root's (or the panel's), writable by their
    owner only."""
    (mount_root / "team" / "data").mkdir(parents=True)
    os.chown(mount_root / "team", 1000, 1000)
    with pytest.raises(policy.PolicyViolation, match="belongs to uid 1000"):
        create("shared", test_image, team, [(str(mount_root / "team" / "data"), "/mnt/data", False)])
    os.chown(mount_root / "team", 0, 0)
    sandbox = create("shared", test_image, team, [(str(mount_root / "team" / "data"), "/mnt/data", False)])
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox = act(Sandbox.objects.get(pk=sandbox.pk), "stop")
    (mount_root / "team").chmod(0o777)
    sandbox = act(sandbox, "start")
    assert sandbox.status == "error" and "writable by its group or by others" in sandbox.status_detail


def test_destroy_never_deletes_through_a_folder_mounted_inside_the_workspace(make_sandbox, clean_docker, far_outside):
    sandbox = make_sandbox("sharer", network_mode="none")
    inner = sandbox.workspace_path / "Projects" / "code"
    inner.mkdir()
    subprocess.run(["mount", "--bind", str(far_outside), str(inner)], check=True)
    try:
        sandbox = act(sandbox, "destroy")
        assert sandbox.status == "destroyed" and "mounted inside it; left in place" in sandbox.status_detail
        assert sorted(os.listdir(far_outside)) == ["SECRET"]
    finally:
        subprocess.run(["umount", str(inner)], check=False)


# --- ports below 1024 and ICMP echo (issue 14, item 8) ----------------------------------------------


def binds_port(sandbox: Sandbox, port: int) -> bool:
    """Whether the sandbox's user can listen on `port`: busybox nc still listening half a second
    later (a refused bind makes it exit at once)."""
    script = f"nc -l -p {port} 2>/dev/null & p=$!; sleep 0.5; kill $p 2>/dev/null && echo bound"
    return docker_cli("exec", sandbox.container_id, "sh", "-c", script, check=False).stdout.strip() == "bound"


def opens_ping_socket(sandbox: Sandbox) -> bool:
    """Whether uid:gid 1000:1000 in the sandbox's network namespace may open an unprivileged ICMP
    echo socket (what `ping` without NET_RAW uses). busybox has no such client, so the system's
    Python (one uid 1000 may run) opens one in the container's namespace, as the sandbox's user."""
    pid = docker_cli("inspect", "-f", "{{.State.Pid}}", sandbox.container_id).stdout.strip()
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
    assert python, "no system python3 to open the socket with"
    code = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print('open')"
    done = subprocess.run(["nsenter", "-t", pid, "-n", "-S", "1000", "-G", "1000", python, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 or "PermissionError" in done.stderr, done.stderr
    return done.stdout.strip() == "open"


def test_a_sandbox_binds_no_port_below_1024_and_cannot_ping_unless_it_opts_in(make_sandbox, clean_docker):
    """Docker's defaults (ip_unprivileged_port_start=0, ping_group_range 0-2147483647) let any
    user of a container listen on 53 or 80 and send ICMP echo; a sandbox gets the kernel's own."""
    strict = make_sandbox("ports-strict")
    assert strict.status == "running", strict.status_detail
    assert binds_port(strict, 1024)  # the control: an ordinary port
    assert not binds_port(strict, 80) and not binds_port(strict, 53)
    assert not opens_ping_socket(strict)
    opted = make_sandbox("ports-opted", low_ports_and_ping=True)
    assert opted.status == "running", opted.status_detail
    assert binds_port(opted, 80) and opens_ping_socket(opted)
    sysctls = json.loads(docker_cli("inspect", "-f", "{{json .HostConfig.Sysctls}}", strict.container_id).stdout)
    assert sysctls == {"net.ipv4.ip_unprivileged_port_start": "1024", "net.ipv4.ping_group_range": "1 0"}
    # Loosened outside the panel: the container no longer matches the spec, so the next start
    # does not reuse it.
    assert policy.spec_drift(services.sandbox_spec(strict), json.loads(docker_cli("inspect", strict.container_id).stdout)[0]) == []
    loose = json.loads(docker_cli("inspect", opted.container_id).stdout)[0]
    assert any("sysctls" in d for d in policy.spec_drift(services.sandbox_spec(strict), loose))
