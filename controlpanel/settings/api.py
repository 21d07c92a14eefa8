"""The REST API (api/): Django REST Framework with personal tokens only, and its OpenAPI schema."""

import os

from .env import VAR_DIR, env_int, env_rate, env_str

REST_FRAMEWORK = {
    # Tokens only: a browser's session cookie never authenticates an API call, so no API call
    # can be forged by another site (no CSRF to check) and the second factor, asked at sign-in,
    # is asked at the token's creation instead (api.views_tokens).
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "api.auth.ScopeAllows"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_VERSIONING_CLASS": None,
    "SCHEMA_COERCE_PATH_PK": False,  # the path says {pk}, as the URLs do
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Claude Code sandbox panel API",
    "DESCRIPTION": (
        "Drive the panel from scripts: every call goes through the same services (and so the same "
        "permissions, validation and audit trail) as the pages. Authenticate with a personal token "
        "(`Authorization: Bearer <token>`), made on the panel's API tokens page."
    ),
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema for a signed-in page (the docs page fetches it with the session) or a token.
    "SERVE_AUTHENTICATION": ["api.auth.BearerTokenAuthentication", "rest_framework.authentication.SessionAuthentication"],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",  # vendored by drf-spectacular-sidecar: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # validatorUrl None: Swagger UI would otherwise send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "persistAuthorization": False},
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation documents the rate limit's 429 (api.throttling).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.throttling.document_rate_limit"],
}

# Tokens live at most this long (a year): a leaked one cannot outlive it.
API_TOKEN_MAX_DAYS = 365
# A token's last use is written at most this often (seconds): a busy script does not write every call.
API_TOKEN_TOUCH_SECONDS = 60
# The largest request body the API parses (bytes); larger ones are refused with 413.
API_MAX_BODY_BYTES = 256 * 1024
# How many calls one token may make, as "<number>/<period>" (s, min, hour or day): past it the
# API answers 429 with Retry-After until the period's window ends. Counted per token (not per
# address) in the panel's Redis, so every web worker counts the same calls. "off": no limit.
API_RATE_LIMIT = env_rate("API_RATE_LIMIT", "600/min")
# The largest audit export the API checks (POST /api/v1/audit/verify/), in bytes; it is read a
# line at a time, never whole. A larger file: `manage.py audit verify --file` on the panel's machine.
API_AUDIT_VERIFY_MAX_BYTES = 512 * 1024 * 1024
# Names for the choice sets that several of the API's components share a field name for.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "JobStatusEnum": "backups.models.Backup.Status",  # a backup's, and an incident step's (the same three)
    "RestoreStatusEnum": "backups.models.Restore.Status",
    "SandboxStatusEnum": "sandboxes.models.Sandbox.Status",
    "IncidentStepEnum": "incidents.models.Incident.Step",
    "IncidentNextStepEnum": "api.serializers_incidents.STEPS",
    "BackupKindEnum": "backups.models.Backup.Kind",
    "AgentEventKindEnum": "agents.models.AgentEvent.Kind",
}

# A followed log (GET /api/v1/sandboxes/<id>/logs/?follow=1) holds a page process (a gunicorn
# sync worker) for up to five minutes: without a cap, one viewer opening a few of them would
# take every worker and the pages with them. At most this many at once per user, and this many
# in all (half the page processes by default, so that pages are always served); more is a 429.
# The slots are lock files in API_LOG_FOLLOW_DIR (a lock goes with the process that held it).
API_LOG_FOLLOWS_PER_USER = env_int("API_LOG_FOLLOWS_PER_USER", 2, minimum=1)
API_LOG_FOLLOWS_TOTAL = env_int(
    "API_LOG_FOLLOWS_TOTAL", max(1, int(os.environ.get("PANEL_WEB_WORKERS", min(8, 2 * (os.cpu_count() or 1)))) // 2), minimum=1
)
API_LOG_FOLLOW_DIR = env_str("API_LOG_FOLLOW_DIR", str(VAR_DIR / "log-follows"))
