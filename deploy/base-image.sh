#!/usr/bin/env bash
# pitrdrill/debian:12 — the base of every pitrdrill image, made here from Debian's packages
# (no registry image): a `debootstrap --variant=minbase bookworm` rootfs, slimmed the way
# Debian's own container images are, brought up to date from bookworm-updates and
# bookworm-security, and imported with `docker import`.
#
# Usage: deploy/base-image.sh [TAG]     (run as root: debootstrap needs it)
#
# Cached: the image carries a label with the hash of this script (the whole recipe); when an
# image with that tag and that hash exists, nothing is done. Set FORCE=1 to rebuild anyway.
set -euo pipefail

TAG=${1:-pitrdrill/debian:12}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
RECIPE=$(cat "$0" | sha256sum | cut -c1-16)

have=$(docker image inspect -f '{{index .Config.Labels "org.pitrdrill.recipe"}}' "$TAG" 2>/dev/null || true)
if [ "$have" = "$RECIPE" ] && [ -z "${FORCE:-}" ]; then
  echo "$TAG: up to date (recipe $RECIPE)"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "building $TAG needs root (debootstrap): run 'sudo make images'" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/pitrdrill-rootfs.XXXXXX")
rootfs=$work/rootfs
cleanup() {
  for m in proc sys dev/pts dev; do umount "$rootfs/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "$TAG: debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

# What Debian's own container images do (debuerreotype): no documentation or translations,
# no recommends, no daemons started by package scripts, apt caches emptied after each run.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
# PostgreSQL from Debian must never create its default cluster: pitrdrill runs its own.
mkdir -p "$rootfs/etc/postgresql-common"
echo 'create_main_cluster = false' >"$rootfs/etc/postgresql-common/createcluster.conf"

# Security and point updates, inside the rootfs.
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
mount -t devpts devpts "$rootfs/dev/pts" 2>/dev/null || true
chroot "$rootfs" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade && apt-get clean' \
  >"$work/upgrade.log" 2>&1 || { tail -30 "$work/upgrade.log" >&2; exit 1; }
umount "$rootfs/dev/pts" 2>/dev/null || true
umount "$rootfs/proc"

rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
       "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
       "$rootfs"/usr/share/doc/*/[!c]* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/[!l]* "$rootfs"/etc/machine-id
find "$rootfs/usr/share/doc" -mindepth 1 -maxdepth 1 -type d -empty -delete 2>/dev/null || true
: >"$rootfs/etc/resolv.conf"
echo "pitrdrill" >"$rootfs/etc/hostname"

echo "$TAG: importing"
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change "LABEL org.pitrdrill.recipe=$RECIPE" \
  --change 'LABEL org.opencontainers.image.description="Debian 12 (bookworm) minbase, debootstrap"' \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  - "$TAG" >/dev/null
# The image this one replaces: removed unless images built from it still need it.
[ -z "$old_id" ] || docker image rm "$old_id" >/dev/null 2>&1 || true
echo "$TAG: built ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
