#!/usr/bin/env bash
# Builds the tiny busybox root filesystem used by the test suite (about 2 MB) and writes it as
# a tar to $1. It has the same sandbox user (uid 1000, home /home/claude) as the real image.
set -euo pipefail
out=${1:?usage: build-test-rootfs.sh OUT.tar}
bb=$(command -v busybox) || { echo "busybox-static is not installed" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ccpanel-testfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/rootfs
mkdir -p "$r"/{bin,etc,home/claude,workspace,tmp,proc,sys,dev}
cp "$bb" "$r/bin/busybox"
for applet in $("$bb" --list); do [ "$applet" = busybox ] || ln -sf busybox "$r/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nclaude:x:1000:1000:claude:/home/claude:/bin/sh\n' >"$r/etc/passwd"
printf 'root:x:0:\nclaude:x:1000:\n' >"$r/etc/group"
echo 'export PS1="\\u@\\h:\\w\\$ "' >"$r/home/claude/.profile"
chmod 1777 "$r/tmp"
tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$out.part" --exclude=./home/claude --exclude=./workspace .
# The user's home and the workspace belong to uid 1000, as in the real image.
tar --numeric-owner --owner=1000 --group=1000 -C "$r" -rf "$out.part" ./home/claude ./workspace
mv "$out.part" "$out"
