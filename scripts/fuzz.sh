#!/usr/bin/env bash
# Coverage-guided fuzzing of berth-core's parsers and validators, as CI runs it: the fuzz/
# crate (cargo-fuzz layout: libFuzzer with AddressSanitizer, debug assertions and overflow
# checks) has one target per parser: manifest (manifests and indexes), reference (digests,
# references, names, tags, hashing), range (Content-Range and Range), credentials (Basic and
# Bearer headers, JWT headers, token scopes), config (the TOML file and validate()) and
# admin_json (the admin API's bodies). Each runs for a bounded time from a scratch copy of its
# committed seeds in fuzz/corpus/<target>/, so a run never grows the committed corpus. Any
# crash, panic, failed invariant, timeout or out-of-memory fails the script; the input is in
# fuzz/artifacts/<target>/ (reproduce with `cd fuzz && cargo +nightly fuzz run <target> <file>`)
# and, minimized (`cargo +nightly fuzz tmin <target> <file>`), goes into
# fuzz/corpus/<target>/regression-<what> so every later run replays it.
#
#   scripts/fuzz.sh                    every target, FUZZ_SECONDS each
#   scripts/fuzz.sh manifest range     only these targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh   a longer local hunt
#
# Time budget: at most 6 minutes in all on CI's 2-core machine, cargo-fuzz install and the
# sanitizer build included. Measured on this machine (2 cores, other engineers' builds running
# beside it, load 2-5) from a cold cache, twice: `cargo uninstall cargo-fuzz; rm -rf fuzz/target;
# time scripts/fuzz.sh` (crates.io downloads already cached, as on CI's machine after any
# build): install 1m40s / 0m48s, build 2m34s / 2m00s, six 20 s runs two at a time 1m06s /
# 1m08s: 5m22s / 4m03s in all. Hence FUZZ_SECONDS=20. With cargo-fuzz installed (it stays in
# ~/.cargo/bin) and a cold fuzz/target the script takes about 3m20s; warm, about 1m15s.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
# Seconds each target runs (libFuzzer's -max_total_time).
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
# Targets run at once: one per core.
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}

step() { printf '\n=== %s\n' "$*"; }
since() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

started=$SECONDS
summary=()

step "cargo-fuzz $CARGO_FUZZ_VERSION"
t0=$SECONDS
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the nightly toolchain is missing (rustup toolchain list): cargo fuzz needs it" >&2
  exit 1
fi
# `cargo install` puts it in $CARGO_HOME/bin (~/.cargo/bin), which outlives the checkout.
if [ "$(cargo fuzz --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "already installed: $(command -v cargo-fuzz)"
else
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
summary+=("install: $(since $((SECONDS - t0)))")
echo "install took $(since $((SECONDS - t0)))"

cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

step "cargo +nightly fuzz build (AddressSanitizer, debug assertions): ${targets[*]}"
t0=$SECONDS
cargo +nightly fuzz build
summary+=("build: $(since $((SECONDS - t0)))")
echo "build took $(since $((SECONDS - t0)))"

step "fuzzing each target for ${FUZZ_SECONDS}s from its seeds, $FUZZ_JOBS at a time"
t_runs=$SECONDS
scratch=$(mktemp -d "${TMPDIR:-/tmp}/berth-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

run_target() {
  local t=$1 t0=$SECONDS rc=0
  mkdir -p "$scratch/corpus/$t"
  cp -R "corpus/$t/." "$scratch/corpus/$t/"
  # -timeout: an input that takes 10 s is a hang. -max_len: room for a 16 KiB Authorization
  # header and the README's configuration; the seeds set the start. Exits 0 when time is up.
  cargo +nightly fuzz run "$t" "$scratch/corpus/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -max_len=20000 -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >"$scratch/$t.rc"
  local runs
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$' || true)
  if [ "$rc" -eq 0 ]; then
    echo "$t: ok in $(since $((SECONDS - t0))), ${runs:-?} inputs, corpus $(ls "$scratch/corpus/$t" | wc -l) files"
  else
    echo "$t: FAILED (exit $rc) after $(since $((SECONDS - t0)))"
  fi
}

running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$FUZZ_JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${targets[@]}"; do
  read -r rc secs <"$scratch/$t.rc"
  summary+=("run $t: $(since "$secs")$([ "$rc" -eq 0 ] || echo ", FAILED")")
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    step "$t failed"
    # The panic (or sanitizer report), then where libFuzzer put the input.
    grep -v -E '^\s+(#[0-9]+ 0x|[0-9]+: |at )' "$scratch/$t.log" |
      grep -m1 -A30 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' || true
    echo "..."
    grep -E 'Test unit written|^Base64|^Error:' "$scratch/$t.log" || true
  fi
done
summary+=("runs: $(since $((SECONDS - t_runs)))" "total: $(since $((SECONDS - started)))")

step "durations"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no failure"
