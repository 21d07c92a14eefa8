"""Reading what Claude Code's OpenTelemetry exporter sends (OTLP over HTTP, JSON encoding) into
plain rows for AgentEvent, bounded at every step: the sender is the agent, which may send anything.

Logs: resourceLogs → scopeLogs → logRecords, each with `timeUnixNano`, a `body` and `attributes`
as a list of {key, value: AnyValue}. Claude Code names the event in the attribute `event.name`
("tool_result") and in the body ("claude_code.tool_result"). Metrics are read only to be
counted: the tokens and cost they sum are already in the api_request events.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.utils import timezone

KINDS = {"tool_result", "tool_decision", "api_request", "api_error", "user_prompt"}
PREFIX = "claude_code."
MAX_DEPTH = 4  # of an AnyValue (arrays and maps inside each other)
# The attributes kept as columns; the rest (bounded) go to `attributes`.
COLUMNS = {
    "event.name",
    "tool_name",
    "success",
    "decision",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "prompt",
    "prompt_length",
    "session.id",
    "prompt.id",
    "tool_parameters",
    "tool_input",  # the whole input (a Write's whole file): only its command or path is kept
    "prompt_text",
    "response",  # the assistant's answer: in `summary`, and only where prompts are recorded
}
RAW = {"tool_parameters", "tool_input"}  # JSON strings read whole (before shortening) for the summary
# What names the command or file of a tool call, in tool_parameters, first found wins.
SUMMARY_KEYS = (
    "full_command",
    "command",
    "bash_command",
    "file_path",
    "path",
    "notebook_path",
    "pattern",
    "url",
    "skill_name",
    "mcp_tool_name",
)


class OTLPError(ValueError):
    """The body is not OTLP JSON the panel takes; the message says why (sent back with a 400)."""


def loads(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OTLPError(f"not JSON: {exc}") from None
    except RecursionError:  # arrays in arrays past what Python's parser follows: refused, not a crash of the connection
        raise OTLPError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise OTLPError("not an OTLP JSON object")
    return data


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OTLPError(f"{where} is not a list")
    return value


def _short(text: str, limit: int | None = None) -> str:
    limit = limit or settings.AGENT_OTLP_MAX_VALUE
    return text if len(text) <= limit else text[: limit - 1] + "…"


def any_value(value: Any, depth: int = 0, limits: tuple[int, int] | None = None) -> Any:
    """An OTLP AnyValue as a plain (bounded) value: strings shortened, arrays and maps cut.
    `limits`: (attributes, characters), read from the settings once per record, not per value."""
    if not isinstance(value, dict) or depth > MAX_DEPTH:
        return None
    count, length = limits or _limits()
    if "stringValue" in value:
        text = str(value["stringValue"])
        return text if len(text) <= length else text[: length - 1] + "…"
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:  # the OTLP JSON spec sends 64-bit integers as strings; Claude Code as numbers
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return None
    if "arrayValue" in value and isinstance(value["arrayValue"], dict):
        return [any_value(v, depth + 1, (count, length)) for v in _list(value["arrayValue"].get("values"), "arrayValue")[:count]]
    if "kvlistValue" in value and isinstance(value["kvlistValue"], dict):
        return attributes(value["kvlistValue"].get("values"), depth + 1, (count, length))
    return None


def _limits() -> tuple[int, int]:
    return settings.AGENT_OTLP_MAX_ATTRIBUTES, settings.AGENT_OTLP_MAX_VALUE


def attributes(items: Any, depth: int = 0, limits: tuple[int, int] | None = None, raw: dict | None = None) -> dict[str, Any]:
    """OTLP's list of {key, value} as a dict of at most AGENT_OTLP_MAX_ATTRIBUTES entries; the
    whole strings of RAW keys (JSON the summary is read from) go to `raw` when given. The common
    case (a string) is handled here: a session's requests are mostly strings, thousands a second."""
    count, length = limits = limits or _limits()
    found: dict[str, Any] = {}
    for item in _list(items, "attributes"):
        if len(found) >= count:
            break
        if type(item) is not dict or type(key := item.get("key")) is not str:
            continue
        value = item.get("value")
        if type(value) is dict and type(text := value.get("stringValue")) is str:
            if raw is not None and key in RAW:
                raw[key] = text
            found[key[:100]] = text if len(text) <= length else text[: length - 1] + "…"
        else:
            found[key[:100]] = any_value(value, depth, limits)
    return found


def log_records(data: dict) -> list[tuple[dict, dict]]:
    """(resource attributes, record) of every log record, refused past AGENT_OTLP_MAX_RECORDS."""
    found: list[tuple[dict, dict]] = []
    for resource_logs in _list(data.get("resourceLogs"), "resourceLogs"):
        if not isinstance(resource_logs, dict):
            raise OTLPError("a resourceLogs entry is not an object")
        resource = attributes((resource_logs.get("resource") or {}).get("attributes"))
        for scope_logs in _list(resource_logs.get("scopeLogs"), "scopeLogs"):
            if not isinstance(scope_logs, dict):
                raise OTLPError("a scopeLogs entry is not an object")
            for record in _list(scope_logs.get("logRecords"), "logRecords"):
                if not isinstance(record, dict):
                    raise OTLPError("a log record is not an object")
                found.append((resource, record))
                if len(found) > settings.AGENT_OTLP_MAX_RECORDS:
                    raise OTLPError(f"more than {settings.AGENT_OTLP_MAX_RECORDS} records in one request")
    return found


def metric_points(data: dict) -> int:
    """How many data points the metrics request holds (checked for shape, not stored)."""
    count = 0
    for resource_metrics in _list(data.get("resourceMetrics"), "resourceMetrics"):
        if not isinstance(resource_metrics, dict):
            raise OTLPError("a resourceMetrics entry is not an object")
        for scope in _list(resource_metrics.get("scopeMetrics"), "scopeMetrics"):
            for metric in _list((scope or {}).get("metrics") if isinstance(scope, dict) else None, "metrics"):
                if isinstance(metric, dict):
                    for kind in ("sum", "gauge", "histogram"):
                        if isinstance(metric.get(kind), dict):
                            count += len(_list(metric[kind].get("dataPoints"), "dataPoints"))
                if count > settings.AGENT_OTLP_MAX_RECORDS * 10:
                    raise OTLPError("too many data points in one request")
    return count


def _when(record: dict) -> datetime:
    for key in ("timeUnixNano", "observedTimeUnixNano"):
        try:
            nanos = int(record.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if nanos > 0:
            try:
                at = datetime.fromtimestamp(nanos / 1e9, tz=UTC)
            except (OverflowError, OSError, ValueError):
                continue
            now = timezone.now()
            return at if abs((at - now).total_seconds()) < 86400 else now  # a clock far off: when it came
    return timezone.now()


def _count(value: Any) -> int:
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), 2**62)


def _cost(value: Any) -> Decimal:
    try:
        cost = Decimal(str(value)).quantize(Decimal("0.000001"))
    except (InvalidOperation, TypeError, ValueError):
        return Decimal(0)
    return cost if Decimal(0) <= cost < Decimal(10**8) else Decimal(0)


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _tool_summary(raw: dict) -> str:
    """The command of a Bash call, the path of a file tool's (Claude Code sends them only with
    OTEL_LOG_TOOL_DETAILS=1: in tool_parameters for Bash, in tool_input for Read/Edit/Write)."""
    for key in ("tool_parameters", "tool_input"):
        try:
            params = json.loads(raw.get(key) or "null")
        except ValueError:
            continue
        if isinstance(params, dict):
            for name in SUMMARY_KEYS:
                if params.get(name) and isinstance(params[name], str | int | float):
                    return str(params[name])
    return ""


def _summary(kind: str, name: str, raw: dict, attrs: dict, record_prompts: bool) -> str:
    if kind == "user_prompt":
        return str(attrs.get("prompt") or attrs.get("prompt_text") or "") if record_prompts else ""
    if name == "assistant_response":
        return str(attrs.get("response") or "") if record_prompts else ""
    if kind == "api_error":
        return str(attrs.get("error") or attrs.get("status_code") or "")
    found = _tool_summary(raw)
    if not found and kind == "tool_result" and attrs.get("success") in (False, "false"):
        return str(attrs.get("error") or "")
    return found


def _name(record: dict, attrs: dict) -> str:
    name = attrs.get("event.name")
    if not isinstance(name, str) or not name:
        body = any_value(record.get("body"))
        name = body if isinstance(body, str) else ""
    return name.removeprefix(PREFIX)[:100]


def event_row(resource: dict, record: dict, *, record_prompts: bool) -> dict:
    """The AgentEvent fields of one log record (no sandbox yet)."""
    raw: dict[str, str] = {}
    attrs = attributes(record.get("attributes"), raw=raw)
    name = _name(record, attrs)
    kind = name if name in KINDS else "other"
    length = attrs.get("prompt_length")
    extra = {k: v for k, v in {**resource, **attrs}.items() if k not in COLUMNS}
    return {
        "at": _when(record),
        "kind": kind,
        "name": name,
        "tool": _short(str(attrs.get("tool_name") or ""), 100),
        "summary": _short(_summary(kind, name, raw, attrs, record_prompts), 1000),
        "success": _bool(attrs.get("success")),
        "decision": _short(str(attrs.get("decision") or ""), 40),
        "model": _short(str(attrs.get("model") or ""), 100),
        "input_tokens": _count(attrs.get("input_tokens")),
        "output_tokens": _count(attrs.get("output_tokens")),
        "cache_read_tokens": _count(attrs.get("cache_read_tokens")),
        "cache_creation_tokens": _count(attrs.get("cache_creation_tokens")),
        "cost_usd": _cost(attrs.get("cost_usd")),
        "prompt_length": _count(length) if length is not None else None,
        "session_id": _short(str(attrs.get("session.id") or resource.get("session.id") or ""), 100),
        "prompt_id": _short(str(attrs.get("prompt.id") or ""), 100),
        "attributes": dict(list(extra.items())[: settings.AGENT_OTLP_MAX_ATTRIBUTES]),
    }


SECRET_MARK = "[secret]"  # noqa: S105 - what replaces a secret, not one
TEXT_FIELDS = ("attributes", "summary", "tool", "name", "decision", "model", "session_id", "prompt_id")


def _blank(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, SECRET_MARK)
        return value
    if isinstance(value, list):
        return [_blank(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _blank(v, secrets) for k, v in value.items()}
    return value


def blank_secrets(rows: list[dict], secrets: frozenset[str]) -> list[dict]:
    """The rows with every value of the sandbox's own secrets (env and file: it holds them, and an
    agent may echo one in a command or an error) replaced by "[secret]", in every text field and
    attribute: events are read by whoever sees the sandbox and exported with the audit trail."""
    if not secrets:
        return rows
    return [{k: _blank(v, secrets) if k in TEXT_FIELDS else v for k, v in row.items()} for row in rows]


def event_rows(body: bytes, *, record_prompts: bool) -> list[dict]:
    """Every event of a /v1/logs body, or OTLPError (nothing of the body is then kept)."""
    return [event_row(resource, record, record_prompts=record_prompts) for resource, record in log_records(loads(body))]
