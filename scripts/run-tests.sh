#!/usr/bin/env bash
# Runs the whole suite. Uses PostgreSQL and Redis on this machine when they answer; under
# CI=true they are required. Installs Debian's Chromium for the browser test when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# Each run gets its own database and media folder, so two runs on one machine never collide
# (pytest-django creates test_<name> and drops it at the end).
RUN_ID=$$
export REPROLAB_TEST_RUN_ID=$RUN_ID
PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/reprolab_$RUN_ID}
REDIS_TEST_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

if $BIN/python scripts/probe.py postgres "$PG_URL"; then
  export DATABASE_URL=$PG_URL
  echo "== tests: PostgreSQL at ${PG_URL}"
elif [ "${CI:-}" = "true" ]; then
  echo "!! CI=true but PostgreSQL is not reachable at $PG_URL" >&2; exit 1
else
  unset DATABASE_URL
  echo "!! ==================================================================" >&2
  echo "!! PostgreSQL NOT reachable at $PG_URL: FALLING BACK TO SQLITE." >&2
  echo "!! ==================================================================" >&2
fi

if $BIN/python scripts/probe.py redis "$REDIS_TEST_URL"; then
  export REDIS_URL=$REDIS_TEST_URL
  echo "== tests: Redis at ${REDIS_TEST_URL}"
elif [ "${CI:-}" = "true" ]; then
  echo "!! CI=true but Redis is not reachable at $REDIS_TEST_URL" >&2; exit 1
else
  unset REDIS_URL
  echo "!! ==================================================================" >&2
  echo "!! Redis NOT reachable at $REDIS_TEST_URL: in-memory fallbacks, the" >&2
  echo "!! Celery-worker tests will be SKIPPED." >&2
  echo "!! ==================================================================" >&2
fi

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif [ "${CI:-}" = "true" ]; then
    echo "!! CI=true but /usr/bin/chromium is missing and cannot be installed" >&2; exit 1
  else
    echo "!! /usr/bin/chromium missing: the browser test will be SKIPPED (apt-get install chromium)" >&2
  fi
fi

mkdir -p var
export DJANGO_MEDIA_ROOT=$PWD/var/test-media-$RUN_ID
trap 'rm -rf "$DJANGO_MEDIA_ROOT"' EXIT
export DJANGO_SETTINGS_MODULE=config.settings.test
env -u DATABASE_URL $BIN/python manage.py makemigrations --check --dry-run >/dev/null || {
  echo "!! models changed without a migration: run manage.py makemigrations" >&2; exit 1; }
$BIN/pytest "$@"
