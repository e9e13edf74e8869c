#!/usr/bin/env bash
# Start the services the platform tests use: PostgreSQL and Redis (Debian packages) and headless
# Chromium for the dashboard test. Installs what is missing (needs root and the Debian mirror).
# Source it: it exports MAGISTRAL_TEST_POSTGRES_URL, MAGISTRAL_TEST_REDIS_URL, MAGISTRAL_TEST_CHROMIUM.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v go >/dev/null || missing+=(golang-go)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
fi

PG_VERSION=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$PG_VERSION main" || pg_createcluster "$PG_VERSION" main >/dev/null
pg_ctlcluster "$PG_VERSION" main start 2>/dev/null || true  # already running is fine
for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='magistral'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE magistral LOGIN SUPERUSER PASSWORD 'magistral'\""
su postgres -c "psql -qtc \"SELECT 1 FROM pg_database WHERE datname='magistral'\"" | grep -q 1 ||
    su postgres -c "createdb -O magistral magistral"

redis-cli -p 6379 ping >/dev/null 2>&1 ||
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done

export MAGISTRAL_TEST_POSTGRES_URL=postgresql://magistral:magistral@127.0.0.1:5432/magistral
export MAGISTRAL_TEST_REDIS_URL=redis://127.0.0.1:6379/0
export MAGISTRAL_TEST_CHROMIUM=$(command -v chromium)
set +euo pipefail
