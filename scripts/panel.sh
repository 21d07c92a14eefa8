#!/usr/bin/env bash
# Set-up shared by the make targets, then one of:
#   run    serve the panel (scripts/supervise.py runs the Procfile's processes, restarting any that dies)
#   test   lint, then the whole test suite on SQLite, then again on a PostgreSQL of its own
#   check  lint, then the tests that need no Docker, Redis or browser (the fast tier)
#   lint   ruff (lint and format), mypy, manage.py check, makemigrations --check
#   bench  the benchmarks in bench/ (or the one named, with its options)
#   agent  a joined host's agent (manage.py host agent: Procfile.host, with var/host.env's settings)
# It installs what is missing (system packages, the virtualenv from pinned requirements) and
# starts dockerd and Redis when they do not answer. dockerd is started detached and left running:
# the sandboxes must outlive the panel. Whatever else this script started, it stops on exit.
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
warn() { printf '\033[1;33mWARNING:\033[0m %s\n' "$*" >&2; }
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
apt_update_once() {
  if [ -z "$APT_UPDATED" ]; then say "apt-get update"; as_root apt-get update -q >/dev/null; APT_UPDATED=1; fi
}
apt_install() {
  apt_update_once
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
# make run installs what the panel runs on; the other modes also install the tools (requirements-dev).
case "$MODE" in run | agent) REQS=requirements.txt ;; *) REQS=requirements-dev.txt ;; esac
REQ_SUM=$(cat requirements.txt "$REQS" requirements-proxy.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || ! grep -qx "$REQ_SUM" .venv/.installed 2>/dev/null; then
  say "installing $REQS into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r "$REQS"
  # The credential proxy's mitmproxy pins older versions of what the panel runs on: its own
  # packages, each pinned, without dependency resolution (see requirements-proxy.txt).
  .venv/bin/pip install -q --no-deps -r requirements-proxy.txt
  echo "$REQ_SUM" >> .venv/.installed
fi
PY=.venv/bin/python

lint() {
  say "lint: ruff (lint and format), mypy, manage.py check, makemigrations --check"
  .venv/bin/ruff check .
  .venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --diff . | head -40; die "ruff format would change files: run .venv/bin/ruff format ."; }
  # tests/support/fakes.py too: it holds the fast tests' engine to the Engine protocol (its last lines).
  .venv/bin/mypy controlpanel sandboxes audit teams backups incidents storage hosts api webhooks client/ccpanel_client tests/support/fakes.py
  DJANGO_SETTINGS_MODULE=controlpanel.settings.test $PY manage.py check
  DJANGO_SETTINGS_MODULE=controlpanel.settings.test $PY manage.py makemigrations --check --dry-run >/dev/null \
    || die "models changed without a migration"
}

# The fast tier needs none of the services: no Docker, no Redis, no browser.
case "$MODE" in
  lint) lint; exit 0 ;;
  check)
    # The lint runs beside the tests (its output shown when it ends): together they take the
    # longer of the two, not the sum.
    lint_log=$(mktemp)
    (lint) > "$lint_log" 2>&1 &
    lint_pid=$!
    say "the fast tests (no Docker, Redis or browser), beside the lint"
    # Four workers (pytest-xdist; many tests wait on processes and sockets, so more than the
    # cores), each on a test slot of its own (controlpanel/settings/test.py); bytecode kept
    # (pytest's rewritten test modules too) even where the shell says not to: the second run
    # collects in a third of the time.
    tests_rc=0
    env -u PYTHONDONTWRITEBYTECODE DJANGO_SETTINGS_MODULE=controlpanel.settings.test .venv/bin/pytest \
      -m "not docker and not browser and not slow and not postgres" -n 4 -q "$@" || tests_rc=$?
    lint_rc=0
    wait "$lint_pid" || lint_rc=$?
    cat "$lint_log"
    rm -f "$lint_log"
    [ "$lint_rc" -eq 0 ] || die "the lint failed (above)"
    exit "$tests_rc"
    ;;
esac

# --- Docker: used if it answers, otherwise started and left running ---------------------------
docker_answers() { $PY -c 'import docker,sys; docker.from_env(timeout=5).ping()' >/dev/null 2>&1; }
if docker_answers; then
  say "Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}"
elif [ -n "${DOCKER_HOST:-}" ]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer."
elif [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
  die "Docker runs but $(id -un) may not use /var/run/docker.sock: run as root, or join the docker group (sudo usermod -aG docker $(id -un), then log in again)."
else
  command -v dockerd >/dev/null || ensure_pkgs docker.io
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    say "starting the docker service (systemd)"
    as_root systemctl start docker
  else
    # No systemd: dockerd runs detached from this shell and keeps running after the panel stops,
    # so the sandboxes do too. Not through as_root: a backgrounded function is a subshell.
    say "starting dockerd in the background (log: var/log/dockerd.log); it keeps running after the panel stops"
    if [ "$(id -u)" = 0 ]; then
      setsid nohup dockerd >"$VAR/log/dockerd.log" 2>&1 </dev/null &
    else
      sudo setsid nohup dockerd >"$VAR/log/dockerd.log" 2>&1 </dev/null &
    fi
  fi
  for _ in $(seq 1 60); do docker_answers && break; sleep 1; done
  docker_answers || die "dockerd did not start; see var/log/dockerd.log"
fi

# The allowlist mode's grants are kept in an ipset (sandboxes.network).
command -v ipset >/dev/null || ensure_pkgs ipset

# --- Redis ------------------------------------------------------------------------------------
# The panel's own Redis listens on a unix socket in var/ (0700), not on a port: no other local
# user can read the queue or put tasks in it. REDIS_URL names another server instead.
OWN_REDIS_URL="unix://$VAR/redis.sock?db=0"
export REDIS_URL=${REDIS_URL:-$OWN_REDIS_URL}
redis_answers() { $PY -c 'import os,redis; redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2).ping()' >/dev/null 2>&1; }
command -v redis-server >/dev/null || ensure_pkgs redis-server
if [ "$REDIS_URL" != "$OWN_REDIS_URL" ] && ! redis_answers; then
  die "REDIS_URL=$REDIS_URL does not answer."
fi
start_own_redis() {  # for the tests and benchmarks; `make run` has the supervisor run it
  if [ "$REDIS_URL" = "$OWN_REDIS_URL" ] && ! redis_answers; then
    say "starting the panel's redis-server on var/redis.sock (log: var/log/redis.log)"
    setsid redis-server --port 0 --unixsocket "$VAR/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
      --dir "$VAR" --logfile "$VAR/log/redis.log" &
    STARTED+=($!)
    for _ in $(seq 1 30); do redis_answers && break; sleep 0.5; done
    redis_answers || die "redis-server did not start; see var/log/redis.log"
  fi
}

# --- gVisor (optional) ------------------------------------------------------------------------
# Wanted with PANEL_GVISOR=1, in every CI test run, and wherever Docker already has runsc (an
# earlier PANEL_GVISOR=1); PANEL_GVISOR=0 leaves runsc and Docker's runtimes as they are.
# The runsc is Debian 13's (trixie): Debian 12's (0.0~20221219) has only the ptrace platform,
# with which a walk of the workspace took 37x and system calls 105x runc's time; trixie's, on
# systrap, 15x and 30-90x on the same busy machine, system calls about 3x when a CPU was free
# (bench/isolation.py and the README say more). Its package is one static binary with no
# dependencies, so that package alone is fetched, through an apt
# configuration of its own that names trixie only (the system's sources and pins never see
# trixie: nothing else can come from it), checked against the sha256 below and installed with
# dpkg. Where it cannot be had the panel goes on as before (a runsc Docker has stays; otherwise
# runc only). Docker runs it as the runtime "runsc", its network in the container's own
# namespace so that the host's egress rules hold for it too; dockerd reloads its runtimes on
# SIGHUP: no container is stopped.
RUNSC_VERSION='0.0~20240729.0-4+b7'
RUNSC_SHA256=3c25a5130dfac2f71237d5baad56ac86a255de87a0400f11b36a555156dc325a
# Docker's entry for it, written as runsc_runtime prints one (json.dumps of path and runtimeArgs).
RUNSC_RUNTIME='{"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host", "--platform=systrap"]}'
runsc_runtime() {  # Docker's runsc entry now; empty where it has none
  $PY - 2>/dev/null <<'PYEOF'
import docker, json
entry = (docker.from_env(timeout=10).info().get("Runtimes") or {}).get("runsc")
print(json.dumps({"path": entry.get("path"), "runtimeArgs": entry.get("runtimeArgs") or []}) if entry else "")
PYEOF
}
runsc_containers() {  # how many containers run under runsc now
  $PY -c 'import docker; c=docker.from_env(timeout=10); print(sum(x.attrs["HostConfig"].get("Runtime") == "runsc" for x in c.containers.list()))' 2>/dev/null || echo 0
}
runsc_current() { have_pkg runsc && dpkg --compare-versions "$(dpkg-query -W -f='${Version}' runsc)" ge "$RUNSC_VERSION"; }
install_trixie_runsc() {  # fails, having said why, where trixie's runsc cannot be had
  # (Called as a condition, so `set -e` does not hold inside: every step checks for itself.)
  local tmp mirror deb apt
  apt_update_once || true  # for the mirror's label below; lists from before serve too
  # The mirror this machine's Debian packages come from (its own proxy or copy, if it has one).
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' 'Identifier: Packages' 2>/dev/null | head -n1)
  [ -n "$mirror" ] || { warn "gVisor: apt has no Debian mirror here to fetch trixie's runsc from"; return 1; }
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || { warn "gVisor: no Debian archive keyring (debian-archive-keyring)"; return 1; }
  tmp=$(as_root mktemp -d /tmp/ccpanel-runsc.XXXXXX) || { warn "gVisor: no temporary folder for trixie's runsc"; return 1; }
  as_root chmod 755 "$tmp"
  as_root mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/none" "$tmp/deb"
  ! id -u _apt >/dev/null 2>&1 || as_root chown _apt "$tmp/deb"  # apt fetches as _apt
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
    | as_root tee "$tmp/trixie.sources" >/dev/null
  apt=(apt-get -q -o "Dir::Etc::SourceList=$tmp/trixie.sources" -o "Dir::Etc::SourceParts=$tmp/none"
    -o "Dir::Etc::Preferences=$tmp/none/preferences" -o "Dir::Etc::PreferencesParts=$tmp/none"
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache")
  say "gVisor: fetching runsc $RUNSC_VERSION from Debian 13 (trixie), that package alone"
  if ! as_root "${apt[@]}" update >"$VAR/log/runsc-fetch.log" 2>&1 \
    || ! (cd "$tmp/deb" && as_root "${apt[@]}" download "runsc=$RUNSC_VERSION") >>"$VAR/log/runsc-fetch.log" 2>&1; then
    as_root rm -rf "$tmp"
    warn "gVisor: trixie's runsc $RUNSC_VERSION could not be fetched (see var/log/runsc-fetch.log)"
    return 1
  fi
  deb=$(find "$tmp/deb" -name 'runsc_*.deb' | head -n1)
  if [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$RUNSC_SHA256" ]; then
    as_root rm -rf "$tmp"
    warn "gVisor: $(basename "$deb") does not have the sha256 this script expects; not installed"
    return 1
  fi
  say "gVisor: installing $(basename "$deb") (sha256 checked)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >>"$VAR/log/runsc-fetch.log" 2>&1; then
    as_root rm -rf "$tmp"
    warn "gVisor: dpkg could not install $(basename "$deb") (see var/log/runsc-fetch.log)"
    return 1
  fi
  as_root rm -rf "$tmp"
}
register_runsc() {
  say "gVisor: registering runsc (systrap) with Docker in /etc/docker/daemon.json"
  as_root mkdir -p /etc/docker
  as_root env RUNSC_RUNTIME="$RUNSC_RUNTIME" $PY - <<'PYEOF'
import json, os
path = "/etc/docker/daemon.json"
config = {}
if os.path.exists(path):
    with open(path) as fh:
        text = fh.read().strip()
    config = json.loads(text) if text else {}
config.setdefault("runtimes", {})["runsc"] = json.loads(os.environ["RUNSC_RUNTIME"])
tmp = path + ".ccpanel-tmp"
with open(tmp, "w") as fh:
    json.dump(config, fh, indent=2)
    fh.write("\n")
os.replace(tmp, path)
PYEOF
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then as_root systemctl reload docker; else as_root kill -HUP "$(pgrep -xo dockerd)"; fi
  for _ in $(seq 1 20); do [ "$(runsc_runtime)" = "$RUNSC_RUNTIME" ] && return 0; sleep 0.5; done
  die "Docker did not take the runsc runtime; see /etc/docker/daemon.json"
}
ensure_gvisor() {
  local running
  if ! runsc_current; then
    running=$(runsc_containers)
    if [ "$running" != 0 ]; then
      # The new runsc would have to stop and remove what the old one started: it is swapped in
      # only when nothing runs under it.
      warn "gVisor: $running containers run under the old runsc ($(runsc --version 2>/dev/null | head -n1)); stop them and run this again to replace it"
      return 0
    fi
    if ! install_trixie_runsc; then
      if [ -n "$(runsc_runtime)" ]; then
        warn "gVisor: Docker keeps the runsc it has ($(runsc --version 2>/dev/null | head -n1)), slow; see the README"
      else
        warn "gVisor: not set up; sandboxes run under runc only (the \"gVisor\" choice says so)"
      fi
      return 0
    fi
  fi
  [ "$(runsc_runtime)" = "$RUNSC_RUNTIME" ] || register_runsc
}
case "${PANEL_GVISOR:-}" in
  0) ;;
  1) ensure_gvisor ;;
  *) if { [ "$MODE" = test ] && [ "${CI:-}" = true ]; } || [ -n "$(runsc_runtime)" ]; then ensure_gvisor; fi ;;
esac

# --- tools the image builders need, and the storage pool's -----------------------------------------
ensure_pkgs debootstrap busybox-static btrfs-progs

case "$MODE" in
  run)
    $PY manage.py migrate --noinput -v 0
    $PY manage.py build_images
    $PY manage.py ensure_admin
    say "storage pool (STORAGE_POOL=${STORAGE_POOL:-loop})"
    $PY manage.py pool ensure
    skip=()
    if [ "$REDIS_URL" != "$OWN_REDIS_URL" ]; then
      skip=(--skip redis)
    elif redis_answers; then
      # Another Redis serves var/redis.sock (a panel or a `make test` from this folder): a second
      # one would take the socket over and leave the first panel without its queue.
      die "var/redis.sock already answers: the panel (or make test) is running from this folder; stop it first."
    fi
    say "serving the panel on http://127.0.0.1:${PANEL_PORT:-8000}/ (Ctrl-C stops the panel; sandboxes keep running)"
    trap - INT TERM
    .venv/bin/python scripts/supervise.py "${skip[@]}"
    ;;
  test)
    ensure_pkgs chromium
    lint
    start_own_redis
    export DJANGO_SETTINGS_MODULE=controlpanel.settings.test
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
  agent)
    say "the host agent (var/host.env; Procfile.host)"
    trap - INT TERM
    exec $PY manage.py host agent
    ;;
  bench)
    ensure_pkgs wrk
    start_own_redis
    export DJANGO_SETTINGS_MODULE=controlpanel.settings.test
    $PY manage.py build_images --test
    DJANGO_SETTINGS_MODULE=controlpanel.settings.base $PY manage.py build_images  # bench/isolation.py runs python3 in it
    if [ $# -gt 0 ]; then
      say "$1"; $PY "$@"  # one benchmark, with its options: panel.sh bench bench/lifecycle.py --runs 5
    else
      for b in bench/[!_]*.py; do say "$b"; $PY "$b"; done
    fi
    ;;
  *) die "unknown mode $MODE (run, test, check, lint, bench or agent)" ;;
esac
