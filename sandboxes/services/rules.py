"""The installation's policy rules, read from settings and the host: the allowed roots, the
panel's own folders no sandbox may reach, and whether SELinux labels mean anything here."""

import os
import pwd
import sys

from django.conf import settings

from .. import engine, managed_settings, network, policy


def protected_folders(*, with_engine: bool = False) -> tuple[str, ...]:
    """The panel's own folders (its code, its virtualenv and var/: keys, database, Redis; the
    backups and the evidence), and,
    with_engine, the Docker engine's data (every sandbox's home volume is there)."""
    found: list[str] = [str(settings.BASE_DIR), str(settings.VAR_DIR), sys.prefix, str(settings.BACKUP_ROOT), str(settings.EVIDENCE_ROOT)]
    if with_engine and (data_root := engine.engine_for().data_root()):
        found.append(data_root)
    return tuple(dict.fromkeys(os.path.realpath(p) for p in found))


def policy_rules() -> policy.Rules:
    """The installation's policy, from settings: the one place that reads the allowed roots."""
    return policy.Rules(
        workspace_root=str(settings.WORKSPACE_ROOT),
        mount_roots=tuple(str(r) for r in settings.SANDBOX_MOUNT_ROOTS),
        networks=network.networks(),
        dns=(network.allow_gateway(),),
        runtimes=tuple(settings.SANDBOX_RUNTIMES),
        homes=tuple(policy.real_homes(entry.pw_dir for entry in pwd.getpwall())),
        protected=protected_folders(with_engine=True),
        trusted_uids=frozenset({0, os.geteuid()}),
        selinux=host_has_selinux(),
        managed_settings_root=str(managed_settings.root()),
    )


def host_has_selinux() -> bool:
    """SELinux is enforcing on this machine (a label level then means something)."""
    try:
        with open("/sys/fs/selinux/enforce") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False
