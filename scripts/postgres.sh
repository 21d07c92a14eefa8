#!/usr/bin/env bash
# A PostgreSQL of the test suite's own: its own cluster ("ccpanel-test", port 54329, loopback
# only), so a second run of the database tests on PostgreSQL never touches a user's clusters.
#   scripts/postgres.sh start   install if missing, create the cluster and role once, start it;
#                               prints the DATABASE_URL, and "started" on stderr if it started it
#   scripts/postgres.sh stop    stop the cluster
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=ccpanel-test
PORT=${PANEL_TEST_PG_PORT:-54329}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_createcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null
fi
VER=$(ls /usr/lib/postgresql | sort -n | tail -1)

case "${1:-start}" in
  start)
    if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$CLUSTER"; then
      as_root pg_createcluster "$VER" "$CLUSTER" -p "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    fi
    if ! pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c {print $4}' | grep -qx online; then
      as_root pg_ctlcluster "$VER" "$CLUSTER" start >&2  # stdout carries only the URL ("Removed stale pid file." goes to stderr)
      echo started >&2
    fi
    mkdir -p var
    [ -s var/pg-test-password ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > var/pg-test-password)
    PW=$(cat var/pg-test-password)
    as_root su postgres -c "psql -q -p $PORT -v ON_ERROR_STOP=1" <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ccpanel_test') THEN
    CREATE ROLE ccpanel_test LOGIN CREATEDB PASSWORD '$PW';
  ELSE
    ALTER ROLE ccpanel_test LOGIN CREATEDB PASSWORD '$PW';
  END IF;
END \$\$;
SQL
    as_root su postgres -c "psql -q -p $PORT -tc \"SELECT 1 FROM pg_database WHERE datname = 'ccpanel_test'\"" | grep -q 1 \
      || as_root su postgres -c "createdb -p $PORT -O ccpanel_test ccpanel_test"
    echo "postgres://ccpanel_test:$PW@127.0.0.1:$PORT/ccpanel_test"
    ;;
  stop)
    as_root pg_ctlcluster "$VER" "$CLUSTER" stop || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
