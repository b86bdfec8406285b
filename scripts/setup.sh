#!/usr/bin/env bash
# Installs what CloudDesk needs on Debian 12 (as root) and then runs it or its test suite.
#   scripts/setup.sh run    build tools + Node.js 20 + npm packages + build, then start the gateway
#   scripts/setup.sh test   the above plus every real part the tests start (OpenSSH, TigerVNC, openbox,
#                           xterm, xfce4, HAProxy, nginx, websockify, Chromium, PostgreSQL, Redis),
#                           starts PostgreSQL and Redis if they are down, then runs the whole suite
# Both skip the npm install and the build when they are up to date, so a second run starts at once.
set -euo pipefail
mode=${1:-}
case "$mode" in run | test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
run_pkgs=(ca-certificates git build-essential python3)
test_pkgs=(openssh-server openssh-client tigervnc-standalone-server tigervnc-tools openbox xterm xfce4 dbus-x11
  x11-utils x11-xserver-utils haproxy nginx websockify chromium procps iproute2 postgresql redis-server redis-sentinel openssl imagemagick xdotool mousepad feh
  patroni etcd-server python3-etcd
  xclip socat)
want=("${run_pkgs[@]}")
[ "$mode" = test ] && want+=("${test_pkgs[@]}")
missing=()
for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
fresh_postgres=no
if [ ${#missing[@]} -gt 0 ]; then
  [[ " ${missing[*]} " == *" postgresql "* ]] && fresh_postgres=yes
  apt-get update -qq >&2
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

# Installing and building take minutes (npm ci wipes node_modules and recompiles better-sqlite3), so
# each is skipped when nothing it depends on changed since it last succeeded: a fingerprint of its
# inputs and of the Node.js runtime (native modules are built for one ABI) is kept in a stamp inside
# node_modules. A fresh clone, or a wiped node_modules, has no stamp and gets the full job. All of
# this writes to stderr, so stdout carries only the gateway's JSON log lines.
node_id=$(node -p '`${process.version} ${process.platform}-${process.arch} abi${process.versions.modules}`')
fingerprint() { # fingerprint FILE... : the runtime and the files' contents, as one hash
  { echo "$node_id"; sha256sum "$@"; } | sha256sum | cut -d' ' -f1
}
install_packages() { # install_packages DIR : npm ci in DIR unless package*.json are what it installed
  local dir=$1 stamp=$1/node_modules/.clouddesk-installed want
  # patches/ (patch-package, applied by npm ci's postinstall) changes what gets installed too.
  want=$(cd "$dir" && fingerprint package.json package-lock.json $(ls patches/*.patch 2>/dev/null))
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $dir/node_modules matches its package-lock.json, not reinstalling" >&2
    return
  fi
  npm --prefix "$dir" ci --no-audit --no-fund >&2
  echo "$want" >"$stamp"
}
install_packages .
install_packages web

# The build's inputs: the server's and the web client's sources and configs (not their packages,
# whose changes come with their lockfiles). The stamp sits in node_modules, so a reinstall rebuilds.
build_stamp=node_modules/.clouddesk-built
mapfile -d '' build_inputs < <(find src web tsconfig.json tsconfig.build.json package.json package-lock.json \
  \( -path web/node_modules -o -path web/dist \) -prune -o -type f -print0 | LC_ALL=C sort -z)
want_build=$(fingerprint "${build_inputs[@]}")
if [ -f dist/src/main.js ] && [ -f web/dist/index.html ] && [ -f "$build_stamp" ] &&
  [ "$(cat "$build_stamp")" = "$want_build" ]; then
  echo "setup: dist/ and web/dist/ match the sources, not rebuilding" >&2
else
  npm run build >&2
  echo "$want_build" >"$build_stamp"
fi

if [ "$mode" = run ]; then
  # --silent: no npm banner on stdout, which carries the gateway's JSON log. The gateway prints one
  # line for people on stderr once it listens: the address to open and where the data lives.
  exec npm --silent start
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
