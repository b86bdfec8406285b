#!/usr/bin/env bash
# Validates what can be validated of deploy/ without Docker, PM2 or a running systemd, and without
# any network access (configs are checked, nothing is started or bound):
#   haproxy -c, nginx -t, systemd-analyze verify, promtool check/test rules (+ every dashboard query),
#   JSON/YAML parsing, and PM2's ecosystem file loaded the way PM2 loads it (require).
# promtool: from PATH, or $PROMTOOL (Debian's `prometheus` package ships it: `apt-get download
# prometheus && dpkg-deb -x prometheus_*.deb /tmp/prom`, then PROMTOOL=/tmp/prom/usr/bin/promtool).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
step() { printf '%-58s' "$1"; shift; if out=$("$@" 2>&1); then echo ok; else echo FAILED; echo "$out" | sed 's/^/    /'; fail=1; fi; }
skip() { printf '%-58s%s\n' "$1" "skipped ($2)"; }

step 'haproxy -c haproxy.cfg' haproxy -c -q -f haproxy.cfg
sed 's/^#roles //' haproxy.cfg >"$tmp/haproxy-roles.cfg"
step 'haproxy -c haproxy.cfg, relays apart (#roles lines)' haproxy -c -q -f "$tmp/haproxy-roles.cfg"
# The compose file names its gateways by Docker DNS; check a copy with addresses so no lookup happens.
sed -e 's/gateway1:3000/127.0.0.1:3001/; s/gateway2:3000/127.0.0.1:3002/' compose/haproxy.cfg >"$tmp/compose-haproxy.cfg"
step 'haproxy -c compose/haproxy.cfg' haproxy -c -q -f "$tmp/compose-haproxy.cfg"
step 'haproxy -c postgres-ha/haproxy-postgres.cfg' haproxy -c -q -f postgres-ha/haproxy-postgres.cfg
step 'postgres-ha/patroni.yml parses (YAML)' python3 -c "
import yaml; d = yaml.safe_load(open('postgres-ha/patroni.yml'))
assert d['bootstrap']['dcs']['synchronous_mode'] is True and d['bootstrap']['dcs']['primary_start_timeout'] == 0"
step 'nginx -t nginx.conf' nginx -q -t -c "$PWD/nginx.conf" -e stderr
if command -v systemd-analyze >/dev/null; then
  step 'systemd-analyze verify clouddesk.service' sh -c '! systemd-analyze verify clouddesk.service 2>&1 | grep .'
else
  skip 'systemd-analyze verify clouddesk.service' 'no systemd-analyze'
fi
step 'PM2 ecosystem.config.js loads (require)' node -e "
  const c = require('./ecosystem.config.js'); const a = c.apps[0];
  if (a.exec_mode !== 'cluster' || !(a.kill_timeout > Number(process.env.SHUTDOWN_TIMEOUT_MS || 10000))) process.exit(1);"
step 'grafana-dashboard.json parses' node -e "JSON.parse(require('fs').readFileSync('grafana-dashboard.json', 'utf8'))"
step 'docker-compose.yml parses (YAML)' python3 -c "
import yaml; d = yaml.safe_load(open('docker-compose.yml'))
assert {'postgres', 'redis', 'gateway1', 'gateway2', 'haproxy'} <= set(d['services'])"

promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -n "$promtool" ]; then
  step 'promtool check config prometheus.yml (syntax)' "$promtool" check config --syntax-only prometheus.yml
  step 'promtool check rules alerts.yml' "$promtool" check rules alerts.yml
  step 'promtool test rules alerts.test.yml' "$promtool" test rules alerts.test.yml
  # Every dashboard query, with its template variables filled in, as a recording rule promtool parses.
  node -e "
    const d = JSON.parse(require('fs').readFileSync('grafana-dashboard.json', 'utf8'));
    const exprs = d.panels.flatMap((p) => (p.targets || []).map((t) => t.expr));
    const rules = exprs.map((e, i) => '      - record: dashboard:query' + i + '\n        expr: ' + JSON.stringify(e.replace(/\\\$\w+/g, '.*')));
    process.stdout.write('groups:\n  - name: dashboard\n    rules:\n' + rules.join('\n') + '\n');
  " >"$tmp/dashboard-rules.yml"
  step 'promtool parses every dashboard query' "$promtool" check rules "$tmp/dashboard-rules.yml"
else
  skip 'promtool check/test rules' 'no promtool; set PROMTOOL'
fi

skip 'docker build / docker compose up' 'needs a Docker engine'
exit $fail
