"""A socket relay in threads, for the tests: each connection accepted on a listening socket is
joined to a new one made by `connect` (a TCP port before the tests' PostgreSQL, a Unix socket
before the real engine). close() ends the listener and every joined connection."""

import socket
import threading
from collections.abc import Callable


class Relay:
    def __init__(self, server: socket.socket, connect: Callable[[], socket.socket], name: str = "relay"):
        self.server = server
        self.connect = connect
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.stopping = threading.Event()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name=name, daemon=True)
        self.thread.start()

    @classmethod
    def tcp(cls, address: str, port: int, target: tuple[str, int]) -> "Relay":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, port))
        return cls(server, lambda: socket.create_connection(target, timeout=10), name=f"relay-{port}")

    @classmethod
    def unix(cls, path: str, target: str) -> "Relay":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)

        def connect() -> socket.socket:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(target)
            return upstream

        return cls(server, connect, name=f"relay-{path}")

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            try:
                upstream = self.connect()
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self.lock:
                self.sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.server.close()
        with self.lock:
            for s in self.sockets:
                s.close()
            self.sockets.clear()
