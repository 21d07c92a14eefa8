"""The sandboxes' seccomp profile: Docker's default (third_party/moby-seccomp, vendored), with the
btrfs ioctls refused.

Why: the owner of a folder on btrfs may make a subvolume there (BTRFS_IOC_SUBVOL_CREATE, no
capability needed), snapshot one, or mark one read-only. In the storage pool that lets the agent
write past its disk quota (a subvolume made with an empty quota-group list is in no group),
hide files from checkpoints and backups (snapshots leave nested subvolumes out), and make
Destroy and restores fail (a read-only subvolume cannot be emptied). Every btrfs ioctl has type
0x94 (bits 8-15 of the request); FICLONE and its relatives share it, and `cp --reflink=auto`
falls back to copying.

How: libseccomp gives an unconditional allow precedence over a conditional deny of the same
call, so `ioctl` leaves the default profile's allow list and comes back as eight conditional
allows, one per bit of the type byte: "allowed when this bit differs from 0x94's". Any request
whose type is not 0x94 differs in at least one bit and is allowed; type 0x94 matches none and
gets the profile's default action (EPERM). Only bits 8-15 are compared, so the upper half of
the register (which the kernel ignores) changes nothing.
"""

import json
from functools import cache
from pathlib import Path

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "third_party" / "moby-seccomp" / "default.json"
REFUSED_IOCTL_TYPE = 0x94  # BTRFS_IOCTL_MAGIC


@cache
def profile() -> dict:
    data = json.loads(DEFAULT_PROFILE.read_text())
    for rule in data["syscalls"]:
        if "ioctl" in rule["names"] and not rule.get("args"):
            rule["names"].remove("ioctl")
    for k in range(8):
        bit = 1 << (8 + k)
        other = 0 if (REFUSED_IOCTL_TYPE >> k) & 1 else bit
        data["syscalls"].append(
            {
                "names": ["ioctl"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": bit, "valueTwo": other, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return data


@cache
def option() -> str:
    """The security option a sandbox's container is created with (the profile, inline)."""
    return "seccomp=" + json.dumps(profile(), separators=(",", ":"), sort_keys=True)
