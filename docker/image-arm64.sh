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
register_qemu() {
    # qemu >= 9.1 registers through systemd's binfmt.d (run here directly: no init needed), older through
    # binfmt-support
    if [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        $SUDO /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
    else
        $SUDO update-binfmts --enable qemu-aarch64 || true
    fi
}
register_qemu
# qemu before 8.2 shows the guest the host's own /proc/cpuinfo; onnxruntime's CPU detection on aarch64 reads it and
# dies of SIGSEGV at `import onnxruntime` when it is an x86 one (a real arm64 kernel, and qemu from 8.2, give the
# arm64 format). Debian 12 ships qemu 7.2, so take bookworm-backports' there.
qemu_version() {
    # the registered interpreter refuses to run outside binfmt_misc; the binary it links to tells its version
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo 0; return; }
    "$(readlink -f "$(awk '$1 == "interpreter" {print $2}' /proc/sys/fs/binfmt_misc/qemu-aarch64)")" --version \
        | awk 'NR == 1 {print $3}'
}
if dpkg --compare-versions "$(qemu_version)" lt 8.2; then
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" != bookworm ]; then
        echo "qemu $(qemu_version) is older than 8.2 and this is not Debian 12: install a newer qemu-user-static"; exit 1
    fi
    if ! apt-cache policy | grep -q bookworm-backports; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            /usr/share/keyrings/debian-archive-keyring.gpg | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources
        $SUDO apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports qemu-user-static
    register_qemu
fi
echo "qemu $(qemu_version)"
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

step "aarch64 wheels for the image, downloaded on the host"
# pip inside the build cannot reach a registry that only the host trusts (TLS interception or a private CA in the
# host's certificate store), and neither that CA nor any wheel file may end up in a layer. So the host downloads
# what the image installs, the runtime's dependencies and the editable install's build backend, for Debian
# bookworm's Python 3.11 on aarch64, and serves the folder on the docker bridge while the image builds.
host_python=${HOST_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
wheels="$WORK/wheels"
mkdir -p "$wheels"
mapfile -t reqs < <("$host_python" -c 'import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"] + ["wheel"]))')
"$host_python" -m pip download --quiet --only-binary=:all: --dest "$wheels" \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 "${reqs[@]}"
echo "$(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1) in $wheels"

bridge=$($DOCKER network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
if [ -z "$bridge" ]; then
    # docker 28 leaves the default bridge's gateway out of its IPAM config: it is docker0's own address
    bridge=$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)
fi
[ -n "$bridge" ] || { echo "no gateway address on docker's bridge network (nor on docker0)"; exit 1; }
# a fixed port when free keeps the build args, and so the builder's cache of the pip layer, the same across runs
port=$("$host_python" -c 'import socket, sys
for port in (int(sys.argv[2]), 0):
    try:
        with socket.socket() as s:
            s.bind((sys.argv[1], port))
            print(s.getsockname()[1])
            break
    except OSError:
        pass' "$bridge" "${WHEELS_PORT:-38650}")
"$host_python" -m http.server --bind "$bridge" --directory "$wheels" "$port" >"$WORK/wheels-http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
index="http://$bridge:$port/"
for _ in $(seq 30); do "$host_python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$index" 2>/dev/null && break; sleep 1; done
echo "serving $wheels at $index"

step "build $TAG for linux/arm64"
# The classic builder, without --platform: the base is arm64, so every RUN executes under qemu through binfmt.
# (docker 20.10's classic builder with --platform rejects its own intermediate layers as linux/amd64, and BuildKit
# resolves FROM in a registry, which this must not need.) pip in the build sees only the served wheels.
DOCKER_BUILDKIT=0 $DOCKER build -f Dockerfile.arm64 -t "$TAG" \
    --build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=$index" --build-arg "PIP_TRUSTED_HOST=$bridge" .
kill "$server" 2>/dev/null || true
if $DOCKER image inspect "$TAG" --format '{{json .Config.Env}}' | grep -q PIP_; then
    echo "a build-time pip setting leaked into the image's environment"; exit 1
fi
# docker 20.10 labels an imported image (and so every image built on it) with the host's architecture even with
# `import --platform`; what counts is what the image executes, so the check asks the kernel inside it
machine=$($DOCKER run --rm --entrypoint uname "$TAG" -m)
echo "built $TAG: label $($DOCKER image inspect "$TAG" --format '{{.Os}}/{{.Architecture}}'), runs as $machine," \
    "$($DOCKER image inspect "$TAG" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
[ "$machine" = aarch64 ] || { echo "expected aarch64 binaries"; exit 1; }

step "edge-runtime validate inside the image"
# no --platform on run: the daemon would take the host-labelled local image for a missing one and ask a registry
$DOCKER run --rm "$TAG" validate /app/configs/rice_line.yaml

step "edge-runtime bench --quick inside the image"
# the data sets the rice and vibration benchmarks read are mounted read-only where the image looks for them
data=$(cd .. && pwd)/shared/datasets
mount=()
[ -d "$data" ] && mount=(-v "$data:/shared/datasets:ro")
$DOCKER run --rm -v "$WORK:/out" "${mount[@]}" --user "$(id -u)" "$TAG" \
    bench --quick --json /out/bench-arm64.json \
    --only modbus --only opcua --only pipeline --only rice --only weld --only outbox
# (bench_mqtt, bench_service and bench_ui need a mosquitto broker beside the service; the image ships none)
echo "report: $WORK/bench-arm64.json and $WORK/bench-arm64.md"
