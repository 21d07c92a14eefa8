"""Settings for the sandbox control panel.

Everything a user may want to change comes from the environment (see README.md,
"Configuration"); the defaults give a panel on 127.0.0.1:8000 with SQLite and a local Redis.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PANEL_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """A per-installation key, generated once and kept in var/ (never committed)."""
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(50))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = [
    f"http://{h}:{p}" for h in ("127.0.0.1", "localhost") for p in (os.environ.get("PANEL_PORT", "8000"),)
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
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
    # queue on `timeout` instead of failing with "database is locked" half-way.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TZ", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# --- Redis: Celery broker and the Channels layer ------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults socket_timeout to 5 s, shorter than the channel layer's blocking
            # 5 s BZPOPMIN: every idle websocket would be torn down (channels_redis issue #422).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": f"ccpanel-{os.environ.get('PANEL_INSTANCE', 'default')}",
        },
    }
}
CELERY_BROKER_URL = REDIS_URL
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
CELERY_TASK_DEFAULT_QUEUE = f"ccpanel-{os.environ.get('PANEL_INSTANCE', 'default')}"
CELERY_BEAT_SCHEDULE = {
    "reconcile-sandboxes": {"task": "sandboxes.tasks.reconcile_all_task", "schedule": 30.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Sandboxes ------------------------------------------------------------------------------
PANEL_INSTANCE = os.environ.get("PANEL_INSTANCE", "default")
DOCKER_HOST = os.environ.get("DOCKER_HOST") or None
DOCKER_TIMEOUT = int(os.environ.get("DOCKER_TIMEOUT", "60"))
WORKSPACE_ROOT = Path(
    os.path.expanduser(os.environ.get("WORKSPACE_ROOT", "~/ClaudeCodeWorkspace"))
).resolve()
# Extra mounts must resolve inside one of these (colon-separated); the workspace root by default.
SANDBOX_MOUNT_ROOTS = [
    Path(p).expanduser().resolve()
    for p in os.environ.get("SANDBOX_MOUNT_ROOTS", str(WORKSPACE_ROOT)).split(":")
    if p
]
SANDBOX_DEFAULT_IMAGE = os.environ.get("SANDBOX_DEFAULT_IMAGE", "ccpanel/claude-code:latest")
SANDBOX_DEFAULT_MEMORY_MB = int(os.environ.get("SANDBOX_DEFAULT_MEMORY_MB", "8192"))
SANDBOX_MAX_MEMORY_MB = int(os.environ.get("SANDBOX_MAX_MEMORY_MB", "65536"))
# Docker refuses more CPUs than the machine has, so 4 by default, but never more than that.
SANDBOX_MAX_CPUS = float(os.environ.get("SANDBOX_MAX_CPUS", str(os.cpu_count() or 1)))
SANDBOX_DEFAULT_CPUS = min(float(os.environ.get("SANDBOX_DEFAULT_CPUS", "4")), SANDBOX_MAX_CPUS)
SANDBOX_PIDS_LIMIT = int(os.environ.get("SANDBOX_PIDS_LIMIT", "1024"))
SANDBOX_UID = 1000
SANDBOX_USER = os.environ.get("SANDBOX_USER", "claude")
SANDBOX_NETWORK = os.environ.get("SANDBOX_NETWORK", "ccpanel-sandboxes")
SANDBOX_SUBNET = os.environ.get("SANDBOX_SUBNET", "172.28.0.0/24")
SANDBOX_BRIDGE = os.environ.get("SANDBOX_BRIDGE", "ccpanel0")
SANDBOX_STOP_TIMEOUT = int(os.environ.get("SANDBOX_STOP_TIMEOUT", "10"))
# An action still pending this long after it was claimed lost its task; it is queued again.
SANDBOX_STALE_ACTION_SECONDS = int(os.environ.get("SANDBOX_STALE_ACTION_SECONDS", "900"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
