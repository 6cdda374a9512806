#!/usr/bin/env bash
# The benchmark: berth beside Distribution 2.8 (Debian's docker-registry), nginx serving the
# same bytes, and the machine's own limits, in one run. See docs/benchmarks.md.
#
#   scripts/bench.sh --quick   CI mode: small sizes, one run, about 1.5 minutes once built
#   scripts/bench.sh           full mode: the issue's sizes, median of 5 runs (about 17 minutes)
#
# With a PostgreSQL on loopback (BERTH_BENCH_POSTGRES_URL, or TEST_POSTGRES_URL as
# scripts/test.sh exports it from scripts/pg-test-server.sh), the postgres scenario also runs:
# SQLite against PostgreSQL, 1 and 3 nodes (about 15 s more in quick mode); without one it is
# skipped, and says so.
#
# Other arguments go to berth-bench (berth-bench --help). The table goes to stdout, the
# JSON to target/bench/results.json. Every server listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BERTH_BENCH_POSTGRES_URL:-}" ] && [ -n "${TEST_POSTGRES_URL:-}" ]; then
  export BERTH_BENCH_POSTGRES_URL=$TEST_POSTGRES_URL
fi

step() { printf '\n=== %s\n' "$*" >&2; }

APT_PACKAGES=(docker-registry nginx-light openssl coreutils)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# psql creates and drops the postgres scenario's databases (any version's client will do).
if { [ -n "${BERTH_BENCH_POSTGRES_URL:-}" ] || [[ " $* " == *" --postgres-url"* ]]; } &&
  ! command -v psql >/dev/null; then
  missing+=(postgresql-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own services (nginx on :80, the registry on :5000) from
  # starting; the benchmark starts its own instances on free loopback ports.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f "$policy"
    trap - EXIT
  else
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

step "cargo build --release -p berth -p berth-bench"
cargo build --release --locked -p berth -p berth-bench

step "berth-bench $*"
echo "berth at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')" >&2
exec target/release/berth-bench \
  --berth target/release/berth \
  --distribution /usr/bin/docker-registry \
  --nginx /usr/sbin/nginx \
  "$@"
