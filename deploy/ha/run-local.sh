#!/usr/bin/env bash
# Starts three Berth nodes on 127.0.0.1:5001, 5002 and 5003 that share one PostgreSQL database
# and one S3 bucket, to try the scale-out mode (docs/ha.md) on one machine. Not for production.
#
#   deploy/ha/run-local.sh POSTGRES_URL S3_ENDPOINT
#   deploy/ha/run-local.sh postgres://berth:secret@127.0.0.1:5432/berth http://127.0.0.1:9000
#
# Without arguments, BERTH_DATABASE__URL and BERTH_STORAGE__S3__ENDPOINT are used. The database
# and the bucket must exist. Also read from the environment:
#   BERTH_BIN                  the berth binary (default: berth on PATH, else target/release/berth)
#   BERTH_STORAGE__S3__BUCKET  the bucket (default: berth)
#   BERTH_STORAGE__S3__ACCESS_KEY_ID and BERTH_STORAGE__S3__SECRET_ACCESS_KEY, or the standard
#                              AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
#   BERTH_ADMIN_PASSWORD       the first admin's password, used when the database has no users;
#                              without it, node 1 generates one and this script prints it
# Any other BERTH_* variable reaches the nodes as usual.
#
# Each node gets its own data_dir and log file in a new temporary directory. Ctrl-C stops the
# nodes; the directory is kept.
set -euo pipefail

usage() {
  echo "usage: $0 POSTGRES_URL S3_ENDPOINT   (or set BERTH_DATABASE__URL and BERTH_STORAGE__S3__ENDPOINT)" >&2
  exit 2
}

die() {
  echo "run-local.sh: $*" >&2
  exit 1
}

case "${1:-}" in
  -h | --help) usage ;;
esac
if [ $# -eq 2 ]; then
  export BERTH_DATABASE__URL="$1"
  export BERTH_STORAGE__S3__ENDPOINT="$2"
elif [ $# -ne 0 ]; then
  usage
fi
[ -n "${BERTH_DATABASE__URL:-}" ] || usage
[ -n "${BERTH_STORAGE__S3__ENDPOINT:-}" ] || usage
case "$BERTH_DATABASE__URL" in
  postgres://* | postgresql://*) ;;
  *) die "the database URL must start with postgres:// or postgresql://" ;;
esac
case "$BERTH_STORAGE__S3__ENDPOINT" in
  http://*) export BERTH_STORAGE__S3__ALLOW_HTTP="${BERTH_STORAGE__S3__ALLOW_HTTP:-true}" ;;
  https://*) ;;
  *) die "the S3 endpoint must start with http:// or https://" ;;
esac
export BERTH_STORAGE__S3__BUCKET="${BERTH_STORAGE__S3__BUCKET:-berth}"

repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${BERTH_BIN:-}" ]; then
  bin=$BERTH_BIN
elif command -v berth >/dev/null 2>&1; then
  bin=$(command -v berth)
elif [ -x "$repo/target/release/berth" ]; then
  bin=$repo/target/release/berth
else
  die "no berth binary: set BERTH_BIN, put berth on PATH, or run cargo build --release"
fi
[ -x "$bin" ] || die "$bin is not executable"
command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the nodes"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-ha.XXXXXX")
# The file the three nodes share. The database URL, the endpoint, the bucket and the
# credentials come from the environment, so no value needs quoting here.
cat >"$work/berth.toml" <<'TOML'
[storage]
backend = "s3"

[storage.s3]
path_style = true

[jobs]
lease = "60s"
poll_interval = "5s"
TOML

pids=()

stop() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "nodes stopped; configuration, data and logs are in $work" >&2
}
trap stop EXIT
trap 'exit 130' INT TERM

start_node() {
  local n=$1
  mkdir -p "$work/node$n"
  BERTH_CONFIG="$work/berth.toml" \
    BERTH_SERVER__LISTEN="127.0.0.1:$((5000 + n))" \
    BERTH_DATA_DIR="$work/node$n" \
    "$bin" serve >"$work/node$n.log" 2>&1 &
  pids+=("$!")
}

wait_ready() {
  local n=$1
  local pid=${pids[$((n - 1))]} url="http://127.0.0.1:$((5000 + n))/readyz"
  local i
  for ((i = 0; i < 120; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "node $n exited; the end of $work/node$n.log:" >&2
      tail -n 20 "$work/node$n.log" >&2
      return 1
    fi
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "node $n did not answer $url with 200 within 60 s; see $work/node$n.log" >&2
  return 1
}

echo "logs and data in $work" >&2
# Node 1 alone first: it applies the migrations and creates the first admin.
start_node 1
wait_ready 1
grep -m1 'created the first registry admin' "$work/node1.log" >&2 || true
start_node 2
start_node 3
wait_ready 2
wait_ready 3

cat >&2 <<EOF
three nodes ready (Ctrl-C stops them):
  node 1  http://127.0.0.1:5001  pid ${pids[0]}  log $work/node1.log
  node 2  http://127.0.0.1:5002  pid ${pids[1]}  log $work/node2.log
  node 3  http://127.0.0.1:5003  pid ${pids[2]}  log $work/node3.log
Push through one node and pull through another, e.g.
  skopeo copy --dest-creds admin:PASSWORD --dest-tls-verify=false oci:./img:1 docker://127.0.0.1:5001/team/app:1
  skopeo copy --src-creds admin:PASSWORD --src-tls-verify=false docker://127.0.0.1:5003/team/app:1 oci:./copy:1
and kill -9 one pid to see the others carry on.
EOF
wait
