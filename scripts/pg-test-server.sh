#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests, from the Debian
# `postgresql` package (scripts/install-deps.sh with WARREN_WITH_POSTGRES=1).
#
#   scripts/pg-test-server.sh start DIR   # prints the DSN on stdout
#   scripts/pg-test-server.sh stop DIR
#   scripts/pg-test-server.sh halt DIR    # stop the server (fast shutdown), keep its data
#   scripts/pg-test-server.sh resume DIR  # start a halted server again, on its port
#
# Run as root: DIR is created (must not exist or be empty) and handed to the
# `postgres` user; the server listens on 127.0.0.1 on a free port and on a
# unix socket in DIR, with trust auth for local connections only. The DSN
# printed uses the unix socket, which works from inside network namespaces.
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop|halt|resume DIR" >&2; exit 2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1
fi
as_pg() { runuser -u postgres -- "$@"; }
# pg_start PORT starts the cluster in $dir on PORT.
pg_start() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $1 -k $dir -c fsync=off -c max_connections=200" >/dev/null
}
case "$cmd" in
start)
  mkdir -p "$dir"
  chown postgres: "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  started=
  for _ in 1 2 3; do # a free port can be taken between picking and binding
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
      echo $((20000 + RANDOM % 20000)))
    if pg_start "$port"; then
      started=1; break
    fi
  done
  [[ -n "$started" ]] || { cat "$dir/server.log" >&2; exit 1; }
  echo "$port" >"$dir/port"
  as_pg "$bin/createdb" -h "$dir" -p "$port" -U postgres warren_test
  # The unix socket reaches the server from any network namespace.
  echo "postgres://postgres@/warren_test?host=$dir&port=$port&sslmode=disable"
  ;;
stop)
  # Only remove what start made (or an empty directory).
  if [[ "$dir" == / || ( -n "$(ls -A "$dir" 2>/dev/null)" && ! -e "$dir/initdb.log" ) ]]; then
    echo "$dir does not look like a pg-test-server directory; not removing it" >&2; exit 1
  fi
  if [[ -d "$dir/data" ]]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
halt)
  # A restart's first half, as an operator's `pg_ctl stop` (fast: open
  # sessions are ended, the data stays).
  [[ -e "$dir/port" ]] || { echo "$dir has no server started by this script" >&2; exit 1; }
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
resume)
  [[ -e "$dir/port" ]] || { echo "$dir has no server started by this script" >&2; exit 1; }
  pg_start "$(cat "$dir/port")" || { cat "$dir/server.log" >&2; exit 1; }
  ;;
*) echo "usage: $0 start|stop|halt|resume DIR" >&2; exit 2 ;;
esac
