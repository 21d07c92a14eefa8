"""The credential proxy's CA, and what a sandbox is given to use the proxy.

One CA per panel (per host directory SANDBOX_PROXY_CA_DIR, made once: the key 0600 in a 0700
folder, in mitmproxy's own file layout so the proxy reads it as is). The proxy signs with it only
the hosts it must look inside (a proxy secret's hosts, an allowlist name with HTTP rules): every
other connection is passed through untouched, with the host's own certificate.

A sandbox in internet or allowlist mode (when SANDBOX_PROXY is on) gets the proxy's address in
the usual variables (HTTPS_PROXY and friends) and trusts the CA through a root-owned, read-only
folder /run/ccpanel (an in-memory folder of the container, written as root at each start):
`ca.pem` alone (NODE_EXTRA_CA_CERTS, added to Node's own roots) and `bundle.pem`, the image's
system bundle plus the CA (OpenSSL's SSL_CERT_FILE, git, curl, Python's requests). The label
LABEL_CA (the CA's fingerprint and the proxy's address) makes a start recreate a container made
with another.
"""

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from .bridges import bridge_of

LABEL_CA = "io.ccpanel.proxy-ca"
DIR_IN_SANDBOX = "/run/ccpanel"
CA_FILE = f"{DIR_IN_SANDBOX}/ca.pem"
BUNDLE_FILE = f"{DIR_IN_SANDBOX}/bundle.pem"
TMPFS_BYTES = 2 * 1024 * 1024
KEY_FILE = "mitmproxy-ca.pem"  # mitmproxy's names: the key and certificate, and the certificate alone
CERT_FILE = "mitmproxy-ca-cert.pem"
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
DELIVER_SCRIPT = (
    'umask 022 && printf "%s\\n" "$CCP_CA" > ' + CA_FILE + " && : > " + BUNDLE_FILE + " && for f in " + " ".join(SYSTEM_BUNDLES) + "; do "
    'if [ -r "$f" ]; then cat "$f" >> ' + BUNDLE_FILE + "; break; fi; done && "
    'printf "\\n%s\\n" "$CCP_CA" >> ' + BUNDLE_FILE
)


def ca_dir() -> Path:
    return Path(settings.SANDBOX_PROXY_CA_DIR)


def ensure() -> str:
    """The CA certificate (PEM), made first if there is none."""
    folder = ca_dir()
    if not (folder / CERT_FILE).exists():
        from mitmproxy.certs import CertStore  # the proxy's own library makes it, in its layout

        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            CertStore.from_store(folder, "mitmproxy", 2048)
        finally:
            os.umask(old)
    folder.chmod(0o700)
    for name in os.listdir(folder):
        if name.endswith(".pem") and name != CERT_FILE:
            (folder / name).chmod(0o600)  # a key (or a key with its certificate)
    return _read(str(folder / CERT_FILE), (folder / CERT_FILE).stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _read(path: str, mtime: int) -> str:
    return Path(path).read_text()


def fingerprint(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()[:16]


def proxied(mode: str) -> bool:
    """Whether a sandbox in `mode` is pointed at the proxy (never in `none` mode: no network)."""
    return bool(settings.SANDBOX_PROXY) and bridge_of(mode) is not None


def address(mode: str) -> str:
    bridge = bridge_of(mode)
    if bridge is None:
        raise ValueError(f"no proxy in network mode {mode!r}")
    return f"http://{bridge.gateway}:{settings.SANDBOX_PROXY_PORT}"


def environment(mode: str) -> dict[str, str]:
    """The variables that send a sandbox's HTTP(S) through the proxy and make it trust the CA."""
    if not proxied(mode):
        return {}
    url = address(mode)
    loopback = "localhost,127.0.0.1,::1"
    return {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "https_proxy": url,
        "http_proxy": url,
        "NO_PROXY": loopback,
        "no_proxy": loopback,
        "NODE_USE_ENV_PROXY": "1",  # Node's own fetch and https (22.21 and later) use them too
        "NODE_EXTRA_CA_CERTS": CA_FILE,
        "SSL_CERT_FILE": BUNDLE_FILE,
        "GIT_SSL_CAINFO": BUNDLE_FILE,
        "CURL_CA_BUNDLE": BUNDLE_FILE,
        "REQUESTS_CA_BUNDLE": BUNDLE_FILE,
    }


def labels(mode: str) -> dict[str, str]:
    """The CA's fingerprint and the proxy's address: either changed, the next start recreates the
    container (the in-memory folder /run/ccpanel tells one made with the proxy off)."""
    return {LABEL_CA: f"{fingerprint(ensure())}@{address(mode)}"} if proxied(mode) else {}


def deliver(docker, container_id: str, mode: str) -> None:
    """After a start: the CA and the bundle into /run/ccpanel, as root (the sandbox's user reads
    them and cannot change them). `docker` is the sandbox's engine; raises its EngineError."""
    if not proxied(mode):
        return
    code, out = docker.exec_run(container_id, ["/bin/sh", "-c", DELIVER_SCRIPT], user="0:0", environment={"CCP_CA": ensure().strip()})
    if code != 0:
        from .. import engine

        raise engine.EngineError(f"could not write the proxy's CA into {DIR_IN_SANDBOX}: {out.strip()[:200]}")
