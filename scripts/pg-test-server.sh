#!/usr/bin/env bash
# A throw-away PostgreSQL for the PostgreSQL MetaStore tests and the scale-out suite: Debian's
# postgresql package, a fresh cluster in .pg-test (gitignored), listening on 127.0.0.1 only,
# trust authentication for the local user `postgres`. fsync is off: this server holds test data
# only, and the tests kill Berth nodes, never the database.
#
#   scripts/pg-test-server.sh          start (a new cluster every time), wait until it accepts
#                                      connections, print the URL (the only line on stdout)
#   scripts/pg-test-server.sh --stop   stop the server this script started
#
# Then: TEST_POSTGRES_URL=<url> cargo test
# Each test creates its own schema (or database) in it, so runs never see each other's rows.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$PWD/.pg-test
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

# PostgreSQL refuses to run as root: run its programs as the `postgres` account the package
# creates, in a directory that account owns.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

stop() {
  if [ -f "$DIR/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  --stop)
    stop
    exit 0
    ;;
esac

if [ -z "$PGBIN" ]; then
  echo "PostgreSQL is not installed (scripts/install-test-deps.sh installs it)" >&2
  exit 1
fi

stop
rm -rf "$DIR"
mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$DIR"
fi
PORT=${PG_TEST_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
  >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
  >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }

echo "postgres://postgres@127.0.0.1:$PORT/postgres"
