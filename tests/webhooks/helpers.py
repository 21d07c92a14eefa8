"""What the webhook tests share: a receiver on loopback that checks each signature and records
what it was sent, and a recorder of the delivery tasks the services queue."""

import datetime
import hashlib
import hmac
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: answer https

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
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
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


def certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A certificate authority of the test's own, and a server certificate it signed for `name`:
    (the CA's PEM, the server's certificate, its key)."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("ccpanel test CA", ca_key, "ccpanel test CA", ca_key, ca=True)
    cert = issue(name, key, "ccpanel test CA", ca_key, ca=False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths
