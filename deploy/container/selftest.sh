#!/bin/bash
# Build the CPU image for real with podman and run tpcflow in it, outside the CI suite.
#
# Where no container registry can be reached (as on the development machines), the base image is made
# from Debian's packages: debootstrap bookworm with python3 and a venv on the PATH, imported into podman.
# torch's CPU wheel comes from a local wheel folder when PyTorch's index cannot be reached either.
#
#   apt-get install podman debootstrap
#   bash deploy/container/selftest.sh            # WHEELS=/opt/wheels (a folder holding torch 2.13.0+cpu)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=${BASE_IMAGE:-localhost/debian-python:3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
wheels=${WHEELS:-/opt/wheels}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if ! podman image exists "$base"; then
    echo "== base image $base from Debian's packages (debootstrap)"
    rootfs=$(mktemp -d /tmp/tpcflow-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
        > "$rootfs.log"
    chroot "$rootfs" python3 -m venv /opt/venv
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$base"
    rm -rf "$rootfs" "$rootfs.log"
fi

echo "== podman build (VARIANT=cpu)"
# chroot isolation: this VM's hybrid cgroups stop crun; the host's CA bundle: its TLS goes through a proxy
podman build --isolation chroot --format docker -f "$repo/deploy/container/Dockerfile" -t tpcflow:cpu \
    --build-arg BASE_IMAGE="$base" --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_CERT=/host-ca.crt \
    --build-arg TORCH_CPU_INDEX=https://pypi.org/simple --volume "$wheels:/wheels:ro" \
    --volume "$ca:/host-ca.crt:ro" "$repo"

echo "== tpcflow in the image"
run() {  # podman run; where the runtime may not set rlimits (this VM), chroot into the image's files
    if podman run --rm tpcflow:cpu --version > /dev/null 2>&1; then
        podman run --rm --user 10001:10001 tpcflow:cpu "$@"
    else
        mnt=$(podman image mount tpcflow:cpu)              # read-only: a scratch /tmp for the outputs
        mount -t proc proc "$mnt/proc" 2>/dev/null || true
        mount -t tmpfs -o mode=1777 tmpfs "$mnt/tmp"
        mount --rbind /dev "$mnt/dev"                      # /dev/null, /dev/shm (the loader's shared memory)
        chroot --userspec=10001:10001 "$mnt" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/tmp \
            bash -c 'cd /tmp && exec tpcflow "$@"' tpcflow "$@"
        umount -R "$mnt/dev" 2>/dev/null || true
        umount "$mnt/tmp" "$mnt/proc" 2>/dev/null || true
    fi
}
podman run --rm tpcflow:cpu --version || echo "podman run refused here: running the image's files by chroot"
run --version
run --help | head -5
run demo --out /tmp/demo --iterations 4 --train-events 4 --test-events 2 --downsample 3 --displays 1 \
    --no-progress
echo "== selftest passed"
