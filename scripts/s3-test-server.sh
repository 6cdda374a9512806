#!/usr/bin/env bash
# A local S3 for the S3 BlobStore tests: moto's server (PyPI `moto[server]`) in a venv at
# .venv-s3, listening on 127.0.0.1 only. Starting it also creates the test bucket, so the tests
# need no bucket-creation code of their own (each test uses a fresh key prefix in it).
#
#   scripts/s3-test-server.sh --install   create .venv-s3 and install moto (skips what is present)
#   scripts/s3-test-server.sh [PORT]      install if needed, start moto in the background, wait
#                                         until it answers, create the bucket, print the endpoint
#                                         URL (the only line on stdout); PORT defaults to a free one
#   scripts/s3-test-server.sh --stop      stop the server this script started
#
# Then: S3_TEST_ENDPOINT=<url> cargo test -p berth-storage
# Environment: S3_TEST_BUCKET (default berth-test), S3_TEST_PORT (instead of PORT).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-s3
MOTO_SPEC='moto[server]==5.2.5'
BUCKET=${S3_TEST_BUCKET:-berth-test}
PIDFILE=$VENV/moto.pid
LOG=$VENV/moto.log

install() {
  if [ -x "$VENV/bin/moto_server" ]; then
    return
  fi
  echo "installing $MOTO_SPEC into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_SPEC" >&2
}

stop() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    # Only a process that is still our moto server (not a recycled pid).
    if kill -0 "$pid" 2>/dev/null && grep -q moto_server "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  --install)
    install
    exit 0
    ;;
  --stop)
    stop
    exit 0
    ;;
esac

install
stop # a server left over from an earlier run of this script

PORT=${1:-${S3_TEST_PORT:-}}
if [ -z "$PORT" ]; then
  PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
URL="http://127.0.0.1:$PORT"

"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"

# Wait until it answers (about a second here), then create the bucket (moto accepts an
# unsigned CreateBucket).
"$VENV/bin/python" - "$URL" "$BUCKET" "$(cat "$PIDFILE")" <<'EOF' || { cat "$LOG" >&2; stop; exit 1; }
import os, sys, time, urllib.request, urllib.error
url, bucket, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 30
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("moto_server exited during startup")
    try:
        urllib.request.urlopen(url + "/", timeout=2).read()
        break
    except urllib.error.HTTPError:
        break  # it answered
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("moto_server did not answer within 30 s")
        time.sleep(0.1)
req = urllib.request.Request(f"{url}/{bucket}", method="PUT")
urllib.request.urlopen(req, timeout=10).read()
EOF

echo "$URL"
