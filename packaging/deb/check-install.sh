#!/bin/sh
# Install the built .deb on this (Debian, root) machine and check what it promises, then purge it:
# the venv under /opt/edge-runtime runs, the examples validate, the demo runs as the system user, and a purge
# leaves nothing of the package behind. Called by `make deb-check` (not in CI: it changes the machine).
set -eu
DEB=${1:-$(ls -t "$(dirname "$0")"/../../dist/edge-runtime_*.deb | head -1)}
[ "$(id -u)" = 0 ] || { echo "check-install: run as root (dpkg -i)" >&2; exit 2; }
dpkg -i "$DEB"
id edge-runtime
test -x /opt/edge-runtime/bin/edge-runtime
test -f /lib/systemd/system/edge-runtime.service
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/edge-runtime.service 2>&1 | grep -v "Failed to .*cgroup" || true
fi
for f in /etc/edge-runtime/examples/rice_line.yaml /etc/edge-runtime/examples/mixed_plant.yaml; do
    /opt/edge-runtime/bin/edge-runtime validate "$f"
done
work=$(mktemp -d)
chown edge-runtime "$work"
( cd "$work" && runuser -u edge-runtime -- /opt/edge-runtime/bin/edge-runtime demo --seconds 10 | tail -8 )
rm -rf "$work"
dpkg --purge edge-runtime
test ! -e /opt/edge-runtime && test ! -e /etc/edge-runtime && test ! -e /lib/systemd/system/edge-runtime.service
echo "check-install: ok ($DEB)"
