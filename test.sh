#!/usr/bin/env bash
# Runs the whole test suite. Needs PostgreSQL on 127.0.0.1:5432 (database `test`,
# trust auth; override with UBTC_TEST_DATABASE_URL), Redis on 127.0.0.1:6379 and
# Node.js with npm; installs
# the Node packages the tests use (independent verifiers, anvil, playwright-core),
# Debian's chromium, prometheus, prometheus-alertmanager and nginx-light on first run.
set -euo pipefail
cd "$(dirname "$0")"

# The dashboard's browser tests drive Debian's Chromium (crates/ubtc/tests/dashboard_e2e.rs).
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "==> apt-get install -y chromium"
  { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; } ||
    echo "could not install chromium (not root?): the dashboard browser test will fail" >&2
fi

# Monitoring and the load balancer (deploy/, crates/ubtc/tests/ops.rs): Debian's
# Prometheus (promtool), Alertmanager (amtool) and nginx.
missing=()
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
[ -x /usr/bin/amtool ] || missing+=(prometheus-alertmanager)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install -y ${missing[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }; } ||
    echo "could not install ${missing[*]} (not root?): the monitoring and load-balancer tests will fail (UBTC_SKIP_OPS_TESTS=1 skips them)" >&2
fi
if [ -x /usr/bin/promtool ]; then
  echo "==> promtool: deploy/prometheus"
  promtool check config deploy/prometheus/prometheus.yml >/dev/null
  promtool test rules deploy/prometheus/alerts.test.yml
fi
if [ -x /usr/bin/amtool ]; then
  amtool check-config deploy/alertmanager/alertmanager.yml >/dev/null
fi

for tool in tools/xverify tools/anvil tests/e2e web; do
  if [ ! -d "$tool/node_modules" ] || [ "$tool/package-lock.json" -nt "$tool/node_modules/.package-lock.json" ]; then
    echo "==> npm ci --prefix $tool"
    npm ci --prefix "$tool" --no-audit --no-fund --loglevel=error
  fi
done

if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
