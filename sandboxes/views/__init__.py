"""Thin views: parse, authorise through services, render. All pages need login (middleware);
the health banners come from the context processor. One module per page group:

    dashboard  the dashboard and the New sandbox form
    detail     a sandbox's page, its recently changed files and its output download
    lifecycle  the lifecycle actions (start, stop, destroy...)
    transfer   the Files in and out card (imports/ and exports/)
    network    the network card: refused connections, network mode, allowlist
    moves      the Move to host form
    checklist  the security checklist: a team's manual items, a sandbox's live card

The secrets pages are in ../secrets/views.py.
"""

from .checklist import sandbox_checklist, team_checklist
from .dashboard import dashboard, sandbox_create
from .detail import sandbox_detail, sandbox_files, sandbox_logs_download
from .lifecycle import sandbox_action
from .moves import sandbox_move
from .network import sandbox_allow_refused, sandbox_allowlist, sandbox_decisions, sandbox_denials, sandbox_network, team_allowlist
from .transfer import sandbox_download, sandbox_transfer, sandbox_upload

__all__ = [
    "dashboard",
    "sandbox_action",
    "sandbox_allowlist",
    "sandbox_allow_refused",
    "sandbox_decisions",
    "team_allowlist",
    "sandbox_checklist",
    "sandbox_create",
    "sandbox_denials",
    "sandbox_detail",
    "sandbox_download",
    "sandbox_files",
    "sandbox_logs_download",
    "sandbox_move",
    "sandbox_network",
    "sandbox_transfer",
    "sandbox_upload",
    "team_checklist",
]
