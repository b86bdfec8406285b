#!/usr/bin/env bash
# Installs what CloudDesk needs on Debian 12 (as root) and then runs it or its test suite.
#   scripts/setup.sh run    build tools + Node.js 20 + npm packages + build, then start the gateway
#   scripts/setup.sh test   the above plus every real part the tests start (OpenSSH, TigerVNC, openbox,
#                           xterm, xfce4, HAProxy, nginx, websockify, Chromium, PostgreSQL, Redis),
#                           starts PostgreSQL and Redis if they are down, then runs the whole suite
set -euo pipefail
mode=${1:-}
case "$mode" in run | test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
run_pkgs=(ca-certificates git build-essential python3)
test_pkgs=(openssh-server openssh-client tigervnc-standalone-server tigervnc-tools openbox xterm xfce4 dbus-x11
  x11-utils haproxy nginx websockify chromium procps iproute2 postgresql redis-server imagemagick)
want=("${run_pkgs[@]}")
[ "$mode" = test ] && want+=("${test_pkgs[@]}")
missing=()
for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
fresh_postgres=no
if [ ${#missing[@]} -gt 0 ]; then
  [[ " ${missing[*]} " == *" postgresql "* ]] && fresh_postgres=yes
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The tests connect as postgres@127.0.0.1 without a password (as on the CI machines). A server this
# script just installed gets that one trust line for loopback — on a test machine only.
if [ "$fresh_postgres" = yes ]; then
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -1)
  sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main restart || true
fi

# Node.js 20 or newer. Debian 12 ships 18: then take Node 20 from the npm registry's `node` package.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  dpkg-query -W nodejs npm >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
  npm install -g node@20 >/dev/null
  hash -r
fi

npm ci --no-audit --no-fund
npm --prefix web ci --no-audit --no-fund
npm run build

if [ "$mode" = run ]; then
  exec npm start
fi

# Services the tests use, started if down (the machine's own; fault tests start private ones).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
exec npm test
