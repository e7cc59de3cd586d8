#!/usr/bin/env bash
# Makes a PostgreSQL server available for the tests and prints the URL to use.
#
# Installs Debian's `postgresql` when no server binaries are present, starts the first
# cluster found (creating one when there is none) unless a server already answers on
# 127.0.0.1:${PGPORT:-5432}, and creates the role `caseflow` (password `caseflow`) and the
# database `caseflow_test` it owns. The store tests create one schema per test in it.
#
# Usage: eval "$(bash .ci/postgres.sh)"   # exports CASEFLOW_TEST_DATABASE_URL
# Runs as root (CI) or with sudo.
set -euo pipefail
PORT="${PGPORT:-5432}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
as_postgres() {
  if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
log() { echo "postgres.sh: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql >&2
fi

if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
  if command -v pg_lsclusters >/dev/null 2>&1; then
    cluster="$(pg_lsclusters --no-header | awk -v p="$PORT" '$3 == p {print $1" "$2; exit}')"
    if [ -z "$cluster" ]; then
      ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
      log "creating cluster $ver/main on port $PORT"
      $SUDO pg_createcluster "$ver" main -p "$PORT" >&2
      cluster="$ver main"
    fi
    log "starting cluster $cluster"
    # shellcheck disable=SC2086
    $SUDO pg_ctlcluster $cluster start >&2
  else
    ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
    bin="/usr/lib/postgresql/$ver/bin"
    data="/var/lib/postgresql/caseflow-ci"
    if [ ! -f "$data/PG_VERSION" ]; then
      $SUDO mkdir -p "$data" && $SUDO chown postgres:postgres "$data"
      as_postgres "$bin/initdb" -D "$data" -A scram-sha-256 --pwfile=<(echo postgres) >&2
    fi
    as_postgres "$bin/pg_ctl" -D "$data" -o "-p $PORT -k /tmp" -l "$data/log" -w start >&2
  fi
  for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.2
  done
  pg_isready -h 127.0.0.1 -p "$PORT" >&2
fi

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'caseflow'")" != "1" ]; then
  log "creating role caseflow"
  psql_admin -c "CREATE ROLE caseflow LOGIN PASSWORD 'caseflow'" >&2
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'caseflow_test'")" != "1" ]; then
  log "creating database caseflow_test"
  psql_admin -c "CREATE DATABASE caseflow_test OWNER caseflow" >&2
fi
echo "export CASEFLOW_TEST_DATABASE_URL='postgres://caseflow:caseflow@127.0.0.1:$PORT/caseflow_test'"
