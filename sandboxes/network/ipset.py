"""The allowlist bridge's grants, kept in one ipset.

One ipset of (sandbox address, tcp:port, destination network) entries, each with a timeout (0:
for good, a listed CIDR) and a comment naming the list entry that granted it (a name or a CIDR),
so a list that changes takes back exactly what it no longer grants.
"""

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass

from .commands import EgressError, host_lock, run_ipset
from .rules import allow_chains

GRANTS_TYPE = "hash:ip,port,net"
GRANTS_MAXELEM = 262144
SET_FLAGS = {"comment", "counters", "skbinfo", "forceadd"}  # options without a value


def header_ok(header: str) -> bool:
    """The set's options, as `ipset list -t` prints them, are the ones apply() makes it with."""
    tokens, options = header.split(), {}
    while tokens:
        key = tokens.pop(0)
        options[key] = "" if key in SET_FLAGS or not tokens else tokens.pop(0)
    return (
        options.get("family") == "inet" and options.get("maxelem") == str(GRANTS_MAXELEM) and "timeout" in options and "comment" in options
    )


GRANT_RE = re.compile(
    r"^add (?P<set>\S+) (?P<src>[0-9.]+),(?P<proto>[a-z0-9]+):(?P<port>\d+),(?P<dst>[0-9./]+)"
    r"(?: timeout (?P<timeout>\d+))?(?: .*?comment \"(?P<comment>[^\"]*)\")?"
)


@dataclass(frozen=True)
class Grant:
    source: str
    port: int
    destination: str  # an address or a CIDR
    comment: str
    timeout: int = 0  # seconds left; 0 for good
    proto: str = "tcp"  # the panel grants only TCP; another is a grant made by hand, taken back

    @property
    def element(self) -> str:
        return f"{self.source},{self.proto}:{self.port},{self.destination}"


def set_header(name: str) -> tuple[str, str] | None:
    """The set's type and its header line (family, maxelem, timeout, comment...), or None."""
    try:
        out = run_ipset("list", "-t", name)
    except EgressError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    found = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    return (found["Type"], found.get("Header", "")) if "Type" in found else None


def grants() -> list[Grant]:
    """Every grant in force on the allowlist bridge."""
    a = allow_chains()
    found = []
    for line in run_ipset("save", a.grants).splitlines():
        match = GRANT_RE.match(line)
        if match and match["set"] == a.grants:
            dst = match["dst"] if "/" in match["dst"] else f"{match['dst']}/32"
            found.append(Grant(match["src"], int(match["port"]), dst, match["comment"] or "", int(match["timeout"] or 0), match["proto"]))
        elif line.startswith(f"add {a.grants} "):
            raise EgressError(f"the ipset {a.grants} holds an entry the panel cannot read: {line[:120]}")
    return found


def grants_lock() -> AbstractContextManager[None]:
    """Held while grants are read and changed (the resolver, sync_grants), across processes: a
    grant decided on an old list never lands after the sync that takes it back."""
    return host_lock(f"grants-{allow_chains().bridge}")


def forget_grants() -> None:
    """The set is new or gone: what the ledger knew of its elements went with them."""
    from . import grant_ledger  # imported here: it builds on this module

    with grants_lock():
        grant_ledger.forget_all()


def grant(new: list[Grant], seconds: int = 0) -> None:
    """Add (or renew) grants in one step: reachable for each grant's own timeout, else for
    `seconds` (0: for good)."""
    if new:
        a = allow_chains()
        lines = [f'add {a.grants} {g.element} timeout {g.timeout or seconds} comment "{comment(g.comment)}"' for g in new]
        run_ipset("-exist", "restore", stdin="\n".join(lines) + "\n")


def comment(text: str) -> str:
    """A grant's comment as the set keeps it."""
    return re.sub(r"[^A-Za-z0-9.*/_-]", "", text)[:250]


def revoke(old: list[Grant]) -> None:
    if old:
        a = allow_chains()
        run_ipset("-exist", "restore", stdin="".join(f"del {a.grants} {g.element}\n" for g in old))
