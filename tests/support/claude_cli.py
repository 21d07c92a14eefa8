"""Running the real Claude Code CLI headless in a container, against the stand-in Messages API
(tests/support/messages_api.py), with a recorder of its OpenTelemetry export on the container's
own loopback. What works with Claude Code 2.1.x:

    claude -p PROMPT --output-format json --permission-mode bypassPermissions

with ANTHROPIC_BASE_URL=https://<stand-in>:<port>, ANTHROPIC_API_KEY in the environment, and
NODE_EXTRA_CA_CERTS naming the stand-in's CA inside the container. See
tests/support/otel_samples/README.md for what the export holds.
"""

import json
import subprocess
import time

from tests.support.docker import docker_cli

IMAGE = "ccpanel/claude-code:latest"
WORKDIR = "/workspace/Projects"
CA_PATH = "/tmp/e2e-ca.pem"
OTEL_DIR = "/tmp/otel"
PROMPT = "Run the scripted task"
FLAGS = ("--output-format", "json", "--permission-mode", "bypassPermissions")

# OTLP over HTTP/JSON to the recorder; OTEL_LOG_TOOL_DETAILS puts the Bash command and the
# edited file's path into tool_decision/tool_result events (without it they are not there).
OTEL_ENV = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
    "OTEL_LOG_TOOL_DETAILS": "1",
    "OTEL_LOGS_EXPORT_INTERVAL": "500",
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
}

# Every POST as one JSON line {path, body}; answers {} as a collector would.
RECORDER = """
const http = require('http'), fs = require('fs'), dir = process.argv[1];
fs.mkdirSync(dir, {recursive: true});
http.createServer((req, res) => { let b = ''; req.on('data', c => b += c); req.on('end', () => {
  fs.appendFileSync(dir + '/requests.jsonl', JSON.stringify({path: req.url, body: b}) + '\\n');
  res.writeHead(200, {'Content-Type': 'application/json'}); res.end('{}'); }); }).listen(4318, '127.0.0.1');
"""
PROBE = "require('net').connect(4318, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"


def put_file(container_id: str, path: str, data: bytes) -> None:
    """A file written inside the container by its own user (works with a read-only root: /tmp)."""
    subprocess.run(["docker", "exec", "-i", container_id, "sh", "-c", f"cat > {path}"], input=data, check=True, capture_output=True)


def claude_env(base_url: str, *, api_key: str | None = None, telemetry: bool = True) -> dict[str, str]:
    env = {"ANTHROPIC_BASE_URL": base_url, "NODE_EXTRA_CA_CERTS": CA_PATH}
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    return {**env, **(OTEL_ENV if telemetry else {})}


def start_recorder(container_id: str) -> None:
    docker_cli("exec", "-d", container_id, "node", "-e", RECORDER, OTEL_DIR)
    deadline = time.monotonic() + 10
    while docker_cli("exec", container_id, "node", "-e", PROBE, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the OTLP recorder in the container did not start"
        time.sleep(0.1)


def run_claude(container_id: str, env: dict[str, str], *, prompt: str = PROMPT, flags: tuple[str, ...] = FLAGS) -> dict:
    """One headless run; returns its JSON result (with `seconds`, the run's wall time, added)."""
    args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    started = time.monotonic()
    done = docker_cli("exec", "-w", WORKDIR, *args, container_id, "timeout", "120", "claude", "-p", prompt, *flags, check=False)
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    result["seconds"] = time.monotonic() - started
    return result


def recorded(container_id: str) -> list[dict]:
    """The OTLP requests the recorder got: [{path, body (parsed)}]."""
    out = docker_cli("exec", container_id, "cat", f"{OTEL_DIR}/requests.jsonl", check=False).stdout
    return [dict(r, body=json.loads(r["body"])) for r in map(json.loads, out.splitlines()) if r.get("body")]


def _value(any_value: dict):
    (kind, value), *_ = any_value.items()
    return [_value(v) for v in value.get("values", [])] if kind == "arrayValue" else value


def events(container_id: str, *, wait_for: str = "", seconds: float = 10) -> list[dict]:
    """The log events exported so far, flattened to {"name": ..., **attributes}; waits up to
    `seconds` for an event named `wait_for` (the CLI sends its last batch as it exits)."""
    deadline = time.monotonic() + seconds
    while True:
        found = [
            {"name": record["body"]["stringValue"], **{a["key"]: _value(a["value"]) for a in record["attributes"]}}
            for request in recorded(container_id)
            if request["path"] == "/v1/logs"
            for resource in request["body"].get("resourceLogs", [])
            for scope in resource.get("scopeLogs", [])
            for record in scope.get("logRecords", [])
        ]
        if not wait_for or any(e["name"] == wait_for for e in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
