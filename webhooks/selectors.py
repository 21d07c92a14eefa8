"""Reads for the webhooks page: a team's webhooks with their newest deliveries."""

from dataclasses import dataclass

from teams.models import Team

from .models import Delivery, Webhook

SHOWN_DELIVERIES = 20


@dataclass(frozen=True)
class WebhookRow:
    webhook: Webhook
    deliveries: list[Delivery]  # the newest SHOWN_DELIVERIES


def webhooks_of(team: Team) -> list[WebhookRow]:
    """A team has at most WEBHOOK_MAX_PER_TEAM webhooks: one short query for each one's newest."""
    return [
        WebhookRow(hook, list(Delivery.objects.filter(webhook=hook).order_by("-id")[:SHOWN_DELIVERIES]))
        for hook in Webhook.objects.filter(team=team).order_by("id")
    ]
