"""Direct links: a caller thread's own blocking connection to a shell, for one read at a time.

Theory of operation
-------------------
A batching client (:mod:`.client_loop`) sends every request from its loop
thread, over its client links (:class:`~.links.ClientLinks`). A caller that
blocks on one read pays for two thread hops on top of the round trip: its
request is handed to the loop thread, and the reply handed back. On this
project's VM a blocking query took 380-480 us, of which the loop thread spent
about 170 us of CPU in asyncio's machinery (tasks, futures, wake-ups), while a
blocking socket round trip on loopback takes about 90 us.

:class:`DirectLinks` gives each calling thread its own connection per shell, in
blocking mode: the caller writes the request frame and reads the reply on its
own thread. The far end is the same listener and the same protocol as a client
link (:class:`~.links.LinkServer`: ``CLIENT_MAGIC``, the token, the client's
name, then ``<u32 length, u32 request id>`` frames), so the shell serves both
alike, and nothing else changes there.

Only for requests that may be sent twice (reads): a request whose reply does
not come (a broken connection, a timeout, a reply over
:data:`~.links.MAX_FRAME_BYTES`) returns None, and the caller sends it again
by the routed path, which has the retries, the failover and the deadline. The
connection is closed then, so a late reply can never be taken for the next
request's. A shell that cannot be reached is not tried again for
:data:`~.links.RETRY_S`, so a dead member costs its callers no connection
attempt per read.

Bounded resources: a client keeps at most :data:`MAX_LINKS` direct connections. A thread that ends
leaves its connections behind (they were its own), so when the bound is reached the connections of
threads no longer alive are closed first; if it is still reached, the read takes the routed path.

Bounded input: a reply longer than :data:`~.links.MAX_FRAME_BYTES`, or whose
request id is not the one sent, closes the connection before anything is
allocated for it; the reply's bytes are then the codec's to check.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import defaultdict
from typing import Any, Callable

from . import links
from .links import _REQUEST, _TOO_LARGE, CLIENT_MAGIC

__all__ = ["DirectLinks", "MAX_LINKS"]

#: Direct connections one client keeps open at most (over all its callers' threads and shells).
MAX_LINKS = 64


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``, or ConnectionError if it ends first."""
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the shell closed the direct link")
        parts.append(chunk)
        n -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class DirectLinks:
    """A client's blocking links: one connection per (calling thread, shell), opened on first use.

    ``name`` is the client's name (the shell's ``src`` for its requests); ``my_node`` the Ray node
    id of this process, to connect on loopback to a shell on the same node; ``endpoint(handle,
    timeout_s)`` fetches a shell's endpoint record (:meth:`~.shell.NodeShell.endpoint`) with a
    blocking Ray call. Thread-safe: each thread uses its own connections, and the shared tables
    change under a lock.
    """

    def __init__(self, name: str, my_node: str, endpoint: Callable[[Any, float], dict | None]):
        encoded = name.encode()
        self._hello_tail = struct.pack("<H", len(encoded)) + encoded
        self._my_node = my_node
        self._endpoint = endpoint
        self._local = threading.local()
        self._lock = threading.Lock()
        self._endpoints: dict[str, dict] = {}  # node -> its endpoint record
        self._retry_at: dict[str, float] = {}  # node -> when to try connecting again after a failure
        self._fetching: dict[str, threading.Lock] = {}  # node -> held while its endpoint is fetched
        self._open: dict[socket.socket, threading.Thread] = {}  # every connection, and the thread it is for
        self._closed = False
        self.counters: dict[str, int] = defaultdict(int)

    def _count(self, what: str) -> None:
        with self._lock:  # callers' threads count at once: a bare += on the dict loses increments
            self.counters[what] += 1

    def request(self, node: str, handle: Any, data: bytes, timeout_s: float) -> bytes | None:
        """Send ``data`` (an encoded request that may be sent twice) to ``node`` and return the
        encoded reply; None when it did not come this way (see the module docstring)."""
        if len(data) > links.MAX_FRAME_BYTES or self._closed:
            return None
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        sock = conns.get(node)
        if sock is None:
            sock = self._connect(node, handle, timeout_s)
            if sock is None:
                return None
            conns[node] = sock
        rid = self._local.rid = (getattr(self._local, "rid", 0) + 1) & 0xFFFFFFFF
        try:
            sock.settimeout(timeout_s)
            sock.sendall(_REQUEST.pack(len(data), rid) + data)
            size, got = _REQUEST.unpack(_recv_exactly(sock, _REQUEST.size))
            if got != rid or (size > links.MAX_FRAME_BYTES and size != _TOO_LARGE):
                raise ConnectionError("a direct link's reply frame is malformed")
            if size == _TOO_LARGE:
                self._count("replies_too_large")
                return None  # bulk data: the routed path asks through Ray's object store
            reply = _recv_exactly(sock, size)
        except (OSError, ConnectionError):  # socket.timeout is an OSError
            self._drop(node, sock, conns)
            self._count("requests_lost")
            return None
        self._count("requests_sent")
        return reply

    def _connect(self, node: str, handle: Any, timeout_s: float) -> socket.socket | None:
        """A new connection to ``node``'s shell, greeted; None if it cannot be had now."""
        now = time.monotonic()
        with self._lock:
            if self._retry_at.get(node, 0.0) > now or not self._room():
                return None
            ep = self._endpoints.get(node)
            fetching = self._fetching.setdefault(node, threading.Lock())
        sock = None
        try:
            if ep is None:
                with fetching:  # threads that start together make one endpoint call, not one each
                    with self._lock:
                        ep = self._endpoints.get(node)
                        if self._retry_at.get(node, 0.0) > now:
                            return None
                    if ep is None:
                        ep = self._endpoint(handle, timeout_s)
                        if ep is None:
                            raise ConnectionError(f"{node} takes no links")
                        with self._lock:
                            self._endpoints[node] = ep
            ports = ep["ports"]
            host = "127.0.0.1" if ep["node"] == self._my_node and "127.0.0.1" in ports else ep["ip"]
            if host not in ports:
                raise ConnectionError(f"{node} listens on no address this process can reach")
            sock = socket.create_connection((host, ports[host]), timeout=timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(CLIENT_MAGIC + ep["token"] + self._hello_tail)
        except Exception:  # noqa: BLE001 - any failure: the routed path carries the request; retry later
            if sock is not None:
                sock.close()
            with self._lock:
                self._endpoints.pop(node, None)  # a restarted shell has a new port and token
                self._retry_at[node] = now + links.RETRY_S
                self.counters["link_failures"] += 1
            return None
        with self._lock:
            if self._closed:
                sock.close()
                return None
            self._endpoints[node] = ep
            self._open[sock] = threading.current_thread()
        self._count("links_opened")
        return sock

    def _room(self) -> bool:
        """Whether one more connection fits under :data:`MAX_LINKS`, after closing those of threads
        that ended (called under the lock)."""
        if len(self._open) < MAX_LINKS:
            return True
        for sock, owner in list(self._open.items()):
            if not owner.is_alive():
                del self._open[sock]
                sock.close()
                self.counters["links_of_ended_threads_closed"] += 1
        if len(self._open) < MAX_LINKS:
            return True
        self.counters["links_refused_at_bound"] += 1
        return False

    def _drop(self, node: str, sock: socket.socket, conns: dict) -> None:
        """Close a connection that failed; its shell's endpoint is fetched again on the next connect."""
        conns.pop(node, None)
        sock.close()
        with self._lock:
            self._open.pop(sock, None)
            self._endpoints.pop(node, None)

    def close(self) -> None:
        """Close every connection (a thread's next request finds its own closed and returns None)."""
        with self._lock:
            self._closed = True
            socks, self._open = list(self._open), {}
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
