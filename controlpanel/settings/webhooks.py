"""Webhooks (the webhooks app): how deliveries are sent, retried and kept."""

from .env import env_float, env_int, env_str

# Attempts per delivery (the first one included); then it is marked failed.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 5, minimum=1)
# The wait before the n-th retry is this times 2**(n-1) (10, 20, 40, 80 s by default), at most
# WEBHOOK_RETRY_MAX_SECONDS; a 429's Retry-After is honoured up to that cap. The tests set it to 0.
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 10.0, minimum=0)
WEBHOOK_RETRY_MAX_SECONDS = env_float("WEBHOOK_RETRY_MAX_SECONDS", 3600.0, minimum=0)
# Seconds to connect, and to wait for each read of the answer; the whole attempt is cut off
# after WEBHOOK_TOTAL_SECONDS (the task's own time limit stands behind it).
WEBHOOK_CONNECT_SECONDS = env_float("WEBHOOK_CONNECT_SECONDS", 3.0, minimum=0.1)
WEBHOOK_READ_SECONDS = env_float("WEBHOOK_READ_SECONDS", 5.0, minimum=0.1)
WEBHOOK_TOTAL_SECONDS = env_float("WEBHOOK_TOTAL_SECONDS", 15.0, minimum=1)
# The certificate authorities https receivers are checked against: the system's trust store
# when empty (which holds what the host added under /usr/local/share/ca-certificates), else a
# PEM file of them.
WEBHOOK_CA_FILE = env_str("WEBHOOK_CA_FILE", "")
# At most this much of a receiver's answer is read (shown, shortened, when it refused).
WEBHOOK_RESPONSE_BYTES = 1024
# Deliveries kept per webhook (the newest): the history never grows without bound.
WEBHOOK_KEEP_DELIVERIES = env_int("WEBHOOK_KEEP_DELIVERIES", 100, minimum=1)
# A redelivery is refused (409) while the webhook has this many deliveries waiting or being sent:
# a loop of redeliveries would otherwise queue a hundred sends per webhook, each of which may wait
# WEBHOOK_TOTAL_SECONDS on the receiver, and the webhooks worker would serve no other team.
WEBHOOK_MAX_WAITING_REDELIVERIES = env_int("WEBHOOK_MAX_WAITING_REDELIVERIES", 5, minimum=1)
# Webhooks per team.
WEBHOOK_MAX_PER_TEAM = env_int("WEBHOOK_MAX_PER_TEAM", 20, minimum=1)
