#!/bin/sh
# Build dist/edge-runtime_<version>_<arch>.deb: the service in its own venv under /opt/edge-runtime, the systemd
# unit, a system user `edge-runtime`, /etc/edge-runtime/ (example deployments; site.yaml is the operator's).
# Called by `make deb` (not in CI). The venv is built for the build machine's Debian release and architecture
# (wheels with compiled code: numpy, onnxruntime, OpenCV): build on the target's release, or in its container.
set -eu
PYTHON=${PYTHON:-/usr/bin/python3}   # the Debian interpreter the package depends on, not a developer's pyenv
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
ARCH=$(dpkg --print-architecture)
PYVER=$($PYTHON -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
OUT="$ROOT/dist"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
trap 'exit 1' INT TERM
PREFIX=/opt/edge-runtime

mkdir -p "$OUT" "$STAGE/wheel"
"$PYTHON" -m venv "$STAGE/build-venv"
"$STAGE/build-venv/bin/pip" install -q --upgrade pip
"$STAGE/build-venv/bin/pip" wheel -q --no-deps -w "$STAGE/wheel" "$ROOT"

# The venv is made at its final path inside the staging root, then its absolute paths are rewritten.
"$PYTHON" -m venv "$STAGE/root$PREFIX"
"$STAGE/root$PREFIX/bin/pip" install -q "$STAGE"/wheel/edge_runtime-*.whl
"$STAGE/root$PREFIX/bin/pip" uninstall -q -y pip
find "$STAGE/root$PREFIX" -name __pycache__ -prune -exec rm -rf {} +
grep -rlI --exclude-dir=site-packages "$STAGE/root$PREFIX" "$STAGE/root$PREFIX" | while read -r f; do
    sed -i "s|$STAGE/root$PREFIX|$PREFIX|g" "$f"
done

install -D -m 644 "$ROOT/configs/systemd/edge-runtime.service" "$STAGE/root/lib/systemd/system/edge-runtime.service"
install -d -m 755 "$STAGE/root/etc/edge-runtime/examples" "$STAGE/root/etc/edge-runtime/devices"
install -m 644 "$ROOT"/configs/*.yaml "$STAGE/root/etc/edge-runtime/examples/"
install -m 644 "$ROOT"/configs/devices/*.yaml "$STAGE/root/etc/edge-runtime/devices/"

mkdir -p "$STAGE/root/DEBIAN"
( cd "$STAGE/root/etc" && find edge-runtime -type f | sed 's|^|/etc/|' ) > "$STAGE/root/DEBIAN/conffiles"
SIZE=$(du -sk "$STAGE/root" | cut -f1)
cat > "$STAGE/root/DEBIAN/control" <<CONTROL
Package: edge-runtime
Version: $VERSION
Architecture: $ARCH
Maintainer: edge-runtime maintainers <edge-runtime@localhost>
Depends: python$PYVER, adduser
Recommends: mosquitto, socat
Installed-Size: $SIZE
Section: misc
Priority: optional
Description: Edge AI inference runtime for factory lines
 Reads machines (Modbus, OPC UA, MQTT, cameras), runs ONNX models and delivers results to MQTT,
 Sparkplug B, OPC UA and Modbus, as a systemd service. Installs into /opt/edge-runtime; the deployment
 goes in /etc/edge-runtime/site.yaml (examples in /etc/edge-runtime/examples).
CONTROL
cat > "$STAGE/root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    adduser --system --group --no-create-home --home /var/lib/edge-runtime edge-runtime >/dev/null
    adduser edge-runtime dialout >/dev/null 2>&1 || true
    adduser edge-runtime video >/dev/null 2>&1 || true
    install -d -m 750 -o root -g edge-runtime /etc/edge-runtime/credentials
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # not enabled: the service needs /etc/edge-runtime/site.yaml first
    fi
fi
POSTINST
cat > "$STAGE/root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop edge-runtime.service >/dev/null 2>&1 || true
fi
# byte code written at run time is not in the package's file list
find /opt/edge-runtime -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
PRERM
cat > "$STAGE/root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # the operator's secrets stay if there are any; the system user stays (files it owned may remain elsewhere)
    rmdir /etc/edge-runtime/credentials /etc/edge-runtime 2>/dev/null || true
fi
POSTRM
chmod 755 "$STAGE/root/DEBIAN/postinst" "$STAGE/root/DEBIAN/prerm" "$STAGE/root/DEBIAN/postrm"
DEB="$OUT/edge-runtime_${VERSION}_${ARCH}.deb"
dpkg-deb -Zgzip --root-owner-group --build "$STAGE/root" "$DEB" >/dev/null  # gzip: xz takes minutes on a gateway-class CPU
echo "$DEB"
