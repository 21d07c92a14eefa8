"""The sandboxes: where their folders live, their limits, their network, and how long their
actions may take."""

import os
import re
import resource
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import VAR_DIR, env_bool, env_float, env_int, env_str

DOCKER_HOST = env_str("DOCKER_HOST", "") or None
DOCKER_TIMEOUT = env_int("DOCKER_TIMEOUT", 60, minimum=1)
# The socket of the engine that shares this machine's network namespace (the one the egress rules
# here filter): the default socket, unless a host agent runs beside a dockerd of its own.
DOCKER_LOCAL_SOCKET = env_str("DOCKER_LOCAL_SOCKET", "/var/run/docker.sock")
# A host's engine reached over tcp:// is spoken to only with TLS both ways (Docker's --tlsverify):
# HOSTS_TLS_DIR/<host name>/ holds ca.pem, cert.pem and key.pem, Docker's own names for them.
HOSTS_TLS_DIR = Path(env_str("HOSTS_TLS_DIR", str(VAR_DIR / "hosts"))).resolve()
WORKSPACE_ROOT = Path(os.path.expanduser(env_str("WORKSPACE_ROOT", "~/ClaudeCodeWorkspace"))).resolve()
# Folders extra mounts must lie inside (colon-separated). Empty by default: extra mounts are off
# until an admin names folders. Checked at start-up (sandboxes.apps): a root may not be, contain
# or lie inside a system path, a home directory or WORKSPACE_ROOT. Read only through
# sandboxes.services.policy_rules().
SANDBOX_MOUNT_ROOTS = [Path(p).expanduser().resolve() for p in os.environ.get("SANDBOX_MOUNT_ROOTS", "").split(":") if p.strip()]
SANDBOX_DEFAULT_IMAGE = env_str("SANDBOX_DEFAULT_IMAGE", "ccpanel/claude-code:latest")
SANDBOX_MIN_MEMORY_MB = 256
SANDBOX_DEFAULT_MEMORY_MB = env_int("SANDBOX_DEFAULT_MEMORY_MB", 8192, minimum=SANDBOX_MIN_MEMORY_MB)
SANDBOX_MAX_MEMORY_MB = env_int("SANDBOX_MAX_MEMORY_MB", 65536, minimum=SANDBOX_MIN_MEMORY_MB)
# Docker refuses more CPUs than the machine has, so 4 by default, but never more than that.
SANDBOX_MAX_CPUS = env_float("SANDBOX_MAX_CPUS", float(os.cpu_count() or 1), minimum=0.25)
SANDBOX_DEFAULT_CPUS = min(env_float("SANDBOX_DEFAULT_CPUS", 4.0, minimum=0.25), SANDBOX_MAX_CPUS)
SANDBOX_PIDS_LIMIT = env_int("SANDBOX_PIDS_LIMIT", 1024, minimum=16)
# Per-process limits every sandbox gets (CIS Docker 5.19). nproc counts all processes of uid 1000
# on the host, so it is generous; the process limit above is what bounds one sandbox.
# Docker cannot give a container more than its own hard limits allow: the defaults stay below
# this machine's (the panel's hard limits stand for dockerd's, which are alike where both start
# from one system configuration).
_hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
_hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
SANDBOX_NOFILE = env_int("SANDBOX_NOFILE", min(65536, _hard_nofile if _hard_nofile > 0 else 65536), minimum=1024)
SANDBOX_NPROC = env_int("SANDBOX_NPROC", min(65536, _hard_nproc if _hard_nproc > 0 else 65536), minimum=256)
# The in-memory /tmp and /var/tmp of each sandbox (each at most this, and never beyond its memory).
SANDBOX_TMP_MB = env_int("SANDBOX_TMP_MB", 1024, minimum=16)
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = env_str("SANDBOX_USER", "claude")
SANDBOX_NETWORK = env_str("SANDBOX_NETWORK", "ccpanel-sandboxes")
SANDBOX_SUBNET = env_str("SANDBOX_SUBNET", "172.28.0.0/24")
SANDBOX_BRIDGE = env_str("SANDBOX_BRIDGE", "ccpanel0")
# `allowlist` sandboxes sit on a second bridge whose rules refuse everything but what their list
# grants (sandboxes.network), with the panel's resolver on its gateway (sandboxes.network.resolver).
SANDBOX_ALLOW_NETWORK = env_str("SANDBOX_ALLOW_NETWORK", "ccpanel-allowlist")
SANDBOX_ALLOW_SUBNET = env_str("SANDBOX_ALLOW_SUBNET", "172.28.1.0/24")
SANDBOX_ALLOW_BRIDGE = env_str("SANDBOX_ALLOW_BRIDGE", "ccpanel1")
for _key, _bridge in (("SANDBOX_BRIDGE", SANDBOX_BRIDGE), ("SANDBOX_ALLOW_BRIDGE", SANDBOX_ALLOW_BRIDGE)):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", _bridge):
        raise ImproperlyConfigured(f"{_key}={_bridge!r}: an interface name of 1 to 15 letters, digits, '_', '.' or '-'.")
if SANDBOX_ALLOW_BRIDGE == SANDBOX_BRIDGE or SANDBOX_ALLOW_NETWORK == SANDBOX_NETWORK:
    raise ImproperlyConfigured("SANDBOX_ALLOW_BRIDGE and SANDBOX_ALLOW_NETWORK must differ from SANDBOX_BRIDGE and SANDBOX_NETWORK.")
# Where the panel's resolver asks for the names an allowlist grants (space-separated IPv4
# addresses; empty: the host's own name servers, from /etc/resolv.conf).
SANDBOX_DNS_UPSTREAM = env_str("SANDBOX_DNS_UPSTREAM", "").split()
# An address the resolver hands out stays reachable for the answer's TTL plus this many seconds
# (so a connection outlives a short TTL), at least SANDBOX_ALLOW_MIN_SECONDS in all.
SANDBOX_ALLOW_MARGIN = env_int("SANDBOX_ALLOW_MARGIN", 300, minimum=0)
SANDBOX_ALLOW_MIN_SECONDS = env_int("SANDBOX_ALLOW_MIN_SECONDS", 60, minimum=1)
# The decision log (refused connections and names) writes at most this many rows a second for
# all sandboxes together, with bursts of twice that; what is over is counted and summed up in
# one row a second (sandboxes.network.decision_budget), so no crowd of sandboxes can flood the database.
DECISION_LOG_ROWS_A_SECOND = env_float("DECISION_LOG_ROWS_A_SECOND", 50.0, minimum=1)
# Host-enforced egress rules for `internet` mode (sandboxes.network): a sandbox reaches the public
# internet, never the host, the local network or another sandbox. Needs root (iptables); turning
# it off lets sandboxes reach the LAN and the host's services.
SANDBOX_EGRESS_RULES = env_bool("SANDBOX_EGRESS_RULES", True)
# The credential proxy (sandboxes.network.proxy, `manage.py credential_proxy`): listens on each
# bridge's gateway at this port; sandboxes in internet and allowlist mode are pointed at it
# (HTTPS_PROXY...) when SANDBOX_PROXY is on. Its CA (made once, key 0600) lives in
# SANDBOX_PROXY_CA_DIR; SANDBOX_PROXY_UPSTREAM_CA, if set, is the bundle it trusts upstream
# (else mitmproxy's, certifi's).
SANDBOX_PROXY = env_bool("SANDBOX_PROXY", True)
SANDBOX_PROXY_PORT = env_int("SANDBOX_PROXY_PORT", 3128, minimum=1)
SANDBOX_PROXY_CA_DIR = env_str("SANDBOX_PROXY_CA_DIR", str(VAR_DIR / "proxy-ca"))
SANDBOX_PROXY_UPSTREAM_CA = env_str("SANDBOX_PROXY_UPSTREAM_CA", "")
SANDBOX_RUNTIMES = ("runc", "runsc")
SANDBOX_STOP_TIMEOUT = env_int("SANDBOX_STOP_TIMEOUT", 10, minimum=0)
# Docker keeps a sandbox's output in SANDBOX_LOG_MAX_FILES files of SANDBOX_LOG_MAX_SIZE each (the
# oldest goes first): 100 MB a sandbox by default.
SANDBOX_LOG_MAX_SIZE = env_str("SANDBOX_LOG_MAX_SIZE", "20m")
SANDBOX_LOG_MAX_FILES = env_int("SANDBOX_LOG_MAX_FILES", 5, minimum=1)
# A running action's worker writes a heartbeat this often; a claim whose heartbeat is older than
# SANDBOX_STALE_SECONDS (or that never started within it) has lost its worker and is queued again,
# at most SANDBOX_MAX_ATTEMPTS times before it ends in `error`.
SANDBOX_HEARTBEAT_SECONDS = env_float("SANDBOX_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
SANDBOX_STALE_SECONDS = env_int("SANDBOX_STALE_SECONDS", 30, minimum=1)
SANDBOX_MAX_ATTEMPTS = env_int("SANDBOX_MAX_ATTEMPTS", 3, minimum=1)
# The dashboard shows this many sandboxes to a page.
SANDBOX_PAGE_SIZE = 50


def _warm_pool(text: str) -> tuple[tuple[str, str, int], ...]:
    """WARM_POOL: "IMAGE@MODE=N" entries separated by spaces or commas, e.g.
    "ccpanel/claude-code:latest@internet=2 ccpanel/claude-code:latest@allowlist=1"."""
    pools = []
    for item in text.replace(",", " ").split():
        image, at, rest = item.rpartition("@")
        mode, equals, count = rest.partition("=")
        if not (image and at and equals and mode in ("internet", "allowlist", "none") and count.isascii() and count.isdigit()):
            raise ImproperlyConfigured(f"WARM_POOL: {item!r} is not IMAGE@MODE=N (MODE: internet, allowlist or none).")
        if int(count) > 32:
            raise ImproperlyConfigured(f"WARM_POOL: {item!r} asks for more than 32 started containers.")
        if int(count):
            pools.append((image, mode, int(count)))
    if len({(i, m) for i, m, _ in pools}) != len(pools):
        raise ImproperlyConfigured("WARM_POOL names one image and network mode twice.")
    if (total := sum(n for _, _, n in pools)) > WARM_POOL_MOST:
        raise ImproperlyConfigured(f"WARM_POOL asks for {total} started containers in all; at most {WARM_POOL_MOST}.")
    return tuple(pools)


# Every slot is a running container with an address on its bridge that placement, the team limits
# and the storage pool's quotas do not count: their number is bounded for all pools together too.
WARM_POOL_MOST = 64


# The warm pool (sandboxes.services.warm): per image and network mode, this many started,
# hardened containers with their folders ready on each host, so that a create that matches them
# runs in tens of milliseconds. Only with the storage pool; an empty value turns it off.
WARM_POOL = _warm_pool(os.environ.get("WARM_POOL", f"{SANDBOX_DEFAULT_IMAGE}@internet=1"))  # set but empty: off
