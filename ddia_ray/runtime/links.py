"""Direct links between shells: peer messages over TCP streams instead of one Ray call each.

Theory of operation
-------------------
A core's shells exchange many small packets (Raft appends and their answers,
replication streams). As Ray actor calls each costs ~0.75 ms one way on this
project's VM and a few hundred microseconds of the receiver's CPU to run the
task (measured: docs/runtime.md, "Direct peer links"), and a blocking write of
a 3-replica Raft group takes four of them. A *link* carries the same packets
over one TCP connection per ordered pair of shells, opened on first use and
kept open: a packet is one ``write`` into the connection and one read at the
far end.

What stays the same: the packet (``src`` and the encoded envelopes), the
receiving path (:meth:`NodeShell.deliver`, so the fault model, the pause and
the metrics see a link packet exactly as a Ray-delivered one), and the
semantics of a network: a packet on a connection that breaks is lost, as
over Ray when the receiver dies. Client requests and service calls stay Ray
calls (the handle convention, batching, the object store for bulk data).

**Finding a peer.** A shell that hosts a core listens on an ephemeral port on
127.0.0.1 and, when Ray's node address is another interface, on that address
too (:class:`LinkServer`). :meth:`NodeShell.endpoint` (a Ray call, so Ray's
own authentication guards it) returns both ports, the Ray node id and a
random 32-byte token. The sender connects to the loopback port when both
shells run on the same Ray node and to the node address otherwise, and opens
with ``MAGIC + token``; the listener closes any connection whose token is
wrong, so a link is as private as the Ray call that revealed it.

**While a link is not up** (being opened, refused, broken) the sender uses
Ray's ``deliver`` call, so nothing waits for a connection; a failed attempt is
retried after :data:`RETRY_S`. Switching between the two paths may reorder
packets, which every core tolerates: the fault model reorders on purpose.

**Bounded input.** A frame is ``<u32 data length, u16 src length>``, the
source node id (UTF-8) and the data. A frame longer than :data:`MAX_FRAME_BYTES`
or a source id that does not decode closes the connection (the packet is
lost, nothing else happens); the data is then decoded by the codec, whose own
bounds apply. A sender routes a packet larger than the bound through Ray
instead, whose object store suits bulk data better anyway. A connection whose
unsent bytes pass :data:`MAX_BUFFERED_BYTES` (a peer that stopped reading: it
is paused or overloaded) drops further packets until it drains, as a full
queue in a router would; the cores' retransmission repairs that.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import struct
from collections import defaultdict
from typing import Any, Awaitable, Callable

__all__ = ["LinkServer", "Links", "ClientLinks", "ReplyTooLarge", "MAGIC", "CLIENT_MAGIC", "MAX_FRAME_BYTES",
           "MAX_BUFFERED_BYTES", "RETRY_S", "FIRST_RETRY_S", "MAX_REQUESTS_IN_FLIGHT", "encode_frame"]

MAGIC = b"DDIALNK1"  # a peer link: packets one way
CLIENT_MAGIC = b"DDIACLI1"  # a client link: requests, and their replies back
TOKEN_BYTES = 32
_HEADER = struct.Struct("<IH")
_REQUEST = struct.Struct("<II")  # a client link's frame: <u32 length, u32 request id>, then the bytes
#: Requests of one client link being served at once; the next wait (Ray's actors take 1,000).
MAX_REQUESTS_IN_FLIGHT = 1000
#: The length a reply frame gives instead of a reply too large for a link: "ask again over Ray".
_TOO_LARGE = 0xFFFFFFFF


class ReplyTooLarge(Exception):
    """A reply over :data:`MAX_FRAME_BYTES` did not come over the link: make the request a Ray call.

    A signal between :class:`ClientLinks` and its caller (``runtime.client_loop``), never raised to
    a user, so it is not one of :mod:`ddia_ray.errors`.
    """
#: The largest packet a link carries; larger ones go through Ray.
MAX_FRAME_BYTES = 64 << 20
#: Unsent bytes on one connection beyond which packets are dropped until it drains.
MAX_BUFFERED_BYTES = 64 << 20
#: The longest wait after a failed connection attempt before the next (Ray carries the packets meanwhile).
RETRY_S = 1.0
#: The wait after a first failure, doubled after each further one up to :data:`RETRY_S`. A peer that
#: is still starting refuses the first attempt; a whole second of its traffic through Ray (several
#: times the CPU per packet) left a follower behind for the rest of a write burst.
FIRST_RETRY_S = 0.05
#: How long the listener waits for a new connection's token.
HELLO_TIMEOUT_S = 5.0


def encode_frame(src: bytes, data: bytes) -> bytes:
    """One frame: header, source id, data (the caller keeps ``len(data) <= MAX_FRAME_BYTES``)."""
    return _HEADER.pack(len(data), len(src)) + src + data


class LinkServer:
    """Accepts links to one shell: every peer packet goes to ``deliver(src, data)``, every client
    request to ``request(src, data)``, whose answer (None: lost, never answered) goes back."""

    def __init__(self, deliver: Callable[[str, bytes], Awaitable[None]],
                 request: Callable[[str, bytes], Awaitable[bytes | None]] | None = None):
        self._deliver = deliver
        self._request = request
        self.token = os.urandom(TOKEN_BYTES)
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.ports: dict[str, int] = {}
        self.counters: dict[str, int] = defaultdict(int)

    async def start(self, node_ip: str) -> None:
        """Listen on 127.0.0.1 and, if it is another address, on ``node_ip`` (both ephemeral ports)."""
        for host in dict.fromkeys(("127.0.0.1", node_ip)):
            try:
                server = await asyncio.start_server(self._accept, host, 0)
            except OSError:
                self.counters["listen_errors"] += 1
                continue
            self._servers.append(server)
            self.ports[host] = server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            hello = await asyncio.wait_for(reader.readexactly(len(MAGIC) + TOKEN_BYTES), HELLO_TIMEOUT_S)
            magic = hello[:len(MAGIC)]
            if magic not in (MAGIC, CLIENT_MAGIC) or not hmac.compare_digest(hello[len(MAGIC):], self.token) \
                    or (magic == CLIENT_MAGIC and self._request is None):
                self.counters["refused_links"] += 1
                return
            if magic == CLIENT_MAGIC:
                await self._serve_client(reader, writer)
                return
            self.counters["accepted_links"] += 1
            while True:
                head = await reader.readexactly(_HEADER.size)
                size, src_size = _HEADER.unpack(head)
                if size > MAX_FRAME_BYTES:
                    self.counters["oversized_frames"] += 1
                    return
                body = await reader.readexactly(src_size + size)
                try:
                    src = body[:src_size].decode()
                except UnicodeDecodeError:
                    self.counters["bad_frames"] += 1
                    return
                self.counters["frames_received"] += 1
                try:
                    await self._deliver(src, body[src_size:])
                except Exception:  # noqa: BLE001 - a packet that does not decode is lost; the frames go on
                    self.counters["bad_packets"] += 1
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass  # the peer went away (or never said hello): its connection ends here
        except asyncio.CancelledError:
            # Only close() cancels, to end a delivery that waits on a paused or halted shell. Ending
            # quietly keeps asyncio's stream callback from logging the cancellation as an error.
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A client link: ``<u16 length>`` and the client's name, then request frames; each request
        is served in a task of its own (as Ray runs an actor's calls), and its reply goes back with
        its id, in whatever order they finish."""
        request = self._request
        assert request is not None
        (size,) = struct.unpack("<H", await asyncio.wait_for(reader.readexactly(2), HELLO_TIMEOUT_S))
        try:
            src = (await asyncio.wait_for(reader.readexactly(size), HELLO_TIMEOUT_S)).decode()
        except UnicodeDecodeError:
            self.counters["bad_frames"] += 1
            return
        self.counters["accepted_client_links"] += 1
        slots = asyncio.Semaphore(MAX_REQUESTS_IN_FLIGHT)
        served: set[asyncio.Task] = set()

        async def serve(rid: int, data: bytes) -> None:
            try:
                answer = await request(src, data)
                if answer is None or writer.is_closing():
                    return
                if len(answer) > MAX_FRAME_BYTES:  # bulk data: the client asks again over Ray's object store
                    self.counters["replies_too_large"] += 1
                    writer.write(_REQUEST.pack(_TOO_LARGE, rid))
                else:
                    writer.write(_REQUEST.pack(len(answer), rid) + answer)
            finally:
                slots.release()

        try:
            while True:
                size, rid = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
                if size > MAX_FRAME_BYTES:
                    self.counters["oversized_frames"] += 1
                    return
                data = await reader.readexactly(size)
                self.counters["requests_received"] += 1
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(serve(rid, data))
                served.add(task)
                task.add_done_callback(served.discard)
        finally:
            for task in list(served):
                task.cancel()

    async def close(self) -> None:
        """Stop listening and end every accepted connection."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):  # a delivery may wait on a paused shell for ever
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


class _Link:
    __slots__ = ("writer", "pending", "opening", "retry_at", "failures")

    def __init__(self):
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future] = {}  # a client link's requests awaiting their replies
        self.opening = False
        self.retry_at = 0.0
        self.failures = 0  # connection attempts failed in a row


class _Dialer:
    """What both kinds of outgoing link share: one connection per peer, opened off the sender's
    path on first use (the caller uses Ray meanwhile), retried after a failure with a backoff from
    :data:`FIRST_RETRY_S` doubling up to :data:`RETRY_S`.

    A subclass says how it greets the listener (:meth:`_hello`) and what runs on an open
    connection (:meth:`_serve`): a peer link watches for its end, a client link reads replies.
    """

    def __init__(self, my_node: str):
        self._my_node = my_node
        self._links: dict[str, _Link] = {}
        self._tasks: set[asyncio.Task] = set()
        self.counters: dict[str, int] = defaultdict(int)

    def _hello(self, token: bytes) -> bytes:  # pragma: no cover - every dialer defines it
        raise NotImplementedError

    async def _serve(self, link: _Link, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:  # pragma: no cover - every dialer defines it
        raise NotImplementedError

    def _writer(self, key: str, endpoint: Callable[[], Awaitable[dict | None]]) -> tuple[_Link, Any]:
        """``key``'s link and its open writer, or None for the writer after starting to open one."""
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link()
        writer = link.writer
        if writer is None or writer.is_closing():
            link.writer = None
            if not link.opening and asyncio.get_running_loop().time() >= link.retry_at:
                link.opening = True
                self._spawn(self._connect(key, link, endpoint))
            return link, None
        return link, writer

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, key: str, link: _Link, endpoint: Callable[[], Awaitable[dict | None]]) -> None:
        try:
            ep = await endpoint()
            if ep is None:
                raise ConnectionError(f"{key} takes no links")
            ports = ep["ports"]
            host = "127.0.0.1" if ep["node"] == self._my_node and "127.0.0.1" in ports else ep["ip"]
            if host not in ports:
                raise ConnectionError(f"{key} listens on no address this process can reach")
            reader, writer = await asyncio.open_connection(host, ports[host])
            writer.write(self._hello(ep["token"]))
            if self._links.get(key) is link:
                link.writer = writer
                link.failures = 0
                self.counters["links_opened"] += 1
                self._spawn(self._serve(link, reader, writer))
            else:  # forgotten while we connected
                writer.close()
        except Exception:  # noqa: BLE001 - any failure: Ray carries the traffic, retry later
            self.counters["link_failures"] += 1
            link.failures += 1
            backoff = min(RETRY_S, FIRST_RETRY_S * 2 ** min(link.failures - 1, 16))
            link.retry_at = asyncio.get_running_loop().time() + backoff
        finally:
            link.opening = False

    def forget(self, key: str) -> None:
        """Close ``key``'s link (its actor died or was replaced); the next use opens a new one."""
        link = self._links.pop(key, None)
        if link is not None and link.writer is not None:
            link.writer.close()

    def up(self) -> list[str]:
        """The peers with a link up now."""
        return sorted(d for d, link in self._links.items() if link.writer is not None and not link.writer.is_closing())


class Links(_Dialer):
    """A shell's outgoing links, one per peer (see the module docstring).

    ``endpoint(dst)`` is a coroutine that answers the peer's :meth:`NodeShell.endpoint`
    (or raises); ``my_node`` is this shell's Ray node id.
    """

    def __init__(self, src: str, my_node: str, endpoint: Callable[[str], Awaitable[dict | None]]):
        super().__init__(my_node)
        self._src = src.encode()
        self._endpoint = endpoint

    def send(self, dst: str, data: bytes) -> bool:
        """Write one packet to ``dst``'s link; False when there is none up (the caller uses Ray).

        True also when the packet was dropped because the connection is congested: that is
        the network losing it, not a reason to send it a second way.
        """
        if len(data) > MAX_FRAME_BYTES:
            self.counters["oversized_via_ray"] += 1
            return False
        _, writer = self._writer(dst, lambda: self._endpoint(dst))
        if writer is None:
            return False
        if writer.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.counters["dropped_congested"] += 1
            return True
        writer.write(encode_frame(self._src, data))
        self.counters["frames_sent"] += 1
        return True

    def _hello(self, token: bytes) -> bytes:
        return MAGIC + token

    async def _serve(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close ``writer`` as soon as the peer closes: nothing ever comes back on a peer link, so a
        read returns only at its end. Without this, a half-closed connection looks open until a
        write fails, and that write's packet is lost without a word."""
        try:
            await reader.read()
        except OSError:
            pass
        writer.close()

    async def close(self) -> None:
        """Close every link and wait for the attempts under way."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for dst in list(self._links):
            self.forget(dst)


class ClientLinks(_Dialer):
    """A client's links to the shells it sends requests to, in the client's own asyncio loop.

    :meth:`request` writes a request on ``node``'s link and returns the future of its reply's
    bytes, or None when no link is up (the caller makes the Ray call, and a link opens meanwhile).
    A link that breaks fails its waiting requests with ``ConnectionError``: their outcome is
    unknown, as with a Ray call to an actor that died.
    """

    def __init__(self, name: str, my_node: str):
        super().__init__(my_node)
        self._name = struct.pack("<H", len(name.encode())) + name.encode()
        self._ids = 0

    def request(self, node: str, handle: Any, data: bytes) -> asyncio.Future | None:
        """Send ``data`` (an encoded request) to ``node``; the future of the encoded reply, or None."""
        if len(data) > MAX_FRAME_BYTES:
            return None
        link, writer = self._writer(node, handle.endpoint.remote)
        if writer is None:
            return None
        if writer.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            return None  # the node stopped reading: the Ray call queues instead
        self._ids = (self._ids + 1) & 0xFFFFFFFF
        rid = self._ids
        fut = asyncio.get_running_loop().create_future()
        pending = link.pending
        pending[rid] = fut
        fut.add_done_callback(lambda _f: pending.pop(rid, None))  # answered, timed out or failed
        writer.write(_REQUEST.pack(len(data), rid) + data)
        self.counters["requests_sent"] += 1
        return fut

    def _hello(self, token: bytes) -> bytes:
        return CLIENT_MAGIC + token + self._name

    async def _serve(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read replies and resolve their requests; at the link's end, fail what still waits."""
        try:
            while True:
                size, rid = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
                fut = link.pending.get(rid)
                if size == _TOO_LARGE:
                    if fut is not None and not fut.done():
                        fut.set_exception(ReplyTooLarge())
                    continue
                if size > MAX_FRAME_BYTES:
                    self.counters["oversized_frames"] += 1
                    return
                data = await reader.readexactly(size)
                if fut is not None and not fut.done():
                    fut.set_result(data)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
            if link.writer is writer:
                link.writer = None
            for fut in list(link.pending.values()):
                if not fut.done():
                    fut.set_exception(ConnectionError("the link broke with the request unanswered"))

    def close(self) -> None:
        """Close every link (their reader tasks end with the loop)."""
        for node in list(self._links):
            self.forget(node)


def endpoint_record(server: LinkServer, node: str, ip: str) -> dict[str, Any]:
    """What :meth:`NodeShell.endpoint` answers: the Ray node id, its address, the ports, the token."""
    return {"node": node, "ip": ip, "ports": dict(server.ports), "token": server.token}
