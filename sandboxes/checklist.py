"""The live security checklist of a sandbox: the product's original checklist, checked by the
panel where a machine can check it, and ticked by people where only they can.

Automatic checks (each passes or fails, and says why):
- the workspace folders have the owners and modes the panel gave them (755);
- no credentials in `shared/` or `exports/` (sandboxes.scanner);
- a git identity is set;
- a backup younger than 24 hours exists (once the sandbox has any backup);
- the host's egress rules are in place (for a sandbox on the network; network.may_join says);
- the container's real settings, read back from `docker inspect` and the kernel, meet the
  policy (selectors.hardening_report), a container changed outside the panel included;
- the team's policy for Claude Code (its managed settings) is the one the container was made
  with (the digest label sandboxes.managed_settings sets), when the team has one;
- its disk use is bounded (a quota in the storage pool) and under SANDBOX_DISK_WARN_PERCENT, and,
  with a writable root file system, whether its container layer is bounded (`docker inspect`).

Manual items are the team's own list (pre-filled from the original before/during/after list);
ticking and unticking are audited. The number of failed automatic checks is kept on the
sandbox for the dashboard's badge, refreshed when the page is shown and periodically.
"""

import os
import stat
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from . import engine, network, scanner, workspace
from .models import Identity, Sandbox

SCANNED = ("shared", "exports")


@dataclass(frozen=True)
class Check:
    label: str
    ok: bool | None  # None: does not apply (yet)
    detail: str


def _permissions(sandbox: Sandbox) -> Check:
    label = "Workspace folders are 755 and owned as the panel made them"
    wrong = []
    try:
        fd = workspace.open_sandbox_folder(sandbox)
    except OSError as exc:
        return Check(label, False, f"{sandbox.workspace_path} cannot be opened: {exc}")
    except Exception as exc:  # noqa: BLE001 - HostPathError and the like: the reason is the detail
        return Check(label, False, str(exc))
    try:
        st = os.fstat(fd)
        owner = 0 if os.geteuid() == 0 else os.geteuid()
        if stat.S_IMODE(st.st_mode) != 0o755 or st.st_uid != owner:
            wrong.append(f"{sandbox.name}/ is {stat.S_IMODE(st.st_mode):o} owned by {st.st_uid}, not 755 by {owner}")
        for folder in workspace.FOLDERS:
            try:
                fst = os.stat(folder, dir_fd=fd, follow_symlinks=False)
            except OSError:
                wrong.append(f"{folder} is missing")
                continue
            uid = settings.SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
            if not stat.S_ISDIR(fst.st_mode):
                wrong.append(f"{folder} is not a folder")
            elif stat.S_IMODE(fst.st_mode) != 0o755 or fst.st_uid != uid:
                wrong.append(f"{folder} is {stat.S_IMODE(fst.st_mode):o} owned by {fst.st_uid}, not 755 by {uid}")
    finally:
        os.close(fd)
    return Check(label, not wrong, "; ".join(wrong) or "as made")


def _credentials(sandbox: Sandbox) -> Check:
    label = "No credentials in shared/ or exports/"
    result = scanner.Scan()
    for folder in SCANNED:
        try:
            fd = workspace.open_sandbox_folder(sandbox, folder)
        except Exception as exc:  # noqa: BLE001 - a folder that cannot be opened fails the check; why is the detail
            return Check(label, False, f"{folder} cannot be read: {exc}")
        scanner.scan_folder(fd, folder, result)
    if result.findings:
        shown = "; ".join(f"{path}: {what}" for path, what in result.findings[:5])
        more = f" and {len(result.findings) - 5} more" if len(result.findings) > 5 else ""
        return Check(label, False, shown + more)
    note = f"{result.files} files, {result.bytes_read // 1024} KB read"
    if result.truncated:
        note += " (caps reached: the rest was not read)"
    return Check(label, True, note)


def _git(sandbox: Sandbox) -> Check:
    identity = Identity.objects.filter(sandbox=sandbox).first()
    ok = bool(identity and identity.git_name and identity.git_email)
    return Check("A git identity is set", ok, f"{identity.git_name} <{identity.git_email}>" if ok and identity else "not set")


def _backup(sandbox: Sandbox) -> Check:
    from backups.models import Backup

    label = "A backup younger than 24 hours exists"
    done = Backup.objects.filter(sandbox=sandbox, status=Backup.Status.DONE).order_by("-finished_at").first()
    if done is None:
        return Check(label, None, "no backup yet")
    age = timezone.now() - (done.finished_at or done.created_at)
    return Check(label, age <= timedelta(hours=24), f"the newest is {int(age.total_seconds() // 3600)} h old")


EgressKnown = dict[tuple[str, bool], network.Decision]


def _egress(sandbox: Sandbox, known: EgressKnown | None = None) -> Check:
    """Passes when the gate (network.may_join, the one a start asks) finds the sandbox contained:
    no network, or its rules in place. `known`: the gate's decisions earlier in this round, by
    mode and engine (the rules are the host's, the same for every sandbox of a mode)."""
    key = (sandbox.network_mode, engine.engine_for(sandbox).host.is_local)
    known = {} if known is None else known
    if key not in known:
        known[key] = network.may_join(key[0], local_engine=key[1])
    return Check("The host's egress rules are in place", known[key].contained, known[key].reason)


def _container(sandbox: Sandbox) -> Check:
    from .selectors import hardening_report

    label = "The container's real settings meet the policy"
    try:
        report = hardening_report(sandbox)
    except engine.EngineError as exc:
        return Check(label, None, f"Docker did not answer: {exc}")
    if not report:
        return Check(label, None, "no container")
    failing = [name for name, holds, _ in report if not holds]
    return Check(label, not failing, ("fails: " + "; ".join(failing)) if failing else f"{len(report)} checks hold")


def _managed_settings(sandbox: Sandbox) -> Check:
    """The container carries the team's current managed settings (their digest label)."""
    from teams.agent_policy import digest

    from .managed_settings import LABEL, delivered

    label = "The team's policy for Claude Code is in force"
    wanted = delivered(sandbox)
    if not sandbox.container_id:
        return Check(label, None, "no container: it is taken at the next start")
    try:
        labels = (engine.engine_for(sandbox).inspect_container(sandbox.container_id).get("Config") or {}).get("Labels") or {}
    except engine.EngineError as exc:
        return Check(label, None, f"Docker did not answer: {exc}")
    have, want = labels.get(LABEL, ""), digest(wanted)
    if have == want:
        return Check(label, True, f"managed settings {want}, read-only in /etc/claude-code")
    return Check(label, False, f"the container has {have or 'none'}, the team's is {want}: it is taken at the next start")


def _disk(sandbox: Sandbox) -> Check:
    """The disk quota: there (a subvolume of the storage pool), and not nearly used up. A sandbox
    with a writable root file system is also told whether its container layer is bounded: the
    quota covers its folders and home, never what it writes elsewhere in its root. Its writable
    extra mounts are named too: host folders outside the pool, which no quota bounds."""
    from storage import pool

    label = "The sandbox's disk use is bounded"
    layer = "; ".join(filter(None, [_layer(sandbox), _writable_mounts(sandbox)]))
    if not sandbox.in_pool:
        said = "no disk quota: plain folders (no storage pool), so it can fill the disk they are on"
        return Check(label, False, "; ".join(filter(None, [said, layer])))
    usage = pool.usage(sandbox.disk_group)
    if usage is None or not usage.limit:
        said = f"no disk quota: the quota group {sandbox.disk_group} cannot be read or has no limit"
        return Check(label, False, "; ".join(filter(None, [said, layer])))
    percent = usage.percent or 0.0
    said = f"{usage.used / 1048576:.0f} of {usage.limit / 1048576:.0f} MB used ({percent:.0f} %)"
    if percent >= settings.SANDBOX_DISK_WARN_PERCENT:
        said += ": nearly full; free space, delete checkpoints or raise the quota"
        return Check(label, False, "; ".join(filter(None, [said, layer])))
    return Check(label, True, "; ".join(filter(None, [said, layer])))


def _writable_mounts(sandbox: Sandbox) -> str:
    """The writable extra mounts (host folders an admin allowed, outside the storage pool), or ""."""
    writable = [m.container_path for m in sandbox.mounts.all() if not m.read_only]
    if not writable:
        return ""
    return f"what it writes in {', '.join(writable)} (extra mounts of host folders, writable) is on the host's disk, outside any quota"


def _layer(sandbox: Sandbox) -> str:
    """Whether the container layer of a sandbox with a writable root file system is bounded, as
    `docker inspect` says: by a size the container was made with (Docker's `--storage-opt
    size=`, which overlay2 honours only on xfs with project quotas), or by the devicemapper
    driver's fixed base size. The panel gives no size, so on overlay2 it is not bounded. ("" for
    a read-only root: nothing is written there but its tmpfs, which count as memory.) A default
    size set in the engine's own daemon options does not show in `docker inspect`; the sentence
    says what the container itself was given."""
    if sandbox.read_only_rootfs:
        return ""
    writable = "its writable root file system (the container layer)"
    if not sandbox.container_id:
        return f"{writable} will have no size limit: the panel makes its container without one"
    try:
        data = engine.engine_for(sandbox).inspect_container(sandbox.container_id)
    except engine.EngineError as exc:
        return f"whether {writable} is bounded is not known: Docker did not answer ({exc})"
    driver = (data.get("GraphDriver") or {}).get("Name") or "unknown"
    size = ((data.get("HostConfig") or {}).get("StorageOpt") or {}).get("size")
    if size:
        return f"{writable} is bounded to {size} by Docker's {driver} storage driver"
    if driver == "devicemapper":
        return f"{writable} is bounded by the devicemapper storage driver's base size (dm.basesize)"
    return f"{writable} is not bounded: Docker's {driver} storage driver was given no size for it, so it can fill Docker's disk"


def run_checks(sandbox: Sandbox, *, egress_known: EgressKnown | None = None) -> list[Check]:
    """Every automatic check, now; the failed count is saved for the dashboard's badge."""
    checks = [
        _permissions(sandbox),
        _credentials(sandbox),
        _git(sandbox),
        _backup(sandbox),
        _egress(sandbox, egress_known),
        _container(sandbox),
        _managed_settings(sandbox),
        _disk(sandbox),
    ]
    failed = sum(1 for c in checks if c.ok is False)
    Sandbox.objects.filter(pk=sandbox.pk).update(checklist_failed=failed, checklist_checked_at=timezone.now())
    sandbox.checklist_failed = failed
    return checks


def refresh_all(*, host_name: str | None = None) -> int:
    """Periodic: re-run the checks of every sandbox of `host_name` (None: of every host) that
    is not destroyed."""
    count = 0
    egress_known: EgressKnown = {}
    sandboxes = Sandbox.objects.exclude(status__in=[Sandbox.Status.DESTROYED, Sandbox.Status.DESTROYING])
    if host_name is not None:
        sandboxes = sandboxes.filter(host__name=host_name)
    for sandbox in sandboxes:
        run_checks(sandbox, egress_known=egress_known)
        count += 1
    return count
