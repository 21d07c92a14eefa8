#!/usr/bin/env bash
# Set-up shared by `make run`, `make test` and `make bench`:
#   system packages (docker.io, redis-server, ...) when missing, dockerd and Redis when they do
#   not answer, the virtualenv from pinned requirements, migrations, the sandbox image; then
#   serve the panel (run), run the whole test suite (test) or the benchmarks (bench).
# Whatever this script started, it stops when it exits (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=$ROOT/var
mkdir -p "$VAR/log"
chmod 700 "$VAR"  # keys, the database and Redis's socket are the panel's alone
MODE=${1:-run}
shift || true
STARTED=()

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
die() { printf '\033[1;31mERROR:\033[0m %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cleanup() {
  local pid
  for pid in "${STARTED[@]:-}"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

APT_UPDATED=
apt_install() {
  if [ -z "$APT_UPDATED" ]; then say "apt-get update"; as_root apt-get update -q >/dev/null; APT_UPDATED=1; fi
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# --- Python and the virtualenv ----------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  ensure_pkgs python3 python3-venv
  PYTHON=python3
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed (Debian 12, Ubuntu 24.04); set PYTHON=/path/to/python3.11"
fi
REQ_SUM=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$REQ_SUM" ]; then
  say "creating .venv from requirements.txt"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  echo "$REQ_SUM" > .venv/.requirements.sha
fi
PY=.venv/bin/python

# --- Docker -----------------------------------------------------------------------------------
docker_answers() { $PY -c 'import docker,sys; docker.from_env(timeout=5).ping()' >/dev/null 2>&1; }
if docker_answers; then
  say "Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}"
elif [ -n "${DOCKER_HOST:-}" ]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer."
elif [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
  die "Docker runs but $(id -un) may not use /var/run/docker.sock: run as root, or join the docker group (sudo usermod -aG docker $(id -un), then log in again)."
else
  command -v dockerd >/dev/null || ensure_pkgs docker.io
  say "starting dockerd (log: var/log/dockerd.log)"
  # Not through as_root: a backgrounded function is a subshell, and $! would name it, not dockerd.
  if [ "$(id -u)" = 0 ]; then
    setsid dockerd >"$VAR/log/dockerd.log" 2>&1 &
  else
    sudo setsid dockerd >"$VAR/log/dockerd.log" 2>&1 &
  fi
  STARTED+=($!)
  for _ in $(seq 1 60); do docker_answers && break; sleep 1; done
  docker_answers || die "dockerd did not start; see var/log/dockerd.log"
fi

# --- Redis ------------------------------------------------------------------------------------
# The panel's own Redis listens on a unix socket in var/ (0700), not on a port: no other local
# user can read the queue or put tasks in it. REDIS_URL names another server instead.
OWN_REDIS_URL="unix://$VAR/redis.sock?db=0"
export REDIS_URL=${REDIS_URL:-$OWN_REDIS_URL}
redis_answers() { $PY -c 'import os,redis; redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2).ping()' >/dev/null 2>&1; }
if redis_answers; then
  say "Redis answers at $REDIS_URL"
elif [ "$REDIS_URL" != "$OWN_REDIS_URL" ]; then
  die "REDIS_URL=$REDIS_URL does not answer."
else
  command -v redis-server >/dev/null || ensure_pkgs redis-server
  say "starting the panel's redis-server on var/redis.sock (log: var/log/redis.log)"
  rm -f "$VAR/redis.sock"
  setsid redis-server --port 0 --unixsocket "$VAR/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$VAR" --logfile "$VAR/log/redis.log" &
  STARTED+=($!)
  for _ in $(seq 1 30); do redis_answers && break; sleep 0.5; done
  redis_answers || die "redis-server did not start; see var/log/redis.log"
fi

# --- tools the image builders need --------------------------------------------------------------
ensure_pkgs debootstrap busybox-static

case "$MODE" in
  run)
    $PY manage.py migrate --noinput -v 0
    $PY manage.py build_images
    $PY manage.py ensure_admin
    mkdir -p "${WORKSPACE_ROOT:-$HOME/ClaudeCodeWorkspace}"
    say "serving the panel on http://127.0.0.1:${PANEL_PORT:-8000}/ (Ctrl-C stops everything)"
    .venv/bin/honcho -f Procfile start &
    honcho_pid=$!
    STARTED=("$honcho_pid" "${STARTED[@]:-}")
    wait "$honcho_pid"
    ;;
  test)
    ensure_pkgs chromium
    export DJANGO_SETTINGS_MODULE=controlpanel.settings.test
    say "lint: ruff, mypy, manage.py check, makemigrations --check"
    .venv/bin/ruff check .
    .venv/bin/mypy controlpanel sandboxes audit teams
    $PY manage.py check
    $PY manage.py makemigrations --check --dry-run >/dev/null || die "models changed without a migration"
    $PY manage.py build_images --test
    DJANGO_SETTINGS_MODULE=controlpanel.settings.base $PY manage.py build_images
    say "running the test suite (SQLite)"
    .venv/bin/pytest "$@"
    if [ $# -eq 0 ]; then
      # The same suite again on PostgreSQL: a cluster of the tests' own, started here.
      pg_log=$(mktemp)
      pg_url=$(bash scripts/postgres.sh start 2>"$pg_log") || { cat "$pg_log" >&2; die "PostgreSQL did not start"; }
      if grep -q started "$pg_log"; then trap 'bash scripts/postgres.sh stop; cleanup' EXIT; fi
      rm -f "$pg_log"
      say "running the test suite again (PostgreSQL)"
      PANEL_TEST_DATABASE_URL=$pg_url .venv/bin/pytest
    fi
    ;;
  bench)
    export DJANGO_SETTINGS_MODULE=controlpanel.settings.test
    $PY manage.py build_images --test
    for b in bench/*.py; do say "$b"; $PY "$b"; done
    ;;
  *) die "unknown mode $MODE (run, test or bench)" ;;
esac
