"""Who may reach the panel and how: hosts, origins, sign-in throttling, sessions, keys."""

from datetime import timedelta
from pathlib import Path

from .env import VAR_DIR, env_bool, env_int, env_str, key_file

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or key_file("secret_key")
# The audit trail's HMAC key lives here, outside the database: someone who can write the database
# but not this file cannot forge a chain that verifies.
AUDIT_KEY_FILE = VAR_DIR / "audit_key"
# The key the secrets sandboxes receive are encrypted with (sandboxes.secrets.vault), outside the database.
SECRETS_KEY_FILE = Path(env_str("SECRETS_KEY_FILE", str(VAR_DIR / "secrets_key")))
# The newest head `audit verify` found intact, kept outside the database too (see audit.services).
AUDIT_ANCHOR_FILE: Path | None = VAR_DIR / "audit_anchor.json"
DEBUG = env_bool("DJANGO_DEBUG")
# Pages are served on PANEL_PORT, websockets on PANEL_WS_PORT (both on 127.0.0.1 only).
PANEL_PORT = env_int("PANEL_PORT", 8000, minimum=1)
PANEL_WS_PORT = env_int("PANEL_WS_PORT", PANEL_PORT + 1, minimum=1)
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# The exact origins (scheme, host and port) the panel's pages are served from: the only ones
# whose pages may open its websockets or post its forms.
PANEL_ORIGINS = [f"http://{h}:{PANEL_PORT}" for h in ("127.0.0.1", "localhost", "[::1]")]
CSRF_TRUSTED_ORIGINS = PANEL_ORIGINS

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
# Without django-ipware installed, axes takes the address from REMOTE_ADDR only (no proxy headers).
AXES_FAILURE_LIMIT = env_int("PANEL_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("PANEL_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# `manage.py check --deploy` passes but for the warnings that only HTTPS can answer. The panel
# serves plain HTTP on 127.0.0.1 only (ALLOWED_HOSTS, the listening address): there is no
# network between the browser and the panel for a sniffer to sit on, so
# - W004 (HSTS) and W008 (redirect to HTTPS) would point the browser at an HTTPS server that
#   does not exist;
# - W012 and W016 (Secure cookies) would make the browser drop the session and CSRF cookies on
#   http://127.0.0.1, and no one could sign in.
# Cookies are still HttpOnly (the session) and SameSite=Lax, frames are denied, and every
# response is checked against ALLOWED_HOSTS (tests/test_web_security.py).
SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008", "security.W012", "security.W016"]
