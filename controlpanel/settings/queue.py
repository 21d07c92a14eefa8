"""Redis: the Celery broker and the Channels layer.

By default the panel runs its own Redis on a unix socket inside var/ (0700), so no other local
user can read the queue or put tasks in it. REDIS_URL may name another (redis:// or
unix://path?db=N)."""

from datetime import timedelta

from .env import VAR_DIR, env_bool, env_float, env_int, env_str

PANEL_INSTANCE = env_str("PANEL_INSTANCE", "default")
# The host this process serves (its Host row's name): "local" on the panel's machine; a host
# agent's var/host.env (written by `manage.py host join`) names its own and sets PANEL_HOST_AGENT.
# A worker takes a host's periodic work only for this host (hosts.queues.serves).
PANEL_HOST = env_str("PANEL_HOST", "local")
PANEL_HOST_AGENT = env_bool("PANEL_HOST_AGENT", False)
# What a join token hands a new host's agent (hosts.join): the Redis and the database it reaches
# the panel by, as that machine sees them. Unset: the Hosts page makes no token.
PANEL_AGENT_REDIS_URL = env_str("PANEL_AGENT_REDIS_URL", "")
PANEL_AGENT_DATABASE_URL = env_str("PANEL_AGENT_DATABASE_URL", "")
HOST_JOIN_TOKEN_HOURS = env_float("HOST_JOIN_TOKEN_HOURS", 24.0, minimum=0.01)
# Where `manage.py host join` writes the agent's environment (0600), and `host agent` reads it.
PANEL_AGENT_ENV_FILE = env_str("PANEL_AGENT_ENV_FILE", str(VAR_DIR / "host.env"))
REDIS_URL = env_str("REDIS_URL", f"unix://{VAR_DIR / 'redis.sock'}?db=0")


def celery_broker_url(url: str) -> str:
    """Kombu spells a unix socket redis+socket:///path?virtual_host=N. A rediss:// URL gets
    ssl_cert_reqs=required unless it says otherwise: without it kombu checks no certificate,
    and TLS would keep out no one in the middle (a host agent's Redis, hosts.join)."""
    if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
        return f"{url}{'&' if '?' in url else '?'}ssl_cert_reqs=required"
    if not url.startswith("unix://"):
        return url
    path, _, query = url[len("unix://") :].partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    return f"redis+socket://{path}?virtual_host={params.get('db', '0')}"


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
# Celery closes a worker's database connections around every task unless this is set (then only
# after this many tasks); controlpanel.celery closes them by Django's rule (CONN_MAX_AGE) instead.
CELERY_DB_REUSE_MAX = 1000
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fail fast when Redis is down so the request can say so, rather than hang the page.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Longer than the longest job may take (its hard limit), or Redis would hand a running job to a
# second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(3600, env_int("BACKUP_MAX_SECONDS", 6 * 3600, minimum=1) + 1800)}
CELERY_TASK_DEFAULT_QUEUE = f"ccpanel-{PANEL_INSTANCE}"
# Long jobs (backups, restores, verifies, imports, an incident's evidence) have a queue and a worker pool of their own:
# however many of them run, a Stop, a Start or an incident's freeze finds a free worker.
# Each host has two queues of its own, `<default>-host-<name>` (lifecycle) and `…-jobs`, read
# by that host's workers (hosts.queues). The jobs queue without a host is the panel's own: jobs
# with no sandbox (an imported archive), and those queued before hosts had queues.
CELERY_JOBS_QUEUE = f"ccpanel-{PANEL_INSTANCE}-jobs"
# Webhook deliveries have a queue and a worker of their own (the Procfile's `webhooks`): each may
# wait on a receiver for up to WEBHOOK_TOTAL_SECONDS, and a team admin chooses the receivers, so
# on the lifecycle worker a few slow ones (20 webhooks a team, five attempts each) would keep a
# Stop, a Start or an incident's freeze waiting.
CELERY_WEBHOOKS_QUEUE = f"ccpanel-{PANEL_INSTANCE}-webhooks"
PANEL_JOB_TASKS = (
    *(f"backups.tasks.{name}" for name in ("backup_task", "restore_task", "backup_verify_task", "backup_import_task")),
    "incidents.tasks.incident_job_task",  # an incident's snapshot (its evidence archive) and reset
    "incidents.tasks.incident_group_snapshot_task",  # a team freeze's snapshots, one after another
    "sandboxes.tasks.move_task",  # a move to another host: an archive written, carried and restored
    "backups.tasks.backup_stage_task",  # an agent's backup copied where the panel downloads it from
)
# One router for every task: a task about a sandbox goes to its host's queue (one query), the
# rest to the default queue. A string: Celery imports it once Django is set up.
CELERY_TASK_ROUTES = ["hosts.queues.route_task"]
# Every task has a time limit: past the soft one it stops with the reason (and releases what it
# holds), past the hard one its process is killed (and its claim is taken up again, a bounded
# number of times). Long jobs get theirs from their own caps.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("TASK_SOFT_TIME_LIMIT", 900, minimum=10)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
_JOB_SECONDS = env_int("BACKUP_MAX_SECONDS", 6 * 3600, minimum=1) + 600
CELERY_TASK_ANNOTATIONS = {
    **{route: {"soft_time_limit": _JOB_SECONDS, "time_limit": _JOB_SECONDS + 120} for route in PANEL_JOB_TASKS},
    "audit.tasks.*": {"soft_time_limit": 3600, "time_limit": 3660},
}
# How often the periodic resync runs: it also re-queues actions whose worker is gone.
SANDBOX_RESYNC_SECONDS = env_float("SANDBOX_RESYNC_SECONDS", 30.0, minimum=1)
# How often the teams' idle rules look at the running sandboxes (teams.idle): an idle sandbox is
# stopped within this long after its team's minutes have passed.
TEAM_IDLE_CHECK_SECONDS = env_float("TEAM_IDLE_CHECK_SECONDS", 60.0, minimum=5)
CELERY_BEAT_SCHEDULE = {
    "reconcile-sandboxes": {"task": "sandboxes.tasks.reconcile_all_task", "schedule": SANDBOX_RESYNC_SECONDS},
    "verify-audit-chain": {"task": "audit.tasks.audit_verify_task", "schedule": timedelta(days=1)},
    "scheduled-backups": {"task": "backups.tasks.backup_schedules_task", "schedule": 60.0},
    "security-checklists": {"task": "sandboxes.tasks.checklist_refresh_task", "schedule": 300.0},
    "team-idle-rules": {"task": "teams.tasks.idle_sweep_task", "schedule": TEAM_IDLE_CHECK_SECONDS},
    "agent-events-retention": {"task": "agents.tasks.agent_events_purge_task", "schedule": 3600.0},
    # Webhooks: deliveries whose task was lost queued again, and each host's disk quotas read.
    "webhook-deliveries": {"task": "webhooks.tasks.delivery_sweep_task", "schedule": 60.0},
    "disk-quota-watch": {"task": "webhooks.tasks.quota_watch_task", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / f"celerybeat-schedule-{PANEL_INSTANCE}")

# Django's cache stays per process (local memory: nothing the panel caches needs sharing) except
# the API's rate-limit counters, which every web worker must count together: they live in the
# panel's Redis (api.throttling; it answers 429s as one panel, and lets calls through, with a
# log line, while Redis does not answer). Short timeouts: a Redis that hangs costs a call 0.5 s.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api_throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"ccpanel-{PANEL_INSTANCE}-api",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}
