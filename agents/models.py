"""What the agent in a sandbox did, as Claude Code's OpenTelemetry export told the panel's
receiver (agents.receiver): one row per event (a tool call's result, a permission decision, an
API request with its tokens and cost, a prompt), kept AGENT_EVENTS_KEEP_DAYS days."""

from django.db import models


class AgentEvent(models.Model):
    """One event of the agent in one sandbox. Everything in it came from inside the sandbox and
    is bounded on the way in (agents.otlp); `summary` is the command, the file path, the error,
    or a prompt's text where the team records prompts (teams.AgentPolicy.record_prompts)."""

    class Kind(models.TextChoices):
        TOOL_RESULT = "tool_result", "Tool call"
        TOOL_DECISION = "tool_decision", "Permission decision"
        API_REQUEST = "api_request", "API request"
        API_ERROR = "api_error", "API error"
        USER_PROMPT = "user_prompt", "Prompt"
        OTHER = "other", "Other"

    sandbox = models.ForeignKey("sandboxes.Sandbox", on_delete=models.CASCADE, related_name="agent_events")
    at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OTHER)
    name = models.CharField(max_length=100, blank=True, default="")  # the event's own name, as sent
    tool = models.CharField(max_length=100, blank=True, default="")
    summary = models.CharField(max_length=1000, blank=True, default="")
    success = models.BooleanField(null=True, blank=True)
    decision = models.CharField(max_length=40, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    prompt_length = models.PositiveIntegerField(null=True, blank=True)
    session_id = models.CharField(max_length=100, blank=True, default="")
    prompt_id = models.CharField(max_length=100, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["sandbox", "-at", "-id"], name="agentevent_sandbox_newest"),
            models.Index(fields=["sandbox", "kind", "at"], name="agentevent_sandbox_kind_at"),
            models.Index(fields=["at"], name="agentevent_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.tool} at {self.at:%Y-%m-%d %H:%M:%S}"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens


# What the API, the audit export and the incident evidence show of an event, in this order.
EVENT_FIELDS = [
    "at",
    "kind",
    "name",
    "tool",
    "summary",
    "success",
    "decision",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "prompt_length",
    "session_id",
    "prompt_id",
    "attributes",
]
