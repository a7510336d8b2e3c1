#!/usr/bin/env bash
# `make image-arm64`: prove Dockerfile.arm64 without any registry. Builds a debian:bookworm-slim arm64 base with
# debootstrap under qemu-user-static, imports it into a local docker daemon (Debian's docker.io), builds the image
# for linux/arm64 and runs `edge-runtime validate` and `edge-runtime bench --quick` inside it under emulation.
# Slow (tens of minutes under emulation); never part of `make test`. Work files go to $WORK (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/edge-runtime-image-arm64}
TAG=${TAG:-edge-runtime:arm64}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$WORK"

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "host tools: docker.io, qemu-user-static, binfmt-support, debootstrap"
missing=""
for pkg in docker.io qemu-user-static binfmt-support debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

step "aarch64 binaries run through binfmt_misc"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
$SUDO update-binfmts --enable qemu-aarch64 || true
cat /proc/sys/fs/binfmt_misc/qemu-aarch64

step "a docker daemon (experimental, for \`import --platform\`)"
DOCKER=/usr/bin/docker  # Debian's client matches Debian's daemon's API version
if ! $DOCKER info >/dev/null 2>&1; then
    $SUDO sh -c "nohup dockerd --experimental >'$WORK/dockerd.log' 2>&1 &"
    for _ in $(seq 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
    $DOCKER info >/dev/null 2>&1 || { echo "dockerd did not start; its log:"; tail -30 "$WORK/dockerd.log"; exit 1; }
fi
$DOCKER version --format 'docker {{.Server.Version}} on {{.Server.Os}}/{{.Server.Arch}}, experimental {{.Server.Experimental}}'
if [ "$($DOCKER version --format '{{.Server.Experimental}}')" != true ]; then
    echo "the running docker daemon is not experimental: without it, import labels an arm64 root file system"
    echo "linux/amd64 and the build fails; restart it with \`dockerd --experimental\`"
    exit 1
fi

step "debian:bookworm-slim arm64 base with debootstrap"
# docker 20.10 labels an imported image with the host's architecture even with `import --platform`, so ask the
# kernel inside the image what it runs
base_machine=$($DOCKER run --rm debian:bookworm-slim uname -m 2>/dev/null || true)
if [ "$base_machine" != aarch64 ]; then
    tarball="$WORK/bookworm-arm64-minbase.tar"
    if [ ! -s "$tarball" ]; then
        rootfs="$WORK/rootfs"
        $SUDO rm -rf "$rootfs"
        # the host's own Debian mirror, as its apt sources name it
        mirror=${MIRROR:-$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
            | awk '($1 == "URIs:" || $1 == "deb") && $2 ~ /\/debian$/ {print $2; exit}')}
        echo "mirror: $mirror"
        $SUDO debootstrap --arch=arm64 --variant=minbase bookworm "$rootfs" "$mirror"
        $SUDO rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
        $SUDO tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    fi
    $DOCKER rmi debian:bookworm-slim >/dev/null 2>&1 || true
    $DOCKER import --platform linux/arm64 "$tarball" debian:bookworm-slim
fi
echo "base: debian:bookworm-slim runs as $($DOCKER run --rm debian:bookworm-slim uname -m)"

step "build $TAG for linux/arm64"
# The classic builder, without --platform: the base is arm64, so every RUN executes under qemu through binfmt.
# (docker 20.10's classic builder with --platform rejects its own intermediate layers as linux/amd64, and BuildKit
# resolves FROM in a registry, which this must not need.)
DOCKER_BUILDKIT=0 $DOCKER build -f Dockerfile.arm64 -t "$TAG" .
# docker 20.10 labels an imported image (and so every image built on it) with the host's architecture even with
# `import --platform`; what counts is what the image executes, so the check asks the kernel inside it
machine=$($DOCKER run --rm --entrypoint uname "$TAG" -m)
echo "built $TAG: label $($DOCKER image inspect "$TAG" --format '{{.Os}}/{{.Architecture}}'), runs as $machine"
[ "$machine" = aarch64 ] || { echo "expected aarch64 binaries"; exit 1; }

step "edge-runtime validate inside the image"
$DOCKER run --rm --platform linux/arm64 "$TAG" validate /app/configs/rice_line.yaml

step "edge-runtime bench --quick inside the image"
# the data sets the rice and vibration benchmarks read are mounted read-only where the image looks for them
data=$(cd .. && pwd)/shared/datasets
mount=()
[ -d "$data" ] && mount=(-v "$data:/shared/datasets:ro")
$DOCKER run --rm --platform linux/arm64 -v "$WORK:/out" "${mount[@]}" --user "$(id -u)" "$TAG" \
    bench --quick --json /out/bench-arm64.json \
    --only modbus --only opcua --only pipeline --only rice --only weld --only outbox
# (bench_mqtt, bench_service and bench_ui need a mosquitto broker beside the service; the image ships none)
echo "report: $WORK/bench-arm64.json and $WORK/bench-arm64.md"
