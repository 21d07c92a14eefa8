#!/bin/sh
# second_host_enter.sh NETNS POOL -- COMMAND...
# Runs COMMAND as a process of the second host: in the network namespace NETNS, in a mount
# namespace of its own (a slave copy of this machine's: nothing it mounts comes back out) with
#   - a /sys of NETNS (so /sys/class/net lists the namespace's interfaces, as the panel reads them),
#   - this machine's cgroup file systems still at /sys/fs/cgroup (dockerd and runc need them;
#     `ip netns exec` loses them: it mounts a fresh sysfs over /sys and the cgroups go with it),
#   - no btrfs file system but POOL (the second host's storage pool): a copy of another pool's
#     mount in here would keep that pool's loop device busy after its owner unmounted it.
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
findmnt -rn -t btrfs -o TARGET | sort -r | while read -r target; do
  [ "$target" = "$pool" ] || umount -l "$target"
done
exec "$@"
' sh "$pool" "$@"
