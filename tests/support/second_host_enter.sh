#!/bin/sh
# second_host_enter.sh NETNS POOL -- COMMAND...
# Runs COMMAND as a process of the second host: in the network namespace NETNS, in a mount
# namespace of its own (a slave copy of this machine's: nothing it mounts comes back out) with
#   - a /sys of NETNS (so /sys/class/net lists the namespace's interfaces, as the panel reads them),
#   - this machine's cgroup file systems still at /sys/fs/cgroup (dockerd and runc need them;
#     `ip netns exec` loses them: it mounts a fresh sysfs over /sys and the cgroups go with it),
#   - no btrfs file system but POOL (the second host's storage pool), and no network namespace
#     bound outside /run/netns (the machine's containers' under /run/docker/netns): this mount
#     namespace holds a copy of every mount the machine has when it starts, and a copy of another
#     pool's mount would keep that pool's loop device busy after its owner unmounted it (a copy of
#     a container's namespace, that namespace alive after its container is gone).
set -eu
[ $# -ge 3 ] && [ "$3" = "--" ] || { echo "usage: $0 NETNS POOL -- COMMAND..." >&2; exit 2; }
ns=$1 pool=$2
shift 3
exec nsenter --net="/run/netns/$ns" -- unshare --mount --propagation slave -- sh -eu -c '
pool=$1; shift
held=$(mktemp -d /tmp/.ccp-h2-cgroup.XXXXXX)
mount --rbind /sys/fs/cgroup "$held"
mount -t sysfs sysfs /sys
mount --move "$held" /sys/fs/cgroup
rmdir "$held"
findmnt -rn -t btrfs,nsfs -o FSTYPE,TARGET | sort -k2 -r | while read -r fstype target; do
  case "$fstype:$target" in
    "btrfs:$pool" | nsfs:/run/netns/*) ;;
    *) umount -l "$target" 2>/dev/null || true ;;  # gone meanwhile: its owner unmounted it
  esac
done
exec "$@"
' sh "$pool" "$@"
