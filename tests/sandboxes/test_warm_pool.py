"""The warm pool on the real engine: a create that matches takes a started slot (its folders,
its container, renamed; its limits set), passes the same checks as a cold one, and is made from
its own spec at its next start; one that does not match, or a slot that was tampered with, goes
cold; nothing of a slot outlives it."""

import json
import os
from decimal import Decimal

import pytest
from django.conf import settings

from audit.models import AuditEvent
from hosts.models import LOCAL, Host
from hosts.services import local_host
from sandboxes import engine, selectors, services, workspace
from sandboxes.models import Sandbox, WarmSlot
from sandboxes.services import warm
from storage import selectors as storage_selectors
from tests.support.docker import TEST_IMAGE, docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
ACTOR = services.SystemActor("test")


@pytest.fixture
def pool_of_one(settings, clean_docker):
    """One warm slot for the test image in `internet` mode, made ready now. /tmp is 16 MB
    whatever the memory, so that a create with more memory than the slot's still matches."""
    settings.WARM_POOL = ((TEST_IMAGE, "internet", 1),)
    settings.SANDBOX_TMP_MB = 16
    assert warm.fill() == 1
    slot = WarmSlot.objects.get()
    assert slot.status == WarmSlot.Status.READY
    return slot


def inspect(ref: str) -> dict:
    return json.loads(docker_cli("inspect", ref).stdout)[0]


def create(team, name: str, **kwargs) -> Sandbox:
    params = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal("1"), network_mode="internet")
    params.update(kwargs)
    return services.sandbox_create(actor=ACTOR, team=team, name=name, enqueue=False, **params)


def start(sandbox: Sandbox) -> Sandbox:
    services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
    sandbox.refresh_from_db()
    return sandbox


def act(sandbox: Sandbox, action: str) -> Sandbox:
    services.sandbox_request_action(actor=ACTOR, sandbox=sandbox, action=action, enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action=action)
    sandbox.refresh_from_db()
    return sandbox


def test_a_slot_is_a_hardened_started_container_with_its_folders_ready(pool_of_one):
    slot = pool_of_one
    data = inspect(slot.container_id)
    assert data["State"]["Running"]
    assert data["Name"] == f"/{warm.container_name(slot.key)}"
    assert data["Config"]["Labels"][engine.LABEL_WARM] == slot.key
    assert data["Config"]["Labels"][engine.LABEL_UUID] == str(slot.uuid)
    report = selectors.policy.inspect_report(data, warm.slot_spec(slot))
    assert [row for row in report if not row[1]] == []
    folder = workspace.slot_path(slot.key)
    assert os.stat(folder).st_ino == 256  # a subvolume of the pool
    assert workspace.read_marker(".warm") is None  # never taken for a sandbox's folder
    sources = {m["Destination"]: m.get("Source") for m in data["Mounts"]}
    assert sources["/workspace/Projects"] == str(folder / "Projects")


def test_a_create_that_matches_runs_the_slots_container_as_its_own(pool_of_one, team):
    slot = pool_of_one
    sandbox = create(team, "warmed", memory_mb=512, cpus=Decimal("0.5"), disk_mb=300)
    assert sandbox.uuid == slot.uuid
    assert WarmSlot.objects.get(pk=slot.pk).sandbox_id == sandbox.pk
    sandbox = start(sandbox)
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id == slot.container_id
    assert sandbox.warm_slot == slot.key
    assert not WarmSlot.objects.filter(pk=slot.pk).exists()
    # Docker says: the sandbox's name and limits, on the slot's (renamed) folders.
    data = inspect(sandbox.container_id)
    assert data["Name"] == f"/{sandbox.container_name}"
    assert data["HostConfig"]["Memory"] == 512 * 1024 * 1024
    assert data["HostConfig"]["MemorySwap"] == 512 * 1024 * 1024
    assert data["HostConfig"]["NanoCpus"] == 500_000_000
    assert not os.path.lexists(workspace.slot_path(slot.key))
    assert workspace.read_marker("warmed") == str(sandbox.uuid)
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo from-inside > /workspace/Projects/note; echo home > ~/h")
    assert (sandbox.workspace_path / "Projects" / "note").read_text() == "from-inside\n"
    assert (sandbox.home_path / "h").read_text() == "home\n"
    # The same checks as any sandbox's: the hardening report holds, row by row.
    failed = [row for row in selectors.hardening_report(sandbox) if not row[1]]
    assert failed == []
    assert storage_selectors.disk_usage(sandbox).limit == 300 * 1024 * 1024
    created = AuditEvent.objects.get(action="sandbox.create", target__endswith="warmed")
    assert created.details["warm_slot"] == slot.key
    # Its own home volume exists (bound to its home): what backups and its next start use.
    volume = json.loads(docker_cli("volume", "inspect", sandbox.volume_name).stdout)[0]
    assert volume["Options"]["device"] == str(sandbox.home_path)

    # The next start makes the container from the sandbox's own spec; the files stay.
    sandbox = act(sandbox, "restart")
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id
    assert sandbox.warm_slot == ""
    data = inspect(sandbox.container_id)
    sources = {m["Destination"]: m.get("Source") for m in data["Mounts"]}
    assert sources["/workspace/Projects"] == str(sandbox.workspace_path / "Projects")
    assert docker_cli("exec", sandbox.container_id, "cat", "/workspace/Projects/note").stdout == "from-inside\n"
    assert docker_cli("exec", sandbox.container_id, "sh", "-c", "cat ~/h").stdout == "home\n"
    assert docker_cli("volume", "inspect", warm.volume_name(slot), check=False).returncode != 0
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0

    act(sandbox, "destroy")
    assert not sandbox.workspace_path.exists()
    assert docker_cli("volume", "inspect", sandbox.volume_name, check=False).returncode != 0


def test_a_create_that_does_not_match_goes_cold_and_leaves_the_slot(pool_of_one, team, mount_root):
    slot = pool_of_one
    other = start(create(team, "offline", network_mode="none"))
    assert other.status == "running", other.status_detail
    assert other.uuid != slot.uuid and other.container_id != slot.container_id
    assert WarmSlot.objects.get(pk=slot.pk).status == WarmSlot.Status.READY
    (mount_root / "data").mkdir()
    mounted = start(create(team, "mounted", extra_mounts=[(str(mount_root / "data"), "/mnt/data", True)]))
    assert mounted.status == "running", mounted.status_detail
    assert mounted.uuid != slot.uuid
    assert create(team, "writable", writable_root=True).uuid != slot.uuid
    assert create(team, "pinging", low_ports_and_ping=True).uuid != slot.uuid
    assert WarmSlot.objects.get(pk=slot.pk).status == WarmSlot.Status.READY


def test_a_slot_changed_behind_the_panel_is_discarded_and_the_start_goes_cold(pool_of_one, team):
    slot = pool_of_one
    docker_cli("update", "--pids-limit", "99999", slot.container_id)  # an update does not matter...
    docker_cli("stop", "-t", "0", slot.container_id)  # ...a container that no longer runs does
    sandbox = start(create(team, "cold"))
    assert sandbox.uuid == slot.uuid  # it took the slot at its create
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id and sandbox.warm_slot == ""
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not WarmSlot.objects.exists()
    assert inspect(sandbox.container_id)["HostConfig"]["PidsLimit"] == settings.SANDBOX_PIDS_LIMIT
    assert [row for row in selectors.hardening_report(sandbox) if not row[1]] == []


def test_a_slot_taken_by_a_sandbox_destroyed_before_its_start_goes_with_it(pool_of_one, team):
    slot = pool_of_one
    sandbox = create(team, "never")
    act(sandbox, "destroy")
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not os.path.lexists(workspace.slot_path(slot.key))
    assert not WarmSlot.objects.exists()


def test_what_a_dead_worker_left_of_a_slot_is_tidied(pool_of_one):
    slot = pool_of_one
    WarmSlot.objects.filter(pk=slot.pk).delete()  # as if its row was never committed
    assert warm.tidy() >= 2
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not os.path.lexists(workspace.slot_path(slot.key))
    assert docker_cli("volume", "inspect", warm.volume_name(slot), check=False).returncode != 0


def test_the_pool_is_kept_at_its_size_and_emptied_when_its_host_drains(pool_of_one, settings):
    slot = pool_of_one
    assert warm.fill() == 0  # full already: nothing made twice
    settings.WARM_POOL = ((TEST_IMAGE, "internet", 2),)
    assert warm.fill() == 1
    assert WarmSlot.objects.filter(status=WarmSlot.Status.READY).count() == 2
    Host.objects.filter(name=LOCAL).update(draining=True)
    warm.fill()
    assert not WarmSlot.objects.exists()
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert workspace.slot_keys() == []


def test_a_slot_whose_container_stopped_or_whose_image_was_rebuilt_is_replaced(pool_of_one, settings):
    stopped = pool_of_one
    docker_cli("stop", "-t", "0", stopped.container_id)
    assert warm.tidy() == 1
    assert not WarmSlot.objects.filter(pk=stopped.pk).exists()
    # An image reference that names another build once the slot runs: the slot goes.
    ref = f"ccpanel-{settings.PANEL_INSTANCE}/warm-test:latest"
    docker_cli("tag", TEST_IMAGE, ref)
    try:
        settings.WARM_POOL = ((ref, "internet", 1),)
        assert warm.fill() == 1
        slot = WarmSlot.objects.get(image=ref)
        assert warm.tidy() == 0
        docker_cli("tag", "ccpanel/debian-base:bookworm", ref)  # "rebuilt"
        assert warm.tidy() == 1
        assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    finally:
        docker_cli("rmi", ref, check=False)


def test_a_take_whose_worker_died_half_way_is_finished_by_the_next_run(pool_of_one, team):
    slot = pool_of_one
    sandbox = create(team, "again")
    # What a first run did before its worker died: the folder moved, the container renamed.
    workspace.slot_take(slot.key, sandbox.name, str(sandbox.uuid))
    docker_cli("rename", slot.container_id, sandbox.container_name)
    sandbox = start(sandbox)
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id == slot.container_id and sandbox.warm_slot == slot.key
    assert [row for row in selectors.hardening_report(sandbox) if not row[1]] == []


# --- found by the review: what a take must never get, and what a discard must never touch -------


def test_a_slot_whose_image_reference_names_another_build_now_is_never_taken(pool_of_one, team, settings):
    """The image was rebuilt (or retagged) between the fill and the take: a cold start would run
    the build its reference names now, so the taken container must too."""
    ref = f"ccpanel-{settings.PANEL_INSTANCE}/warm-retag:latest"
    docker_cli("tag", TEST_IMAGE, ref)
    try:
        settings.WARM_POOL = ((ref, "internet", 1),)
        assert warm.fill() == 1
        slot = WarmSlot.objects.get(image=ref)
        rebuilt = f"ccpanel-{settings.PANEL_INSTANCE}-rebuild"
        docker_cli("create", "--name", rebuilt, TEST_IMAGE)
        try:  # "rebuilt" (the same image with one more label) before the periodic tidy saw it
            docker_cli("commit", "--change", "LABEL io.ccpanel.test.rebuilt=1", rebuilt, ref)
        finally:
            docker_cli("rm", "-f", rebuilt, check=False)
        assert inspect(ref)["Id"] != inspect(TEST_IMAGE)["Id"]
        sandbox = start(create(team, "retagged", image=ref))
        assert sandbox.status == "running", sandbox.status_detail
        assert sandbox.container_id != slot.container_id and sandbox.warm_slot == ""
        assert inspect(sandbox.container_id)["Image"] == inspect(ref)["Id"]
    finally:
        remove_sandboxes_of(ref)
        docker_cli("rmi", ref, check=False)


def remove_sandboxes_of(image: str) -> None:
    for sandbox in Sandbox.objects.filter(image=image).exclude(status="destroyed"):
        act(sandbox, "destroy")


def test_a_slot_given_a_restart_policy_behind_the_panel_is_never_taken(pool_of_one, team):
    """`docker update --restart always`: Docker would restart the container by itself, mounting
    its folders again without the policy looking. Neither the take nor any start keeps it."""
    slot = pool_of_one
    docker_cli("update", "--restart", "always", slot.container_id)
    sandbox = start(create(team, "restarting"))
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id
    assert inspect(sandbox.container_id)["HostConfig"]["RestartPolicy"]["Name"] == "no"
    # A sandbox's own container updated so is made again at its next start, and the report says so.
    docker_cli("update", "--restart", "always", sandbox.container_id)
    failed = [row for row in selectors.hardening_report(sandbox) if not row[1]]
    assert [row[0] for row in failed] == ["Matches the sandbox's saved settings"]
    assert "restart" in failed[0][2]
    sandbox = act(sandbox, "restart")
    assert inspect(sandbox.container_id)["HostConfig"]["RestartPolicy"]["Name"] == "no"


def test_a_pool_that_shrinks_never_discards_a_slot_a_create_took_meanwhile(pool_of_one, team, monkeypatch):
    """fill reads the ready slots, then discards those beyond WARM_POOL: a create that took one in
    between keeps it (its container, its folders)."""
    slot = pool_of_one
    read_before = [WarmSlot.objects.get(pk=slot.pk)]  # what fill read, before the create below
    sandbox = create(team, "tookit")
    assert WarmSlot.objects.get(pk=slot.pk).status == WarmSlot.Status.TAKEN
    monkeypatch.setattr(warm, "_surplus", lambda host, wanted: read_before)
    monkeypatch.setattr(settings, "WARM_POOL", ())
    warm.fill()
    assert WarmSlot.objects.get(pk=slot.pk).sandbox_id == sandbox.pk
    assert inspect(slot.container_id)["State"]["Running"]
    assert os.path.isdir(workspace.slot_path(slot.key) / "Projects")
    sandbox = start(sandbox)
    assert sandbox.status == "running" and sandbox.container_id == slot.container_id, sandbox.status_detail


def test_tidy_leaves_a_slot_whose_take_is_under_way(pool_of_one, team):
    """A slot made more than STALE ago and taken now: while its start runs (the container is
    recorded on the sandbox before the take ends), tidy must not remove it."""
    slot = pool_of_one
    sandbox = create(team, "midway")
    WarmSlot.objects.filter(pk=slot.pk).update(created_at=slot.created_at - 2 * warm.STALE)
    # As _take_folders leaves it: the claim still held, the container recorded.
    Sandbox.objects.filter(pk=sandbox.pk).update(container_id=slot.container_id, warm_slot=slot.key)
    warm.tidy()
    assert WarmSlot.objects.filter(pk=slot.pk).exists()
    assert inspect(slot.container_id)["State"]["Running"]
    # Once no run holds it (its worker died after that point), tidy removes the row; the
    # container is the sandbox's to remove (its next start makes its own).
    Sandbox.objects.filter(pk=sandbox.pk).update(pending_action="", status="error")
    warm.tidy()
    assert not WarmSlot.objects.filter(pk=slot.pk).exists()


def test_a_discard_after_the_take_never_touches_the_sandboxs_quota_or_folder(pool_of_one, team):
    """The slot's row outlived its take (the worker died before deleting it) and something made
    a folder at the slot's old path: discarding the row must neither lift nor destroy the quota
    group that is the sandbox's now, nor touch its folder."""
    slot = pool_of_one
    sandbox = start(create(team, "quota", disk_mb=300))
    assert sandbox.warm_slot == slot.key, sandbox.status_detail
    sandbox = act(sandbox, "restart")  # its own container now; the slot's group is still its quota group
    assert sandbox.status == "running" and sandbox.disk_group == slot.disk_group, sandbox.status_detail
    (sandbox.workspace_path / "Projects" / "keep").write_text("mine\n")
    os.makedirs(workspace.slot_path(slot.key) / "Projects")  # planted on the host
    left = WarmSlot.objects.create(
        key=slot.key,
        uuid=slot.uuid,
        host=slot.host,
        image=slot.image,
        network_mode=slot.network_mode,
        status=WarmSlot.Status.TAKEN,
        sandbox=sandbox,
        container_id="",
        disk_group=slot.disk_group,
    )
    warm.discard(left, engine.engine_for(sandbox), taken=True)
    assert storage_selectors.disk_usage(sandbox).limit == 300 * 1024 * 1024
    assert (sandbox.workspace_path / "Projects" / "keep").read_text() == "mine\n"
    assert inspect(sandbox.container_id)["State"]["Running"]
    assert not os.path.lexists(workspace.slot_path(slot.key))  # what was planted there goes


def test_a_take_the_storage_pool_refuses_goes_cold_and_keeps_the_sandboxs_quota(pool_of_one, team):
    """btrfs refusing a step of the take (here: the slot's quota group is not there) is like any
    other doubt: the slot is given up and the start goes on cold, with the sandbox's own quota."""
    slot = pool_of_one
    sandbox = create(team, "poolsays", disk_mb=300)
    WarmSlot.objects.filter(pk=slot.pk).update(disk_group="1/999999")
    sandbox = start(sandbox)
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id and sandbox.warm_slot == ""
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not WarmSlot.objects.exists()
    assert storage_selectors.disk_usage(sandbox).limit == 300 * 1024 * 1024
    assert [row for row in selectors.hardening_report(sandbox) if not row[1]] == []


def test_tidy_leaves_the_slots_of_another_host_on_this_machine(pool_of_one):
    """Every engine on a Unix socket mounts this machine's folders: the slots of all of them are
    under the one WORKSPACE_ROOT/.warm, and tidying one host's never removes another's."""
    other = Host.objects.create(name=f"other{os.getpid()}", docker_url="unix:///nonexistent/ccpanel-test-other.sock")
    theirs = WarmSlot.objects.create(key="0123456789abcdef", host=other, image=TEST_IMAGE, network_mode="internet")
    workspace.slot_create(theirs.key, str(theirs.uuid))
    try:
        warm.tidy()
        assert os.path.isdir(workspace.slot_path(theirs.key) / "Projects")
        assert WarmSlot.objects.filter(pk=pool_of_one.pk).exists()
    finally:
        workspace.slot_remove(theirs.key)


def test_turning_the_pool_off_removes_its_ready_slots(pool_of_one, settings):
    """WARM_POOL="" turns the pool off: its started containers do not keep running (the periodic
    resync queues no fill then; its tidy removes them)."""
    slot = pool_of_one
    settings.WARM_POOL = ()
    assert warm.tidy() >= 1
    assert not WarmSlot.objects.exists()
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert workspace.slot_keys() == []


@pytest.fixture
def panel_resolver():
    """The panel's resolver on the allowlist bridge's gateway (the gate of allowlist mode asks
    that it answers there)."""
    from sandboxes.network import resolver

    servers = resolver.serve()
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_allowlist_slot_starts_with_no_grant_of_an_earlier_holder_of_its_address(settings, clean_docker, panel_resolver):
    """As a cold start does: before Docker starts the slot's container, the grants are brought in
    line, so that it never reaches what the list of an earlier holder of its address gave."""
    from ipaddress import IPv4Network

    from sandboxes import network

    settings.WARM_POOL = ((TEST_IMAGE, "allowlist", 1),)
    addresses = [str(a) for a in list(IPv4Network(network.allowlist_bridge().subnet).hosts())[1:17]]  # after the gateway
    earlier = "198.18.250.1/32"
    network.grant([network.Grant(a, 443, earlier, "earlier.example.test") for a in addresses], 0)
    try:
        assert warm.fill() == 1
        slot = WarmSlot.objects.get()
        address = inspect(slot.container_id)["NetworkSettings"]["Networks"][settings.SANDBOX_ALLOW_NETWORK]["IPAddress"]
        assert address in addresses
        assert not [g for g in network.grants() if g.source == address]
    finally:
        network.revoke([g for g in network.grants() if g.destination == earlier])


def test_a_take_is_judged_by_the_policy_in_force_at_its_start(pool_of_one, team, settings):
    """The policy changed between the create and its start (here: runc no longer allowed): a cold
    start is refused then, and so is the take; the slot's container does not run as the sandbox."""
    slot = pool_of_one
    sandbox = create(team, "judged")
    settings.SANDBOX_RUNTIMES = ["runsc"]
    sandbox = start(sandbox)
    assert sandbox.status == "error"
    assert "Runtime 'runc' is not allowed" in sandbox.status_detail
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not WarmSlot.objects.exists()


def test_a_discarded_slot_leaves_no_quota_group(pool_of_one, settings):
    """Every slot made a quota group of its own (1/<its subvolume's id>): a discard destroys it
    (btrfs refuses to while the deleted subvolume's own group is still in it)."""
    import subprocess

    slot = pool_of_one
    settings.WARM_POOL = ()
    warm.fill()
    assert not WarmSlot.objects.exists()
    shown = subprocess.run(["btrfs", "qgroup", "show", str(settings.WORKSPACE_ROOT)], capture_output=True, text=True, check=True)
    assert slot.disk_group not in shown.stdout.split()
    assert "inconsistent" not in shown.stdout + shown.stderr  # the numbers stay right, no rescan needed


def test_a_slot_taken_by_a_sandbox_whose_start_never_ran_does_not_run_on_for_good(pool_of_one, team):
    """The queue refused the start (the sandbox is left in error, idle): the slot's container, with
    the network of its mode, does not keep running for it; its next start goes cold."""
    slot = pool_of_one
    sandbox = create(team, "neverran")
    Sandbox.objects.filter(pk=sandbox.pk).update(status="error", pending_action="", status_detail="the queue refused its start")
    WarmSlot.objects.filter(pk=slot.pk).update(created_at=slot.created_at - 2 * warm.STALE)
    assert warm.tidy() >= 1
    assert not WarmSlot.objects.exists()
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    assert not os.path.lexists(workspace.slot_path(slot.key))
    sandbox = act(sandbox, "start")
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id and sandbox.warm_slot == ""
    assert [row for row in selectors.hardening_report(sandbox) if not row[1]] == []


def test_a_slot_with_a_subvolume_made_inside_by_hand_is_still_removed(pool_of_one, settings):
    """btrfs refuses to delete a subvolume with another inside: the discard empties both (as
    Destroy does a sandbox's), and a fill goes on whatever one slot's removal met."""
    import subprocess

    slot = pool_of_one
    subprocess.run(
        ["btrfs", "subvolume", "create", str(workspace.slot_path(slot.key) / "Projects" / "nested")], check=True, capture_output=True
    )
    settings.WARM_POOL = ()
    warm.fill()
    assert not WarmSlot.objects.exists()
    assert not os.path.lexists(workspace.slot_path(slot.key))


def test_a_checkpoint_of_a_taken_sandbox_holds_its_home_and_folders(pool_of_one, team):
    """What the taken container writes to its home and folders is in the sandbox's subvolume:
    a checkpoint (and so a backup, which reads such a snapshot) holds it."""
    from storage import services as storage

    slot = pool_of_one
    sandbox = start(create(team, "kept"))
    assert sandbox.container_id == slot.container_id, sandbox.status_detail
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo h > ~/h; echo p > /workspace/Projects/p")
    checkpoint = storage.checkpoint_create(actor=ACTOR, sandbox=sandbox, label="warm")
    taken = storage.checkpoint_path(checkpoint)
    assert (taken / "home" / "h").read_text() == "h\n"
    assert (taken / "Projects" / "p").read_text() == "p\n"


def test_the_periodic_resync_tops_the_pool_up_whatever_its_tidy_met(clean_docker, settings, monkeypatch):
    """A tidy that Docker refused a step of is logged: the resync still queues the top-up."""
    from sandboxes import tasks

    settings.WARM_POOL = ((TEST_IMAGE, "internet", 1),)
    queued = []

    def refused(host=None):
        raise engine.EngineError("removal of container x is already in progress")

    monkeypatch.setattr(warm, "tidy", refused)
    monkeypatch.setattr(tasks.warm_fill_task, "delay", lambda name: queued.append(name))
    local_host()
    tasks.host_reconcile_task(LOCAL)  # the local host's share of the resync
    assert queued == [LOCAL]


def test_a_slot_folder_swapped_for_a_link_to_another_sandboxs_never_reaches_it(pool_of_one, team):
    """Between the fill and the take, the slot's Projects is replaced by a link to another
    sandbox's: the take refuses it, the cold start too, and neither that sandbox's folder nor
    its files are mounted, changed or removed, even by the Destroy that follows."""
    slot = pool_of_one
    other = start(create(team, "victim", network_mode="none"))
    assert other.status == "running", other.status_detail
    (other.workspace_path / "Projects" / "secret").write_text("theirs\n")
    projects = workspace.slot_path(slot.key) / "Projects"
    os.rename(projects, workspace.slot_path(slot.key) / "Projects.moved")
    os.symlink(other.workspace_path / "Projects", projects)
    sandbox = start(create(team, "thief"))
    assert sandbox.uuid == slot.uuid
    assert sandbox.status == "error" and "link" in sandbox.status_detail, sandbox.status_detail
    assert docker_cli("inspect", slot.container_id, check=False).returncode != 0
    act(sandbox, "destroy")
    assert (other.workspace_path / "Projects" / "secret").read_text() == "theirs\n"
    assert docker_cli("exec", other.container_id, "cat", "/workspace/Projects/secret").stdout == "theirs\n"
    assert not WarmSlot.objects.exists()


def test_a_slot_whose_marker_was_changed_is_never_taken(pool_of_one, team):
    slot = pool_of_one
    (workspace.slot_path(slot.key) / workspace.MARKER).write_text("00000000-0000-4000-8000-000000000000\n")
    (workspace.slot_path(slot.key) / "Projects" / "planted").write_text("x\n")
    sandbox = start(create(team, "marked"))
    assert sandbox.status == "running", sandbox.status_detail
    assert sandbox.container_id != slot.container_id and sandbox.warm_slot == ""
    assert not (sandbox.workspace_path / "Projects" / "planted").exists()  # a folder of its own, made anew
    assert workspace.read_marker("marked") == str(sandbox.uuid)
    assert not os.path.lexists(workspace.slot_path(slot.key))
