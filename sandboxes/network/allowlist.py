"""What an `allowlist` sandbox may reach: its presets and its own entries, parsed and judged.

An entry is a domain (`registry.npmjs.org`), a wildcard for a domain's subdomains
(`*.npmjs.org`: `a.npmjs.org` and `a.b.npmjs.org`, not `npmjs.org` itself) or an IPv4 CIDR
(`198.51.100.0/24`), optionally followed by `:` and its TCP ports (`github.com:22,443`); 443 when
none are given. Port 53 is never granted: names are asked only of the panel's resolver.

A name may carry HTTP rules after it, on the same line: its methods (`GET,POST`) and a path
pattern (`/myorg/*`, `*` any characters), either or both: `github.com GET,POST /myorg/*`. Such a
name is reached only through the panel's credential proxy (sandboxes.network.proxy), which looks
inside its TLS and refuses any other method or path with 403; the resolver grants it no direct
connection. Several entries of one name allow what any of them allows.

The rules that act on it live on the host (sandboxes.network: the bridge refuses everything but
what is granted, and never the host, a private range or another sandbox, listed or not) and in
the panel's resolver (sandboxes.network.resolver: an address is granted when it answers a listed name).
"""

import fnmatch
import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote

from . import rules

DEFAULT_PORTS = (443,)
MAX_ENTRIES = 200
MAX_PORTS = 16
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
METHODS_RE = re.compile(r"^[A-Z]+(,[A-Z]+)*$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,199}$")
LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
NAME_RE = re.compile(rf"^(\*\.)?({LABEL}\.)+{LABEL}$")

# Presets: what a sandbox needs for a common job, kept up to date by the panel (an admin picks a
# preset by its key; its entries are those of the panel's version at each lookup).
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "claude-code": (
        "Claude Code (the Anthropic API and sign-in, the npm registry)",
        # Not its telemetry and error reports (Statsig, Sentry): they accept uploads from anyone,
        # a way out for data. The image turns them off (CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).
        ("api.anthropic.com", "console.anthropic.com", "registry.npmjs.org"),
    ),
    "github": (
        "GitHub (web, API, git over HTTPS and SSH, downloads)",
        (
            "github.com:22,443",
            "*.github.com",
            "*.githubusercontent.com",
            "ghcr.io",
            "*.ghcr.io",
            "github-releases.githubusercontent.com",
        ),
    ),
    "packages": (
        "Package registries (npm, PyPI, crates.io, Go, RubyGems, Debian)",
        (
            "registry.npmjs.org",
            "registry.yarnpkg.com",
            "pypi.org",
            "files.pythonhosted.org",
            "crates.io",
            "static.crates.io",
            "index.crates.io",
            "proxy.golang.org",
            "sum.golang.org",
            "rubygems.org",
            "deb.debian.org:80,443",
            "security.debian.org:80,443",
        ),
    ),
}


@dataclass(frozen=True)
class Entry:
    text: str  # as written (without its ports): the name of the grants it makes
    ports: tuple[int, ...]
    name: str = ""  # a domain, or "*.domain" for its subdomains
    network: ipaddress.IPv4Network | None = None
    methods: tuple[str, ...] = ()  # HTTP rules: the methods allowed (all when empty) ...
    path: str = ""  # ... and the path pattern ("" or "/*": any path)

    @property
    def ruled(self) -> bool:
        """Whether the entry restricts HTTP requests (and so is reached only through the proxy)."""
        return bool(self.methods or self.path)

    def permits(self, method: str, path: str) -> bool:
        """Whether an HTTP request (its path without the query) passes the entry's rules."""
        if self.methods and method.upper() not in self.methods:
            return False
        return not self.path or fnmatch.fnmatchcase(path, unquote(self.path).replace("[", "[[]"))  # both decoded (server_path)

    def matches(self, qname: str) -> bool:
        if not self.name:
            return False
        if self.name.startswith("*."):
            return qname.endswith(self.name[1:])
        return qname == self.name


def parse(text: str) -> tuple[list[Entry], list[str]]:
    """The entries of an allowlist (one a line, or separated by spaces or commas between
    entries; `#` starts a comment), and what is wrong with it, in words."""
    entries: list[Entry] = []
    errors: list[str] = []
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        for entry in _line(line, errors):
            if entry not in entries:
                entries.append(entry)
    if len(entries) > MAX_ENTRIES:
        errors.append(f"At most {MAX_ENTRIES} entries; this list has {len(entries)}.")
    return entries, errors


def _line(line: str, errors: list[str]) -> list[Entry]:
    """A line's entries: each item, with the HTTP rules (methods, path) that follow a name."""
    found: list[Entry] = []
    rules: dict[int, dict[str, str]] = {}  # index in found -> its "methods" and "path" as written
    for item in line.split():
        kind = "methods" if METHODS_RE.match(item.rstrip(",")) else "path" if item.startswith("/") else ""
        if not kind:
            entry = _entry(item, errors)
            if entry is not None:
                found.append(entry)
            continue
        if not found or found[-1].network is not None:
            errors.append(f"{item}: HTTP rules (methods, a path) follow a name on the same line, as in github.com GET,POST /myorg/*.")
            continue
        if kind in rules.setdefault(len(found) - 1, {}):
            errors.append(f"{found[-1].text}: one list of methods and one path at most.")
            rules[len(found) - 1]["broken"] = item
            continue
        rules[len(found) - 1][kind] = item.rstrip(",") if kind == "methods" else item
    ruled = (_ruled(entry, rules.get(i, {}), errors) for i, entry in enumerate(found))
    return [e for e in ruled if e is not None]


def _ruled(entry: Entry, written: dict[str, str], errors: list[str]) -> Entry | None:
    """The entry with its HTTP rules, checked; None when they are wrong (the error says why):
    an entry never stands without the rules it was written with."""
    if "broken" in written:  # its error is said already
        return None
    methods = tuple(dict.fromkeys(written.get("methods", "").split(","))) if written.get("methods") else ()
    path = written.get("path", "")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        errors.append(f"{entry.text}: {bad[0]} is not an HTTP method ({', '.join(METHODS)}).")
        return None
    if path and not PATH_RE.match(path):
        errors.append(f"{entry.text}: the path {path[:40]!r} is a URL path of at most 200 characters, '*' for any characters.")
        return None
    return replace(entry, methods=methods, path=path)


def _entry(item: str, errors: list[str]) -> Entry | None:
    item = item.strip().rstrip(",").lower()
    if not item:
        return None
    host, _, port_text = item.partition(":")
    ports: tuple[int, ...] = DEFAULT_PORTS
    if port_text:
        try:
            ports = tuple(sorted({int(p) for p in port_text.split(",") if p.strip()}))
        except ValueError:
            errors.append(f"{item}: ports are numbers, as in github.com:22,443.")
            return None
        if not ports or any(not 1 <= p <= 65535 for p in ports) or len(ports) > MAX_PORTS:
            errors.append(f"{item}: from 1 to {MAX_PORTS} ports, each from 1 to 65535.")
            return None
        if 53 in ports:
            errors.append(f"{item}: port 53 is never granted; names are asked only of the panel's resolver.")
            return None
    if re.fullmatch(r"[0-9./]+", host):
        try:
            network = ipaddress.IPv4Network(host, strict=False)
        except ValueError:
            errors.append(f"{item}: not an IPv4 address or CIDR.")
            return None
        blocked = [r for r in rules.BLOCKED_RANGES if network.overlaps(ipaddress.IPv4Network(r))]
        if blocked:
            errors.append(f"{item}: lies in {blocked[0]}, which no sandbox reaches (the host, private and reserved ranges).")
            return None
        if network.prefixlen < 8:
            errors.append(f"{item}: a network of at most /8.")
            return None
        return Entry(text=str(network), ports=ports, network=network)
    if len(host) > 253 or not NAME_RE.match(host) or "*" in host[2:]:
        errors.append(f"{item}: a domain (example.com), a wildcard (*.example.com) or an IPv4 CIDR, with optional :ports.")
        return None
    return Entry(text=host, ports=ports, name=host)


def host_errors(entries: list[Entry], *, addresses: list[str], lans: list[str]) -> list[str]:
    """The CIDR entries that are, contain or lie inside one of the host's own addresses or its
    LAN subnets (host.host_addresses, host.lan_subnets): the rules drop that traffic, granted
    or not, so such an entry is refused when saved, like one in a blocked range."""
    errors = []
    for entry in entries:
        if entry.network is None:
            continue
        mine = [a for a in addresses if ipaddress.IPv4Address(a) in entry.network]
        lan = [n for n in lans if entry.network.overlaps(ipaddress.IPv4Network(n))]
        if lan:
            errors.append(f"{entry.text}: lies in the host's network {lan[0]} (its LAN), which no sandbox reaches.")
        elif mine:
            errors.append(f"{entry.text}: holds the host's own address {mine[0]}, which no sandbox reaches.")
    return errors


def presets_errors(keys: list[str]) -> list[str]:
    return [f"No preset called {k!r}: one of {', '.join(PRESETS)}." for k in keys if k not in PRESETS]


def effective(presets: list[str], text: str) -> list[Entry]:
    """The entries in force for these presets and own entries (invalid ones left out: they
    were refused when saved, and a preset the panel no longer has grants nothing)."""
    lines = [" ".join(PRESETS[k][1]) for k in presets if k in PRESETS]
    entries, _ = parse("\n".join([*lines, text or ""]))
    return entries[:MAX_ENTRIES]


def ports_for(qname: str, entries: list[Entry]) -> tuple[int, ...]:
    """The ports a listed name grants (all its entries' together), or () when it is not listed."""
    qname = qname.rstrip(".").lower()
    found: set[int] = set()
    for entry in entries:
        if entry.matches(qname):
            found.update(entry.ports)
    return tuple(sorted(found))


def direct(entries: list[Entry]) -> list[Entry]:
    """The entries the resolver grants: without HTTP rules (a ruled name goes through the proxy)."""
    return [e for e in entries if not e.ruled]


def http_verdict(host: str, method: str, path: str, entries: list[Entry]) -> bool | None:
    """For a request to `host` through the proxy: None when no entry of the host has HTTP rules
    (nothing to judge), else whether one of its entries allows it (a plain entry allows all)."""
    mine = [e for e in entries if e.matches(host.rstrip(".").lower())]
    if not any(e.ruled for e in mine):
        return None
    read = server_path(path)
    if read is None:
        return any(not e.ruled for e in mine)  # a plain entry of the name allows everything
    return any(e.permits(method, read) for e in mine)


def server_path(path: str) -> str | None:
    """The path (without its query) as a server reads it, to judge it by the list's patterns; None
    when servers may read it otherwise than as judged, and it is refused: a `.` or `..` segment,
    written or percent-encoded (`/myorg/../other` matches `/myorg/*` and reaches /other), an
    encoded slash or backslash, a `;` parameter on a dot segment (`..;`), a fragment, anything
    still encoded once decoded, control characters."""
    try:
        decoded = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:  # not UTF-8 (an overlong `%c0%ae` is a dot to some servers)
        return None
    if not decoded.startswith("/") or "#" in path or any(c in decoded for c in "\\%") or any(ord(c) < 0x20 or c == "\x7f" for c in decoded):
        return None
    if "%2f" in path.lower() or any(segment.split(";", 1)[0] in (".", "..") for segment in decoded.split("/")):
        return None
    return decoded
