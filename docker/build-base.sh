#!/bin/sh
# natkit offline base image: a Debian bookworm root filesystem from debootstrap, imported into Docker.
#
# The test suite cannot reach a container registry (design.md §5), so the images natkit builds start
# FROM this base instead of python:3.11-slim.  Users with a registry never need this script.
#
#   docker/build-base.sh [TARBALL [IMAGE]]
#
# TARBALL  cached root filesystem (default: $NATKIT_CACHE/docker/bookworm-minbase.tar,
#          NATKIT_CACHE defaulting to ${XDG_CACHE_HOME:-$HOME/.cache}/natkit); built once per machine.
# IMAGE    the image name to import it as (default natkit/base:bookworm); skipped if DOCKER_HOST is unset
#          and no engine answers.
# MIRROR   environment: the Debian mirror (default http://deb.debian.org/debian).
#
# Needs root and debootstrap (Debian package debootstrap).  Takes about a minute on a fast mirror.
set -eu

CACHE="${NATKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/natkit}"
TARBALL="${1:-$CACHE/docker/bookworm-minbase.tar}"
IMAGE="${2:-natkit/base:bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# What a natkit node or router needs: Python (3.11, the wheels' ABI), a venv to install wheels into,
# iproute2 for routes, nftables for NAT rules, conntrack to read the mapping table, ping for checks.
PACKAGES="python3,python3-venv,iproute2,nftables,conntrack,iputils-ping,procps"

if [ ! -s "$TARBALL" ]; then
    [ "$(id -u)" = 0 ] || { echo "build-base.sh: debootstrap needs root" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "build-base.sh: install the Debian package debootstrap" >&2; exit 1; }
    mkdir -p "$(dirname "$TARBALL")"
    ROOTFS="$(mktemp -d "$(dirname "$TARBALL")/rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" >&2
    # Keep the image small and reproducible: no package lists, caches or logs.
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
        "$ROOTFS"/var/log/* "$ROOTFS"/debootstrap
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    docker import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
    echo "$IMAGE"
else
    echo "build-base.sh: root filesystem at $TARBALL; no Docker engine answers, not imported" >&2
fi
