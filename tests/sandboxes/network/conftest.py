"""The fixtures of helpers.py, for every test of this folder."""

from .helpers import credential_proxy, host_listener, internet, loopback_upstream, rules_back, upstream_dns  # noqa: F401
