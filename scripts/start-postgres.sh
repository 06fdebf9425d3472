#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a free loopback port (initdb in a temporary folder,
# no system service) and prints the `export RNNSWEEP_TEST_POSTGRES=postgresql://…` line the
# tests read. Installs Debian's PostgreSQL first when it is missing.
#   eval "$(scripts/start-postgres.sh)"      # …then `scripts/stop-postgres.sh` (or leave it)
set -euo pipefail
bindir=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bindir=$d; done
if [ -z "$bindir" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bindir=$d; done
fi
[ -n "$bindir" ] || { echo "no PostgreSQL found or installed" >&2; exit 1; }
# initdb refuses to run as root: use the postgres account (or create one).
user=$(id -un)
if [ "$user" = root ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  user=postgres
fi
dir=$(mktemp -d /tmp/rnnsweep-pg.XXXXXX)
chown "$user" "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run() { if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi; }
run "$bindir/initdb" -D "$dir/data" -U rnnsweep --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
run "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >"$dir/pg_ctl.log" 2>&1
run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U rnnsweep rnnsweep_test >&2
echo "$dir" >/tmp/rnnsweep-pg.last
echo "export RNNSWEEP_TEST_POSTGRES=postgresql://rnnsweep@127.0.0.1:$port/rnnsweep_test"
echo "export RNNSWEEP_TEST_POSTGRES_DIR=$dir"
