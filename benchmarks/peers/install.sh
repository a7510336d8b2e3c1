#!/usr/bin/env bash
# `make peers`: Node-RED 4.1.x and node-red-contrib-modbus 5.23.x from npm into benchmarks/peers/node_modules
# (ignored by git; never in CI). Needs Node 20.
set -euo pipefail
cd "$(dirname "$0")"
node --version | grep -qE '^v(20|22)\.' || { echo "Node 20 or 22 needed, found $(node --version)"; exit 1; }
if [ ! -x node_modules/.bin/node-red ]; then
    npm install --no-audit --no-fund --no-save --prefix . node-red@4.1 node-red-contrib-modbus@5.23
fi
node -e 'for (const p of ["node-red", "node-red-contrib-modbus"]) console.log(p, require(`./node_modules/${p}/package.json`).version)'
