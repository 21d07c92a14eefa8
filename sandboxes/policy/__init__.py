"""The security policy: every container spec passes `check()` before Docker sees it.

The policy is an allowlist. Each field of a ContainerSpec must hold one of the values listed
here; anything else is refused, with every reason listed as a sentence a user can act on.

`check()` has two halves:
- `check_config()` is pure: it judges the spec's values against the installation's Rules.
- `check_host_paths()` judges every bind source *as it is on disk now*: no symbolic link in any
  component (each one is opened with O_NOFOLLOW, from / down), a directory, inside the allowed
  roots, and the same device and inode as recorded when the sandbox was created. Docker resolves
  a bind source again every time it starts a container, so this half runs right before every
  create and every start (see services.actions), not once at create. It only reads the host.

engine.create_container calls `check()` itself, so no path to Docker can skip it.

The package's modules, private behind this one (import `sandboxes.policy`, not them):
    _spec      the allowlist's values, Rules, ContainerSpec and its mounts, PolicyViolation
    _paths     paths judged lexically, then on disk (open_dir_nofollow, dir_chain, mountinfo)
    _checks    check(), check_config() and the layout and profile checks
    _inspect   a container read back: inspect_report(), spec_drift()
"""

from ._checks import check, check_config, same_folder_or_nested
from ._inspect import inspect_report, spec_drift, tmpfs_options
from ._paths import (
    HostPathError,
    MountEntry,
    check_container_path,
    check_extra_source_lexically,
    check_identity_against,
    check_image_ref,
    check_mount_roots,
    check_name,
    check_single_name,
    check_workspace_root,
    dir_chain,
    dir_identity,
    forbidden_chains,
    is_within,
    open_dir_nofollow,
    overlaps,
    read_mountinfo,
    real_homes,
)
from ._spec import (
    ENV_NAME_RE,
    LABEL_UUID,
    MANAGED_SETTINGS_TARGET,
    NO_NEW_PRIVILEGES,
    PING_GROUPS,
    PORT_START,
    STRICT_SYSCTLS,
    BindMount,
    ContainerSpec,
    PolicyViolation,
    PortBinding,
    Rules,
    VolumeMount,
    check_selinux_level,
    network_sysctls,
    selinux_level_option,
)

__all__ = [
    "BindMount",
    "ContainerSpec",
    "ENV_NAME_RE",
    "HostPathError",
    "LABEL_UUID",
    "MANAGED_SETTINGS_TARGET",
    "MountEntry",
    "NO_NEW_PRIVILEGES",
    "PING_GROUPS",
    "PORT_START",
    "PolicyViolation",
    "PortBinding",
    "Rules",
    "STRICT_SYSCTLS",
    "VolumeMount",
    "check",
    "check_config",
    "check_container_path",
    "check_extra_source_lexically",
    "check_identity_against",
    "check_image_ref",
    "check_mount_roots",
    "check_name",
    "check_selinux_level",
    "check_single_name",
    "check_workspace_root",
    "dir_chain",
    "dir_identity",
    "forbidden_chains",
    "inspect_report",
    "is_within",
    "network_sysctls",
    "open_dir_nofollow",
    "overlaps",
    "read_mountinfo",
    "real_homes",
    "same_folder_or_nested",
    "selinux_level_option",
    "spec_drift",
    "tmpfs_options",
]
