#!/usr/bin/env bash
# Stops the cluster scripts/start-postgres.sh started and removes its folder.
set -euo pipefail
dir=${RNNSWEEP_TEST_POSTGRES_DIR:-$(cat /tmp/rnnsweep-pg.last 2>/dev/null || true)}
[ -n "$dir" ] && [ -d "$dir/data" ] || exit 0
bindir=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && bindir=$d; done
owner=$(stat -c %U "$dir/data")
if [ "$(id -un)" = "$owner" ]; then "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null; else runuser -u "$owner" -- "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null; fi
rm -rf "$dir"
