"""Settings for the sandbox control panel, as `make run` serves it.

Everything a user may want to change comes from the environment (see README.md,
"Configuration"); the defaults give a panel on 127.0.0.1:8000 with SQLite and the panel's own
Redis on a unix socket in var/. A value that cannot be read stops start-up with its name.
The topics live in their own modules: queue (Redis, Celery, Channels), sandboxes, backups,
security, storage, webhooks, agents.
"""

import os
import sys
from pathlib import Path

import dj_database_url

from .agents import *  # noqa: F403
from .api import *  # noqa: F403
from .backups import *  # noqa: F403
from .env import BASE_DIR, VAR_DIR, env_int, env_str
from .queue import *  # noqa: F403
from .sandboxes import *  # noqa: F403
from .security import *  # noqa: F403
from .storage import *  # noqa: F403
from .webhooks import *  # noqa: F403

INSTALLED_APPS = [
    "daphne",
    "whitenoise.runserver_nostatic",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "teams",
    "sandboxes",
    "backups",
    "incidents",
    "audit",
    "storage",
    "hosts",
    "api",
    "webhooks",
    "agents",
]

MIDDLEWARE = [
    "controlpanel.middleware.ValidHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "teams.second_factor.SecondFactorMiddleware",
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
                "controlpanel.context_processors.panel",
            ],
        },
    },
]
ASGI_APPLICATION = "controlpanel.asgi.application"
WSGI_APPLICATION = "controlpanel.wsgi.application"

# --- Database: SQLite by default, PostgreSQL (or any) through DATABASE_URL -----------------
# A connection per request or task, except where PANEL_DB_CONN_MAX_AGE says to keep it: gunicorn's
# page workers (scripts/gunicorn.conf.py) and the Celery workers (Procfile, controlpanel.celery)
# do, as opening one (SQLite's set-up and WAL pragmas, or a PostgreSQL log-in) cost about as much
# as the dashboard's queries together. A kept connection is checked before it is used again
# (conn_health_checks).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("PANEL_DB_CONN_MAX_AGE", 0, minimum=0),
        conn_health_checks=True,
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
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # pg_stat_activity then says which of the panel's processes holds each connection.
    _process = " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]) if sys.argv else "python"
    DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = f"ccpanel {_process}"[:63]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = None  # nothing is collected: WhiteNoise serves static/ directly
# WhiteNoise serves the files straight from static/ (no collectstatic step for a local tool).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG  # noqa: F405

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # A foreign Host header gets a 400; a traceback per refused request would drown the log.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
    },
}
