"""Reading a container back: the report of what Docker actually applied, and the spec's drift."""

from .. import seccomp
from ._checks import TMPFS_OPTIONS, is_non_root
from ._spec import ALLOWED_SECURITY_OPT, LOOSE_SYSCTLS, MANAGED_SETTINGS_TARGET, STRICT_SYSCTLS, ContainerSpec

# --- reading a container back ----------------------------------------------------------------------


def inspect_report(data: dict, spec: ContainerSpec | None = None, processes: list[dict] | None = None) -> list[tuple[str, bool, str]]:
    """(check, holds, what Docker says) for a container's `docker inspect` output: the policy
    read back from the running container, not from what the panel asked for. With `spec`, the
    container is also compared with the sandbox's saved settings; with `processes` (see
    engine.process_privileges), every process inside is checked for capabilities and root."""
    host, config = data["HostConfig"], data["Config"]
    user = config.get("User") or "root"
    mounts = data.get("Mounts") or []
    namespaces = {k: host.get(k) or "" for k in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode")}
    security = host.get("SecurityOpt") or []
    named = [
        o if not o.startswith("seccomp=") else ("seccomp=the panel's profile" if o == seccomp.option() else "seccomp=another profile")
        for o in security
    ]
    report = [
        ("Runs as a non-root user", is_non_root(user), user),
        (
            "no-new-privileges, and the panel's seccomp profile (no btrfs ioctls)",
            {o for o in security if not o.startswith("label=level:")} == ALLOWED_SECURITY_OPT | {seccomp.option()},
            ", ".join(named) or "not set",
        ),
        (
            "All capabilities dropped, none added",
            host.get("CapDrop") == ["ALL"] and not host.get("CapAdd"),
            f"drop {host.get('CapDrop')}, add {host.get('CapAdd') or []}",
        ),
        ("Not privileged", not host.get("Privileged"), str(bool(host.get("Privileged")))),
        ("Memory limit", (host.get("Memory") or 0) > 0, f"{(host.get('Memory') or 0) >> 20} MB"),
        ("CPU limit", (host.get("NanoCpus") or 0) > 0, f"{(host.get('NanoCpus') or 0) / 1e9:g} CPUs"),
        ("Process limit", (host.get("PidsLimit") or 0) > 0, str(host.get("PidsLimit") or "none")),
        (
            "No host namespaces",
            "host" not in namespaces.values() and not any(v.startswith("container:") for v in namespaces.values()),
            f"network {namespaces['NetworkMode']}",
        ),
        ("No host devices", not host.get("Devices"), str(len(host.get("Devices") or []))),
        ("No Docker socket mounted", not any("docker.sock" in (m.get("Source") or "") for m in mounts), f"{len(mounts)} mounts"),
        ("imports is read-only", any(m.get("Destination") == "/workspace/imports" and not m.get("RW") for m in mounts), ""),
        (
            "Read-only root filesystem",
            bool(host.get("ReadonlyRootfs")),
            "read-only" if host.get("ReadonlyRootfs") else "writable (this sandbox opted out)",
        ),
        ("Open-file and process limits", {u.get("Name") for u in host.get("Ulimits") or []} >= {"nofile", "nproc"}, _ulimits_text(host)),
        _sysctls_row(host),
        (
            "No ports published beyond 127.0.0.1",
            all(b.get("HostIp") == "127.0.0.1" for bs in (host.get("PortBindings") or {}).values() for b in (bs or [])),
            "",
        ),
    ]
    if spec is not None:
        drift = spec_drift(spec, data)
        report.append(("Matches the sandbox's saved settings", not drift, "; ".join(drift) or "yes"))
    if processes is not None:
        bad = [p for p in processes if p["cap_eff"] or p["cap_bnd"] or p["uid"] == 0 or not p["no_new_privs"]]
        shown = "; ".join(f"pid {p['pid']} {p['command'][:40]!r} uid {p['uid']} caps {p['cap_eff']:x}" for p in bad[:3])
        report.append(("No process inside has capabilities or runs as root", not bad, shown or f"{len(processes)} processes checked"))
    return report


def _sysctls_row(host: dict) -> tuple[str, bool, str]:
    """Ports below 1024 and ping: refused, or allowed because the sandbox opted in (then the
    comparison with its saved settings says whether it did)."""
    found = host.get("Sysctls") or {}
    said = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sorted(found.items())) or "Docker's defaults (both allowed)"
    if found == LOOSE_SYSCTLS:
        said += " (this sandbox opted in)"
    return ("No ports below 1024, no ping, unless opted in", found in (STRICT_SYSCTLS, LOOSE_SYSCTLS), said)


def _ulimits_text(host: dict) -> str:
    return ", ".join(f"{u.get('Name')} {u.get('Soft')}/{u.get('Hard')}" for u in host.get("Ulimits") or []) or "none set"


def _log_config(host: dict) -> dict:
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type") != "json-file":
        return {"type": log_config.get("Type")}
    return {k: (log_config.get("Config") or {}).get(k) for k in ("max-size", "max-file")}


def tmpfs_options(spec: ContainerSpec) -> dict[str, str]:
    """Docker's `Tmpfs` for the spec: target -> mount options."""
    uid, _, gid = (spec.user or "").partition(":")
    extra = {
        "/run/secrets": f",noexec,mode=0700,uid={uid},gid={gid}",
        "/run/ccpanel": ",noexec,mode=0755",  # root's: the proxy's CA, which the sandbox reads and cannot change
    }
    return {target: f"{TMPFS_OPTIONS},size={size}" + extra.get(target, "") for target, size in spec.tmpfs}


def spec_drift(spec: ContainerSpec, data: dict) -> list[str]:
    """How a container (its `docker inspect`) differs from what `spec` asks for; [] if it matches.
    Used before a start (a container that drifted is recreated from the spec) and in the report."""
    host, config = data["HostConfig"], data["Config"]
    drift = []
    want_mounts = {(b.source, b.target, not b.read_only) for b in spec.binds}
    want_mounts |= {(v.name, v.target, True) for v in spec.volumes}
    if spec.managed_settings:
        want_mounts.add((spec.managed_settings, MANAGED_SETTINGS_TARGET, False))
    have_mounts = {
        ((m.get("Name") if m.get("Type") == "volume" else m.get("Source")), m.get("Destination"), bool(m.get("RW")))
        for m in data.get("Mounts") or []
    }
    if want_mounts != have_mounts:
        drift.append("mounts differ")
    checks = [
        ("user", config.get("User") or "", spec.user),
        ("image", config.get("Image") or "", spec.image),
        ("memory", host.get("Memory") or 0, spec.memory_bytes),
        ("swap", host.get("MemorySwap") or 0, spec.memory_bytes),
        ("CPUs", host.get("NanoCpus") or 0, spec.nano_cpus),
        ("process limit", host.get("PidsLimit") or 0, spec.pids_limit),
        ("capabilities dropped", list(host.get("CapDrop") or []), list(spec.cap_drop)),
        ("capabilities added", list(host.get("CapAdd") or []), list(spec.cap_add)),
        ("security options", sorted(host.get("SecurityOpt") or []), sorted(spec.security_opt)),
        ("privileged", bool(host.get("Privileged")), spec.privileged),
        ("network", host.get("NetworkMode") or "", spec.network),
        ("networks attached", sorted((data.get("NetworkSettings") or {}).get("Networks") or {}), [spec.network]),
        ("name servers", list(host.get("Dns") or []), list(spec.dns)),
        ("devices", len(host.get("Devices") or []), len(spec.devices)),
        ("read-only root", bool(host.get("ReadonlyRootfs")), spec.read_only_rootfs),
        # Never restarted by Docker itself: that would mount the folders again without the policy
        # looking (`docker update --restart` can change it on a made container).
        ("restart policy", (host.get("RestartPolicy") or {}).get("Name") or "no", "no"),
        ("runtime", host.get("Runtime") or "runc", spec.runtime or "runc"),
        ("labels", {k: (config.get("Labels") or {}).get(k) for k in spec.labels}, spec.labels),
        ("TTY", bool(config.get("Tty")), False),
        ("log files", _log_config(host), {"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)}),
        ("in-memory folders", host.get("Tmpfs") or {}, tmpfs_options(spec)),
        ("limits", sorted((u["Name"], u["Soft"], u["Hard"]) for u in host.get("Ulimits") or []), sorted(spec.ulimits)),
        ("kernel sysctls", host.get("Sysctls") or {}, spec.sysctls),
    ]
    drift += [f"{what} is {have!r}, not {want!r}" for what, have, want in checks if have != want]
    return drift
