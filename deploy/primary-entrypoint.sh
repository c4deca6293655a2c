#!/bin/bash
# The demo primary (pitrdrill/primary): PostgreSQL 15 archiving every WAL segment into
# $BACKUPS/wal. On its first start (no $BACKUPS/drill.yaml yet) it also stages what a drill
# recovers from, like `make demo`:
#   3000 orders, then a pg_basebackup into $BACKUPS/base/nightly;
#   1000 more orders, a legitimate "month-end close" of 100 orders;
#   a runaway batch job: 10 transactions voiding 20 orders each; business goes on (50 orders);
#   every segment archived, then $BACKUPS/drill.yaml: recover to just before the first bad
#   commit, and check 4100 orders and none voided.
# Extra server settings may follow as arguments (-c name=value ...).
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
BACKUPS=${BACKUPS:-/backups}
SOCKET=${PGHOST:-/var/run/postgresql}
export PGHOST=$SOCKET PGUSER=postgres

say() { echo "pitrdrill-primary: $*" >&2; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  say "initdb $PGDATA"
  initdb -D "$PGDATA" -U postgres -A trust -E UTF8 --locale C.UTF-8 --no-sync >/dev/null
fi
mkdir -p "$BACKUPS/wal" "$BACKUPS/base"

# No TCP listener: nothing connects to the demo primary but this script and
# `docker-compose exec primary psql`; the drill reads only its backup and archive.
postgres -D "$PGDATA" -c listen_addresses='' -c unix_socket_directories="$SOCKET" \
  -c wal_level=replica -c archive_mode=on \
  -c archive_command="test ! -f $BACKUPS/wal/%f && cp %p $BACKUPS/wal/%f" \
  -c track_commit_timestamp=on -c autovacuum=off -c fsync=off -c timezone=UTC "$@" &
server=$!
trap 'kill -INT $server 2>/dev/null' TERM INT
for _ in $(seq 300); do pg_isready -q && break; sleep 0.1; done
pg_isready -q || { say "the server did not start"; exit 1; }

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

if [ ! -f "$BACKUPS/drill.yaml" ]; then
  say "staging the incident"
  sql -c "CREATE DATABASE shop" >/dev/null 2>&1 || true
  sql -d shop <<'SQL'
CREATE TABLE IF NOT EXISTS orders (
  id bigserial PRIMARY KEY,
  status text NOT NULL DEFAULT 'open',
  amount numeric(10, 2) NOT NULL,
  note text,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp());
TRUNCATE orders;
INSERT INTO orders (amount) SELECT (g % 500) + 0.99 FROM generate_series(1, 3000) g;
SQL
  rm -rf "$BACKUPS/base/nightly"
  pg_basebackup -D "$BACKUPS/base/nightly" --checkpoint=fast --no-sync
  sleep 1.1  # a backup label records whole seconds: keep the target clear of its last one
  sql -d shop -c "INSERT INTO orders (amount) SELECT (g % 300) + 0.49 FROM generate_series(1, 1000) g"
  sql -d shop -c "INSERT INTO orders (amount, note) SELECT 10, 'month-end close' FROM generate_series(1, 100)"
  sleep 0.1
  first_bad=""
  for _ in $(seq 10); do
    xid=$(sql -d shop <<'SQL'
BEGIN;
UPDATE orders SET status = 'void'
 WHERE id IN (SELECT id FROM orders WHERE status = 'open' ORDER BY id LIMIT 20);
SELECT txid_current();
COMMIT;
SQL
)
    first_bad=${first_bad:-$xid}
    sleep 0.03
  done
  sql -d shop -c "INSERT INTO orders (amount) SELECT 5 FROM generate_series(1, 50)"
  target=$(sql -d shop -c "SELECT to_char(pg_xact_commit_timestamp('$first_bad'::xid) AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
  # Archive everything so far, and wait until it is there.
  last=$(sql -c "SELECT pg_walfile_name(pg_switch_wal())")
  for _ in $(seq 600); do
    archived=$(sql -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ "${archived:0:24}" > "$last" || "${archived:0:24}" == "$last" ]] && break
    sleep 0.1
  done
  cat >"$BACKUPS/drill.yaml.tmp" <<YAML
# Written by the demo primary: recover to just before the first bad commit (xid $first_bad).
database: shop
source: {kind: filesystem, base_backups: $BACKUPS/base, wal_archive: $BACKUPS/wal}
target: {time: "$target", inclusive: false, action: pause}
checks:
  - {name: orders at target, sql: "select count(*) from orders", expect: 4100}
  - {name: month-end close kept, sql: "select count(*) from orders where note = 'month-end close'", expect: 100}
  - {name: no voided orders, sql: "select count(*) from orders where status = 'void'", expect: 0}
YAML
  mv "$BACKUPS/drill.yaml.tmp" "$BACKUPS/drill.yaml"
  say "ready: $BACKUPS/drill.yaml (target $target, first bad xid $first_bad)"
fi

# PID 1 waits for the server; a stop signal is passed on as a fast shutdown.
while kill -0 "$server" 2>/dev/null; do wait "$server" || true; done
wait "$server"
