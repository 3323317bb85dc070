#!/usr/bin/env bash
# Runs the whole test suite. Needs PostgreSQL on 127.0.0.1:5432 (database `test`,
# trust auth; override with UBTC_TEST_DATABASE_URL), Redis on 127.0.0.1:6379 and
# Node.js with npm; installs
# the Node packages the tests use (independent verifiers, anvil, playwright-core) and
# Debian's chromium on first run.
set -euo pipefail
cd "$(dirname "$0")"

# The dashboard's browser tests drive Debian's Chromium (crates/ubtc/tests/dashboard_e2e.rs).
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "==> apt-get install -y chromium"
  { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; } ||
    echo "could not install chromium (not root?): the dashboard browser test will fail" >&2
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
