"""Settings for the sandbox control panel.

Everything a user may want to change comes from the environment (see README.md,
"Configuration"); the defaults give a panel on 127.0.0.1:8000 with SQLite and the panel's own
Redis on a unix socket in var/. A value that cannot be read stops start-up with its name.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PANEL_VAR_DIR", BASE_DIR / "var")).resolve()

# Everything the panel keeps for itself (keys, the database, Redis's socket, logs) is for root
# (or whoever runs the panel) alone: var/ is 0700, the keys and the SQLite files 0600.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
VAR_DIR.chmod(0o700)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false).")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def key_file(name: str, *, nbytes: int = 48) -> str:
    """A per-installation secret kept in var/, created once, atomically and 0600.

    Written to a private temporary file first and then hard-linked into place: link() fails if
    the name exists, so two processes starting at once agree on one key and neither ever reads
    a half-written file."""
    path = VAR_DIR / name
    if not path.exists():
        tmp = VAR_DIR / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(nbytes).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or key_file("secret_key")
# The audit trail's HMAC key lives here, outside the database: someone who can write the database
# but not this file cannot forge a chain that verifies.
AUDIT_KEY_FILE = VAR_DIR / "audit_key"
# The newest head `audit verify` found intact, kept outside the database too (see audit.services).
AUDIT_ANCHOR_FILE: Path | None = VAR_DIR / "audit_anchor.json"
DEBUG = env_bool("DJANGO_DEBUG")
PANEL_PORT = env_int("PANEL_PORT", 8000)
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# The exact origins (scheme, host and port) the panel is served from: the only ones whose pages
# may open its websockets or post its forms.
PANEL_ORIGINS = [f"http://{h}:{PANEL_PORT}" for h in ("127.0.0.1", "localhost", "[::1]")]
CSRF_TRUSTED_ORIGINS = PANEL_ORIGINS

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "teams",
    "sandboxes",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlpanel.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "audit.context_processors.audit_chain",
            ],
        },
    },
]
ASGI_APPLICATION = "controlpanel.asgi.application"
WSGI_APPLICATION = None

# --- Database: SQLite by default, PostgreSQL (or any) through DATABASE_URL -----------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the Celery worker and the engine watcher write concurrently: WAL lets
    # readers go on during a write, IMMEDIATE takes the write lock up front so two writers
    # queue on `timeout` instead of failing with "database is locked" half-way. It also makes
    # every write transaction exclusive, which is what keeps the audit chain from forking here.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # Throttles failed sign-ins (per user name and per address) before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# Failed sign-ins: after AXES_FAILURE_LIMIT failures for one user name, or from one address, that
# name or address is refused for the cool-off time. Everyone reaches a local panel from
# 127.0.0.1, so the address limit is a limit for the machine; `manage.py axes_reset` lifts it.
AXES_FAILURE_LIMIT = env_int("PANEL_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("PANEL_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Without django-ipware installed, axes takes the address from REMOTE_ADDR only (no proxy headers).

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TZ", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# --- Redis: Celery broker and the Channels layer ------------------------------------------
# By default the panel runs its own Redis on a unix socket inside var/ (0700), so no other local
# user can read the queue or inject tasks into it. REDIS_URL may name another (redis:// or
# unix://path?db=N).
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{VAR_DIR / 'redis.sock'}?db=0"


def celery_broker_url(url: str) -> str:
    """Kombu spells a unix socket redis+socket:///path?virtual_host=N."""
    if not url.startswith("unix://"):
        return url
    path, _, query = url[len("unix://"):].partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    return f"redis+socket://{path}?virtual_host={params.get('db', '0')}"


PANEL_INSTANCE = os.environ.get("PANEL_INSTANCE", "default")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults socket_timeout to 5 s, shorter than the channel layer's blocking
            # 5 s BZPOPMIN: every idle websocket would be torn down (channels_redis issue #422).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": f"ccpanel-{PANEL_INSTANCE}",
        },
    }
}
CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # tasks are idempotent; a worker crash redelivers, never loses
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fail fast when Redis is down so the request can say so, rather than hang the page.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = f"ccpanel-{PANEL_INSTANCE}"
CELERY_BEAT_SCHEDULE = {
    "reconcile-sandboxes": {"task": "sandboxes.tasks.reconcile_all_task", "schedule": 30.0},
    "verify-audit-chain": {"task": "audit.tasks.audit_verify_task", "schedule": timedelta(days=1)},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Sandboxes ------------------------------------------------------------------------------
DOCKER_HOST = os.environ.get("DOCKER_HOST") or None
DOCKER_TIMEOUT = env_int("DOCKER_TIMEOUT", 60)
WORKSPACE_ROOT = Path(os.path.expanduser(os.environ.get("WORKSPACE_ROOT", "~/ClaudeCodeWorkspace"))).resolve()
# Folders extra mounts must lie inside (colon-separated). Empty by default: extra mounts are off
# until an admin names folders. Checked at start-up (sandboxes.apps): a root may not be, contain
# or lie inside a system path, a home directory or WORKSPACE_ROOT.
SANDBOX_MOUNT_ROOTS = [
    Path(p).expanduser().resolve() for p in os.environ.get("SANDBOX_MOUNT_ROOTS", "").split(":") if p.strip()
]
SANDBOX_DEFAULT_IMAGE = os.environ.get("SANDBOX_DEFAULT_IMAGE", "ccpanel/claude-code:latest")
SANDBOX_MIN_MEMORY_MB = 256
SANDBOX_DEFAULT_MEMORY_MB = env_int("SANDBOX_DEFAULT_MEMORY_MB", 8192)
SANDBOX_MAX_MEMORY_MB = env_int("SANDBOX_MAX_MEMORY_MB", 65536)
# Docker refuses more CPUs than the machine has, so 4 by default, but never more than that.
SANDBOX_MAX_CPUS = env_float("SANDBOX_MAX_CPUS", float(os.cpu_count() or 1))
SANDBOX_DEFAULT_CPUS = min(env_float("SANDBOX_DEFAULT_CPUS", 4.0), SANDBOX_MAX_CPUS)
SANDBOX_PIDS_LIMIT = env_int("SANDBOX_PIDS_LIMIT", 1024)
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = os.environ.get("SANDBOX_USER", "claude")
SANDBOX_NETWORK = os.environ.get("SANDBOX_NETWORK", "ccpanel-sandboxes")
SANDBOX_SUBNET = os.environ.get("SANDBOX_SUBNET", "172.28.0.0/24")
SANDBOX_BRIDGE = os.environ.get("SANDBOX_BRIDGE", "ccpanel0")
SANDBOX_RUNTIMES = ("runc", "runsc")
SANDBOX_STOP_TIMEOUT = env_int("SANDBOX_STOP_TIMEOUT", 10)
# A running action's worker writes a heartbeat this often; a claim whose heartbeat is older than
# SANDBOX_STALE_SECONDS (or that never started within it) has lost its worker and is queued again,
# at most SANDBOX_MAX_ATTEMPTS times before it ends in `error`.
SANDBOX_HEARTBEAT_SECONDS = env_float("SANDBOX_HEARTBEAT_SECONDS", 5.0)
SANDBOX_STALE_SECONDS = env_int("SANDBOX_STALE_SECONDS", 30)
SANDBOX_MAX_ATTEMPTS = env_int("SANDBOX_MAX_ATTEMPTS", 3)
SANDBOX_RESYNC_SECONDS = env_float("SANDBOX_RESYNC_SECONDS", 30.0)
CELERY_BEAT_SCHEDULE["reconcile-sandboxes"]["schedule"] = SANDBOX_RESYNC_SECONDS

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
