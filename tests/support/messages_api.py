"""A stand-in for Anthropic's Messages API, for driving the real Claude Code CLI in a test.

It answers over HTTPS with a certificate from a test CA of its own (`certificates`), and follows a
SCRIPT: a list of tool calls to ask for, one per turn of the main conversation, then a final text.
The turn is read from the request itself (how many tool results the conversation holds so far),
so a retried request gets the same answer. The main conversation is the request that offers
tools; any other request (a title, a quota check, a command-prefix check with a small model) gets
a short harmless text and does not move the script on.

Every request is appended to a JSON Lines file (method, path, headers, body) for the test to read.

The server itself needs only the standard library: it runs as `python3 messages_api.py serve ...`,
usually inside a network namespace (`ip netns exec`). `StandIn` starts and stops it for a test.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FINAL_TEXT = "All done: the command ran and the file is written."
SIDE_TEXT = "Scripted session"


# --- scripts --------------------------------------------------------------------------------------
def edit_script(directory: str = "/workspace/Projects") -> dict:
    """Bash writes out.txt; Read, then Edit, change it; Write creates notes.md; then a final text."""
    out = f"{directory}/out.txt"
    return {
        "steps": [
            {"name": "Bash", "input": {"command": f"echo hello-from-bash > {out}", "description": "Write out.txt"}},
            {"name": "Read", "input": {"file_path": out}},
            {"name": "Edit", "input": {"file_path": out, "old_string": "hello-from-bash", "new_string": "hello-edited"}},
            {"name": "Write", "input": {"file_path": f"{directory}/notes.md", "content": "written by the scripted agent\n"}},
        ],
        "final": FINAL_TEXT,
    }


def deny_script(target: str = "/workspace/Projects/keep.txt") -> dict:
    """Turn 1: a Bash `rm` a managed deny rule `Bash(rm:*)` must refuse; turn 2: text."""
    return {"steps": [{"name": "Bash", "input": {"command": f"rm {target}", "description": "Remove a file"}}], "final": FINAL_TEXT}


# --- answers --------------------------------------------------------------------------------------
def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


def tool_results(body: dict) -> list[dict]:
    """The tool_result blocks of a request's conversation, in order."""
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            found += [block for block in content if isinstance(block, dict) and block.get("type") == "tool_result"]
    return found


def is_main(body: dict) -> bool:
    return bool(body.get("tools"))


def answer_blocks(body: dict, script: dict) -> tuple[list[dict], str]:
    """The content blocks and stop reason for a request, following the script."""
    if not is_main(body):
        return [{"type": "text", "text": SIDE_TEXT}], "end_turn"
    step = len(tool_results(body))
    if step < len(script["steps"]):
        call = script["steps"][step]
        return [{"type": "tool_use", "id": f"toolu_e2e_{step:02d}", "name": call["name"], "input": call["input"]}], "tool_use"
    return [{"type": "text", "text": script["final"]}], "end_turn"


def usage(body: dict, blocks: list[dict]) -> dict:
    return {
        "input_tokens": _tokens(body.get("messages", [])) + _tokens(body.get("system", "")),
        "output_tokens": _tokens(blocks) + 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message(body: dict, blocks: list[dict], stop: str) -> dict:
    return {
        "id": f"msg_e2e_{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-sonnet-4-5"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage(body, blocks),
    }


def sse_events(body: dict, blocks: list[dict], stop: str) -> Iterator[tuple[str, dict]]:
    """The events of a streamed answer, as the real API sends them."""
    whole = message(body, blocks, stop)
    start = dict(whole, content=[], stop_reason=None, usage=dict(whole["usage"], output_tokens=1))
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            empty = dict(block, input={})
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": whole["usage"]["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


# --- the server -----------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, body: Any) -> None:
        entry = {"time": time.time(), "method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
        with self.server.lock, open(self.server.log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def _read(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_e2e_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record(None)
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not in the stand-in"}})

    def do_POST(self) -> None:
        body = self._read()
        self._record(body)
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens" and isinstance(body, dict):
            return self._json(200, {"input_tokens": _tokens(body.get("messages", []))})
        if path != "/v1/messages" or not isinstance(body, dict):
            return self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not in the stand-in"}})
        blocks, stop = answer_blocks(body, self.server.script)
        if not body.get("stream"):
            return self._json(200, message(body, blocks, stop))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_e2e_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        for event, data in sse_events(body, blocks, stop):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], log: str, script: dict):
        super().__init__(address, Handler)
        self.log, self.script, self.lock = log, script, threading.Lock()

    def server_bind(self) -> None:
        # HTTPServer's own looks the address up in DNS (getfqdn): slow, and traffic nobody asked for.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def serve(host: str, port: int, cert: str, key: str, log: str, script: str) -> None:
    server = StandInServer((host, port), log, json.loads(Path(script).read_text()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


# --- certificates (needs `cryptography`: the test's side, not the server's) -----------------------
def certificates(directory: Path, names: list[str], addresses: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signs for names and addresses: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccpanel e2e test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses)[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


# --- the test's handle ----------------------------------------------------------------------------
def in_netns(name: str) -> list[str]:
    """The command prefix that runs the server in network namespace `name`."""
    return ["ip", "netns", "exec", name]


def in_container_netns(container_id: str) -> list[str]:
    """The command prefix that runs the server in a container's network namespace (its loopback)."""
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container_id], capture_output=True, text=True, check=True).stdout
    return ["nsenter", "-t", pid.strip(), "-n"]


class StandIn:
    """The stand-in on host:port, started with `enter` (a command prefix from in_netns or
    in_container_netns; [] for this machine's own network).

    `base_url` is what ANTHROPIC_BASE_URL takes; `ca` the certificate NODE_EXTRA_CA_CERTS needs."""

    def __init__(self, directory: Path, host: str, port: int, script: dict, *, enter: list[str], names: tuple[str, ...] = ()):
        self.directory, self.host, self.port, self.enter, self.names = directory, host, port, enter, names
        self.ca, self.cert, self.key = certificates(directory, list(names), [host])
        self.log = directory / "requests.jsonl"
        self.script_file = directory / "script.json"
        self.script_file.write_text(json.dumps(script))
        self.log.write_text("")
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """By its first name when it has names (the client must resolve it), else by address."""
        return f"https://{(self.names or (self.host,))[0]}:{self.port}"

    def __enter__(self) -> StandIn:
        args = [
            sys.executable,
            __file__,
            "serve",
            self.host,
            str(self.port),
            str(self.cert),
            str(self.key),
            str(self.log),
            str(self.script_file),
        ]
        self.process = subprocess.Popen([*self.enter, *args], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.__exit__()
                said = self.process.stderr.read().decode() if self.process.stderr else ""
                listening = subprocess.run([*self.enter, "ss", "-ltn"], capture_output=True, text=True)
                raise RuntimeError(f"the stand-in did not start (exit {code}): {said} {listening}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        out = subprocess.run([*self.enter, "ss", "-ltnH", f"sport = :{self.port}"], capture_output=True, text=True).stdout
        return bool(out.strip())

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait()

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def main_requests(self) -> list[dict]:
        """The requests of the main conversation (those offering tools), in order."""
        return [
            r for r in self.requests() if r["path"].split("?")[0] == "/v1/messages" and isinstance(r["body"], dict) and is_main(r["body"])
        ]

    def keys_received(self) -> set[str]:
        """Every API key the stand-in was sent (x-api-key, or a bearer token)."""
        keys = set()
        for r in self.requests():
            headers = {k.lower(): v for k, v in r["headers"].items()}
            if "x-api-key" in headers:
                keys.add(headers["x-api-key"])
            if headers.get("authorization", "").lower().startswith("bearer "):
                keys.add(headers["authorization"][7:])
        return keys

    def results(self) -> list[dict]:
        """The tool results of the last main request: what the CLI said each scripted call gave."""
        main = self.main_requests()
        return tool_results(main[-1]["body"]) if main else []


def result_text(result: dict) -> str:
    content = result.get("content")
    if isinstance(content, list):
        return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))
    return str(content or "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("log")
    parser.add_argument("script")
    a = parser.parse_args()
    serve(a.host, a.port, a.cert, a.key, a.log, a.script)
