"""What the webhook tests share: a receiver on loopback that checks each signature and records
what it was sent, and a recorder of the delivery tasks the services queue."""

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool  # the signature holds under the receiver's secret


@dataclass
class Receiver:
    """A small threaded HTTP server on 127.0.0.1. `statuses` are answered in turn (then 200);
    `secret` is what it checks signatures with; "stream" as a status answers 500 and then
    trickles a body forever."""

    statuses: list = field(default_factory=list)
    secret: str = ""
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                timestamp = self.headers.get("X-Ccpanel-Timestamp", "")
                wanted = "sha256=" + hmac.new(receiver.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                verified = bool(receiver.secret) and hmac.compare_digest(wanted, self.headers.get("X-Ccpanel-Signature", ""))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, verified))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == "stream":
                    self.send_response(500)
                    self.end_headers()
                    try:
                        while not receiver.stopping.is_set():
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                headers = {"Retry-After": "0"} if status == 429 else {}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "14")
                self.end_headers()
                self.wfile.write(b"receiver says.")

        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
