#!/usr/bin/env bash
# Builds a minimal Debian bookworm root filesystem with debootstrap and writes it as a tar
# stream to the path given as $1. Used when no container registry answers, so that the sandbox
# image can still be built from `docker import`ed local material. Needs root and debootstrap.
set -euo pipefail
out=${1:?usage: build-base-rootfs.sh OUT.tar}
suite=${DEBIAN_SUITE:-bookworm}
# Use the mirror this host already uses, so a machine that only reaches its own mirror works.
mirror=${DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | grep -v security | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d "${TMPDIR:-/tmp}/ccpanel-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "==> debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log"; exit 1; }
cat >"$work/rootfs/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
SRC
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
echo "==> packing root filesystem"
tar --numeric-owner -C "$work/rootfs" -cf "$out.part" .
mv "$out.part" "$out"
echo "==> wrote $out ($(du -h "$out" | cut -f1))"
