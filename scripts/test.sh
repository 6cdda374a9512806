#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real clients it drives, checks formatting
# and lints, runs the unit and in-process tests, builds berth, then runs the black-box suites
# (the process under crashes/TLS/SIGTERM, the OCI conformance port, and real clients: skopeo,
# containerd, docker, podman, oras) against the real binary.
#
#   scripts/test.sh            everything
#   scripts/test.sh -k skopeo  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit and in-process)"
cargo test --workspace --locked

step "cargo build (the binary the black-box suites run)"
cargo build --locked -p berth
export BERTH_BIN="$PWD/target/debug/berth"

step "black-box suites"
# OCI_AUTOMATIC_CROSSMOUNT=1: berth mounts a known blob without ?from=, so the conformance
# port runs the specs for that behaviour.
OCI_AUTOMATIC_CROSSMOUNT=1 .venv/bin/pytest tests/e2e -p no:cacheprovider -ra "$@"
