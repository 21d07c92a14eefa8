"""Listening sockets inside a container's network namespace, served from the host.

Python 3.11 has no os.setns, so libc's is called through ctypes. A thread that enters another
network namespace takes it along for every socket it makes until it leaves, so all of it happens
in one dedicated thread (`NETNS`), which enters the container's namespace, makes, binds and
listens on the socket, and goes back to the host's namespace (an fd of it is kept from the
start) before it does anything else. The socket stays bound in the container's namespace: only
the container reaches it, on its own loopback; the host's 127.0.0.1 has nothing on that port.
A thread that could not go back is fatal: the process exits rather than serve from there.
"""

import ctypes
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_HOME = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
NETNS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def namespace_of(pid: int) -> int:
    """The inode of the network namespace process `pid` is in (changes when a container restarts)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _listen(pid: int, port: int, backlog: int) -> tuple[socket.socket, int]:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        inode = os.fstat(fd).st_ino
        _setns(fd)
    finally:
        os.close(fd)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    finally:
        try:
            _setns(_HOME)
        except OSError:  # never serve anything from inside a sandbox's namespace
            log.critical("could not return to the host's network namespace", exc_info=True)
            os._exit(70)
    return sock, inode


def listen_in(pid: int, port: int, backlog: int = 64) -> tuple[socket.socket, int]:
    """A listening TCP socket on 127.0.0.1:`port` in the network namespace of process `pid`, and
    that namespace's inode. Raises OSError (the process is gone, the port is taken, no right)."""
    return NETNS.submit(_listen, pid, port, backlog).result()
