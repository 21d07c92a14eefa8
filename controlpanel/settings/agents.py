"""Agent activity (the agents app): what Claude Code's OpenTelemetry export may send the panel's
receiver, and how long it is kept."""

from .env import env_float, env_int

# The receiver listens on this port of each sandbox's own loopback (127.0.0.1, inside its network
# namespace); the sandbox's OTEL_EXPORTER_OTLP_ENDPOINT names it.
AGENT_OTLP_PORT = env_int("AGENT_OTLP_PORT", 4318, minimum=1)
# One request's body (after gzip, if sent compressed), its records, and each record's attributes.
AGENT_OTLP_MAX_BODY = env_int("AGENT_OTLP_MAX_BODY", 1024 * 1024, minimum=1024)
AGENT_OTLP_MAX_RECORDS = env_int("AGENT_OTLP_MAX_RECORDS", 1000, minimum=1)
AGENT_OTLP_MAX_ATTRIBUTES = env_int("AGENT_OTLP_MAX_ATTRIBUTES", 32, minimum=1)
AGENT_OTLP_MAX_VALUE = env_int("AGENT_OTLP_MAX_VALUE", 1000, minimum=16)
# Events a second one sandbox may have recorded, in bursts of AGENT_EVENTS_BURST; a request over
# that gets 429 and records nothing (Claude Code's exporter retries it later).
AGENT_EVENTS_A_SECOND = env_float("AGENT_EVENTS_A_SECOND", 200.0, minimum=1)
AGENT_EVENTS_BURST = env_float("AGENT_EVENTS_BURST", 5000.0, minimum=1)
# Open connections to one sandbox's receiver at a time.
AGENT_OTLP_MAX_CONNECTIONS = env_int("AGENT_OTLP_MAX_CONNECTIONS", 8, minimum=1)
# Events older than this many days are deleted (agents.tasks, hourly by Celery beat), as the decision log's.
AGENT_EVENTS_KEEP_DAYS = env_int("AGENT_EVENTS_KEEP_DAYS", 30, minimum=1)
# How often the receiver checks that every running sandbox of its host has its listener (Docker's
# events make it look at once on a start or a stop).
AGENT_RECEIVER_RECONCILE_SECONDS = env_float("AGENT_RECEIVER_RECONCILE_SECONDS", 10.0, minimum=0.5)
# How often Claude Code exports (milliseconds), set in the sandbox's environment.
AGENT_OTEL_LOGS_INTERVAL_MS = env_int("AGENT_OTEL_LOGS_INTERVAL_MS", 2000, minimum=100)
AGENT_OTEL_METRICS_INTERVAL_MS = env_int("AGENT_OTEL_METRICS_INTERVAL_MS", 10000, minimum=100)
