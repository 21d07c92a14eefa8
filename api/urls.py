"""/api/: the versioned endpoints, the schema and its documentation page."""

from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import (
    views,
    views_activity,
    views_agents,
    views_audit,
    views_backups,
    views_checklist,
    views_decisions,
    views_files,
    views_hosts,
    views_incidents,
    views_logs,
    views_refused,
    views_rules,
    views_secrets,
    views_settings,
    views_teams,
    views_webhooks,
)

urlpatterns = [
    # The API's own views answer an anonymous request with 401 themselves (tokens only): the
    # pages' sign-in redirect must not stand in front of them (DRF marks its views so too; said
    # here where the URLs are read).
    path("v1/sandboxes/", login_not_required(views.SandboxList.as_view()), name="api_sandboxes"),
    path("v1/sandboxes/<str:pk>/", login_not_required(views.SandboxDetail.as_view()), name="api_sandbox"),
    # The schema answers a signed-in browser (the docs page fetches it) or a token.
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="api_schema"),
    # The documentation page is a page: signed in (DRF's views skip LoginRequiredMiddleware, hence
    # login_required), second factor and all. Its assets are vendored (drf-spectacular-sidecar),
    # never loaded from the internet.
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="api_schema")), name="api_docs"),
    # Webhooks (api.views_webhooks): a team admin's, as on the team's webhooks page.
    path("v1/webhooks/", login_not_required(views_webhooks.WebhookList.as_view()), name="api_webhooks"),
    path("v1/webhooks/<str:pk>/", login_not_required(views_webhooks.WebhookDetail.as_view()), name="api_webhook"),
    path("v1/webhooks/<str:pk>/rotate-secret/", login_not_required(views_webhooks.WebhookRotate.as_view()), name="api_webhook_rotate"),
    path(
        "v1/webhooks/<str:pk>/deliveries/<str:delivery>/redeliver/",
        login_not_required(views_webhooks.WebhookRedeliver.as_view()),
        name="api_webhook_redeliver",
    ),
    # A sandbox's output (api/views_logs.py).
    path("v1/sandboxes/<str:pk>/logs/", login_not_required(views_logs.SandboxLogs.as_view()), name="api_sandbox_logs"),
    # Audit, teams and members, secrets, hosts and a sandbox's settings.
    path("v1/audit/events/", login_not_required(views_audit.AuditList.as_view()), name="api_audit"),
    path("v1/audit/export.jsonl", login_not_required(views_audit.AuditExportJSONL.as_view()), name="api_audit_export_jsonl"),
    path("v1/audit/export.csv", login_not_required(views_audit.AuditExportCSV.as_view()), name="api_audit_export_csv"),
    path("v1/audit/verify/", login_not_required(views_audit.AuditVerify.as_view()), name="api_audit_verify"),
    path("v1/teams/", login_not_required(views_teams.TeamList.as_view()), name="api_teams"),
    path("v1/teams/<str:pk>/", login_not_required(views_teams.TeamDetail.as_view()), name="api_team"),
    path("v1/teams/<str:pk>/members/<str:username>/", login_not_required(views_teams.TeamMember.as_view()), name="api_team_member"),
    path("v1/teams/<str:pk>/second-factor/", login_not_required(views_teams.TeamSecondFactor.as_view()), name="api_team_second_factor"),
    path("v1/teams/<str:pk>/freeze/", login_not_required(views_teams.TeamFreeze.as_view()), name="api_team_freeze"),
    path("v1/teams/<str:pk>/checklist/", login_not_required(views_checklist.TeamChecklist.as_view()), name="api_team_checklist"),
    path(
        "v1/teams/<str:pk>/checklist/<str:item>/",
        login_not_required(views_checklist.TeamChecklistItem.as_view()),
        name="api_team_checklist_item",
    ),
    path("v1/sandboxes/<str:pk>/activity/", login_not_required(views_activity.SandboxActivity.as_view()), name="api_sandbox_activity"),
    path("v1/sandboxes/<str:pk>/storage/", login_not_required(views_activity.SandboxStorage.as_view()), name="api_sandbox_storage"),
    path(
        "v1/sandboxes/<str:pk>/agent-activity/",
        login_not_required(views_agents.SandboxAgentActivity.as_view()),
        name="api_sandbox_agent_activity",
    ),
    path("v1/sandboxes/<str:pk>/refused/", login_not_required(views_refused.SandboxRefused.as_view()), name="api_sandbox_refused"),
    path(
        "v1/sandboxes/<str:pk>/decisions.jsonl",
        login_not_required(views_decisions.SandboxDecisions.as_view()),
        name="api_sandbox_decisions",
    ),
    path(
        "v1/sandboxes/<str:pk>/refused/grouped/",
        login_not_required(views_refused.SandboxRefusedGrouped.as_view()),
        name="api_sandbox_refused_grouped",
    ),
    path("v1/sandboxes/<str:pk>/checklist/", login_not_required(views_checklist.SandboxChecklist.as_view()), name="api_sandbox_checklist"),
    path(
        "v1/sandboxes/<str:pk>/checklist/<str:item>/",
        login_not_required(views_checklist.SandboxChecklistTick.as_view()),
        name="api_sandbox_checklist_tick",
    ),
    path("v1/teams/<str:pk>/policy/", login_not_required(views_teams.TeamResourcePolicy.as_view()), name="api_team_policy"),
    path("v1/teams/<str:pk>/allowlist/", login_not_required(views_teams.TeamAllowlist.as_view()), name="api_team_allowlist"),
    path("v1/teams/<str:pk>/agent-policy/", login_not_required(views_teams.TeamAgentPolicy.as_view()), name="api_team_agent_policy"),
    path("v1/teams/<str:team>/secrets/", login_not_required(views_secrets.TeamSecrets.as_view()), name="api_team_secrets"),
    path("v1/teams/<str:team>/secrets/<str:pk>/", login_not_required(views_secrets.TeamSecret.as_view()), name="api_team_secret"),
    path("v1/sandboxes/<str:sandbox>/secrets/", login_not_required(views_secrets.SandboxSecrets.as_view()), name="api_sandbox_secrets"),
    path(
        "v1/sandboxes/<str:sandbox>/secrets/<str:pk>/", login_not_required(views_secrets.SandboxSecret.as_view()), name="api_sandbox_secret"
    ),
    path("v1/sandboxes/<str:pk>/settings/", login_not_required(views_settings.SandboxSettings.as_view()), name="api_sandbox_settings"),
    path(
        "v1/sandboxes/<str:pk>/settings/network/", login_not_required(views_settings.SandboxNetwork.as_view()), name="api_sandbox_network"
    ),
    path(
        "v1/sandboxes/<str:pk>/settings/allowlist/",
        login_not_required(views_settings.SandboxAllowlist.as_view()),
        name="api_sandbox_allowlist",
    ),
    path("v1/sandboxes/<str:pk>/settings/disk/", login_not_required(views_settings.SandboxDisk.as_view()), name="api_sandbox_disk"),
    path(
        "v1/sandboxes/<str:pk>/settings/git-identity/",
        login_not_required(views_settings.SandboxGitIdentity.as_view()),
        name="api_sandbox_git",
    ),
    path("v1/sandboxes/<str:pk>/settings/ssh-key/", login_not_required(views_settings.SandboxSshKey.as_view()), name="api_sandbox_ssh_key"),
    path("v1/hosts/", login_not_required(views_hosts.HostList.as_view()), name="api_hosts"),
    path("v1/hosts/join-tokens/", login_not_required(views_hosts.JoinTokenList.as_view()), name="api_join_tokens"),
    path("v1/hosts/join-tokens/<str:pk>/revoke/", login_not_required(views_hosts.JoinTokenRevoke.as_view()), name="api_join_token_revoke"),
    path("v1/hosts/<str:pk>/", login_not_required(views_hosts.HostDetail.as_view()), name="api_host"),
    # Backups, restores, checkpoints, transfers and incidents.
    path("v1/backups/", login_not_required(views_backups.BackupList.as_view()), name="api_backups"),
    path("v1/backups/import/", login_not_required(views_backups.BackupImport.as_view()), name="api_backup_import"),
    path("v1/backups/<str:pk>/", login_not_required(views_backups.BackupDetail.as_view()), name="api_backup"),
    path("v1/backups/<str:pk>/download/", login_not_required(views_backups.BackupDownload.as_view()), name="api_backup_download"),
    path("v1/backups/<str:pk>/verify/", login_not_required(views_backups.BackupVerify.as_view()), name="api_backup_verify"),
    path("v1/backups/<str:pk>/cancel/", login_not_required(views_backups.BackupCancel.as_view()), name="api_backup_cancel"),
    path("v1/backups/<str:pk>/restore/", login_not_required(views_backups.BackupRestore.as_view()), name="api_backup_restore"),
    path(
        "v1/sandboxes/<str:pk>/backup-schedule/",
        login_not_required(views_rules.SandboxBackupSchedule.as_view()),
        name="api_sandbox_backup_schedule",
    ),
    path(
        "v1/sandboxes/<str:pk>/checkpoint-retention/",
        login_not_required(views_rules.SandboxCheckpointRetention.as_view()),
        name="api_sandbox_checkpoint_retention",
    ),
    path("v1/restores/<str:pk>/", login_not_required(views_backups.RestoreDetail.as_view()), name="api_restore"),
    path("v1/checkpoints/", login_not_required(views_files.CheckpointList.as_view()), name="api_checkpoints"),
    path("v1/checkpoints/<str:pk>/", login_not_required(views_files.CheckpointDetail.as_view()), name="api_checkpoint"),
    path("v1/checkpoints/<str:pk>/rollback/", login_not_required(views_files.CheckpointRollback.as_view()), name="api_checkpoint_rollback"),
    path("v1/sandboxes/<str:pk>/transfer/files/", login_not_required(views_files.TransferFiles.as_view()), name="api_transfer_files"),
    path("v1/sandboxes/<str:pk>/transfer/upload/", login_not_required(views_files.TransferUpload.as_view()), name="api_transfer_upload"),
    path(
        "v1/sandboxes/<str:pk>/transfer/download/", login_not_required(views_files.TransferDownload.as_view()), name="api_transfer_download"
    ),
    path("v1/incidents/", login_not_required(views_incidents.IncidentList.as_view()), name="api_incidents"),
    path("v1/incidents/<str:pk>/", login_not_required(views_incidents.IncidentDetail.as_view()), name="api_incident"),
    path("v1/incidents/<str:pk>/steps/", login_not_required(views_incidents.IncidentStep.as_view()), name="api_incident_step"),
    path("v1/incidents/<str:pk>/close/", login_not_required(views_incidents.IncidentClose.as_view()), name="api_incident_close"),
    path("v1/incidents/<str:pk>/report.md", login_not_required(views_incidents.IncidentReportMarkdown.as_view()), name="api_incident_md"),
    path("v1/incidents/<str:pk>/report.html", login_not_required(views_incidents.IncidentReportHtml.as_view()), name="api_incident_html"),
    path("v1/incidents/<str:pk>/evidence/", login_not_required(views_incidents.IncidentEvidence.as_view()), name="api_incident_evidence"),
    # Last: it takes any two-segment path under a sandbox as an action (404 for an unknown one),
    # so every other sandboxes/<pk>/<name>/ route must come before it.
    path("v1/sandboxes/<str:pk>/<str:action>/", login_not_required(views.SandboxAction.as_view()), name="api_sandbox_action"),
]
