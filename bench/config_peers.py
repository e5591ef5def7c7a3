"""The peer side of ``bench/config.py``: etcd's Watch API, spoken over raw gRPC from Python.

Theory of operation: the cluster is ``bench/replication_peers.py``'s :class:`EtcdCluster` (three
members on loopback, Debian's ``etcd-server``, started and stopped there). This module adds what
a configuration store's users do with etcd besides ``Put``: watch a prefix. A watcher here is
what etcd's Go client (clientv3) makes of ``Watch(ctx, prefix, WithPrefix())``: clientv3 keeps one
gRPC stream ``/etcdserverpb.Watch/Watch`` per client and context and multiplexes every watch
opened through it on that stream, each under its own ``watch_id`` (``watchGrpcStream`` in
clientv3's ``watch.go``). :class:`EtcdWatchers` does the same by default (``streams="shared"``:
one stream, N watch ids); ``streams="per-watcher"`` opens one stream per watch instead, as N
separate clients would. The stream is read by one thread per stream, which decodes every
``WatchResponse`` and hands its events to the bench's callback with the time it decoded them:
the moment a clientv3 user's ``range wch`` loop would see them.

etcd answers each create request with a response ``created=true`` carrying the new watch id, in
the order the requests were sent (the server's ``recvLoop`` handles one stream's requests in
order), so the i-th created response names the i-th watch. Events of one watch come in revision
order; etcd may pack several revisions into one response when a watcher lags (its
``watchableStore`` moves a slow watcher to the unsynced set and catches it up in batches).

The messages, as protobuf (field numbers from etcd 3.4's ``rpc.proto`` and ``kv.proto``; wire
types: 0 varint, 2 length-delimited; ``tag(n, t) = varint(n << 3 | t)``)::

    WatchRequest       := tag(1,2) len WatchCreateRequest          (create_request)
                        | tag(2,2) len WatchCancelRequest          (cancel_request)
    WatchCreateRequest := [tag(1,2) len key] [tag(2,2) len range_end] [tag(3,0) start_revision]
    WatchCancelRequest := tag(1,0) watch_id
    WatchResponse      := [tag(1,2) len ResponseHeader] [tag(2,0) watch_id] [tag(3,0) created]
                          [tag(4,0) canceled] [tag(5,0) compact_revision]
                          [tag(6,2) len cancel_reason] [tag(7,0) fragment] (tag(11,2) len Event)*
    Event              := [tag(1,0) type (0 PUT, 1 DELETE)] [tag(2,2) len KeyValue]
                          [tag(3,2) len prev_kv]
    KeyValue           := [tag(1,2) len key] [tag(2,0) create_revision] [tag(3,0) mod_revision]
                          [tag(4,0) version] [tag(5,2) len value] [tag(6,0) lease]

Proto3 leaves a field at its default (0, empty) off the wire, so every field is optional on
decode and the encoders here omit defaults too. ``range_end`` for a prefix is the prefix with its
last byte below 0xff incremented and what follows dropped (clientv3's ``GetPrefixRangeEnd``);
``b"\\x00"`` means "every key from ``key`` on".
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication_peers import _GRPC_OPTIONS, _get_varint, _put_varint  # noqa: E402 - sibling bench module

__all__ = [
    "WATCH_METHOD",
    "EtcdWatchers",
    "KeyValue",
    "WatchEvent",
    "WatchResponse",
    "decode_watch_response",
    "encode_watch_cancel",
    "encode_watch_create",
    "iter_fields",
    "prefix_range_end",
]

#: The bidirectional streaming method of etcd's Watch service.
WATCH_METHOD = "/etcdserverpb.Watch/Watch"

_CREATE_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------
# Protobuf, by hand


def _tag(number: int, wire_type: int) -> bytes:
    return _put_varint(number << 3 | wire_type)


def _bytes_field(number: int, data: bytes) -> bytes:
    """A length-delimited field, or nothing for empty ``data`` (proto3 omits defaults)."""
    return _tag(number, 2) + _put_varint(len(data)) + data if data else b""


def _varint_field(number: int, value: int) -> bytes:
    """A varint field, or nothing for 0. Negative values are refused: no message here needs one."""
    if value < 0:
        raise ValueError(f"field {number}: negative value {value} (int64 sign extension not supported)")
    return _tag(number, 0) + _put_varint(value) if value else b""


def iter_fields(buf: bytes):
    """Yield ``(field number, value)`` for each field of a protobuf message, repeated ones each time.

    Varints come as ints, length-delimited fields as bytes; fixed32/fixed64 fields (none in
    etcd's watch messages) are skipped. Raises ``ValueError`` on truncated input.
    """
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _get_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _get_varint(buf, pos)
            yield number, value
        elif wire_type == 2:
            length, pos = _get_varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            yield number, buf[pos:pos + length]
            pos += length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            if pos > end:
                raise ValueError("truncated fixed-width field")
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\x00"  # all 0xff (or empty): every key from the prefix on


def encode_watch_create(key: bytes, range_end: bytes = b"", start_revision: int = 0) -> bytes:
    """A ``WatchRequest`` holding a ``WatchCreateRequest`` for ``[key, range_end)`` from ``start_revision``.

    ``range_end=b""`` watches ``key`` alone; ``start_revision=0`` starts after the current revision.
    """
    create = _bytes_field(1, key) + _bytes_field(2, range_end) + _varint_field(3, start_revision)
    return _tag(1, 2) + _put_varint(len(create)) + create


def encode_watch_cancel(watch_id: int) -> bytes:
    """A ``WatchRequest`` holding a ``WatchCancelRequest`` for ``watch_id``."""
    cancel = _varint_field(1, watch_id)
    return _tag(2, 2) + _put_varint(len(cancel)) + cancel


@dataclass(frozen=True, slots=True)
class KeyValue:
    """etcd's ``mvccpb.KeyValue``."""

    key: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """etcd's ``mvccpb.Event``: ``type`` 0 is PUT, 1 is DELETE."""

    type: int = 0
    kv: KeyValue = field(default_factory=KeyValue)
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """etcd's ``WatchResponse`` (the header reduced to its revision)."""

    revision: int = 0
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    events: tuple = ()


def _decode_kv(buf: bytes) -> KeyValue:
    f: dict = {}
    for number, value in iter_fields(buf):
        f[number] = value
    return KeyValue(f.get(1, b""), f.get(2, 0), f.get(3, 0), f.get(4, 0), f.get(5, b""), f.get(6, 0))


def _decode_event(buf: bytes) -> WatchEvent:
    kind, kv, prev = 0, KeyValue(), None
    for number, value in iter_fields(buf):
        if number == 1:
            kind = value
        elif number == 2:
            kv = _decode_kv(value)
        elif number == 3:
            prev = _decode_kv(value)
    return WatchEvent(kind, kv, prev)


def decode_watch_response(buf: bytes) -> WatchResponse:
    """Decode a ``WatchResponse`` (unknown fields are skipped, as protobuf does)."""
    f: dict = {}
    events = []
    for number, value in iter_fields(buf):
        if number == 11:
            events.append(_decode_event(value))
        else:
            f[number] = value
    revision = 0
    if 1 in f:
        for number, value in iter_fields(f[1]):
            if number == 3:
                revision = value
    return WatchResponse(revision, f.get(2, 0), bool(f.get(3, 0)), bool(f.get(4, 0)), f.get(5, 0),
                         f.get(6, b"").decode(errors="replace"), bool(f.get(7, 0)), tuple(events))


def _identity(data: bytes) -> bytes:
    return data


# ---------------------------------------------------------------------------------------------
# Watchers


class _Stream:
    """One bidirectional Watch stream: a request queue feeding gRPC, a thread reading responses."""

    def __init__(self, channel, on_response):
        self._requests: queue.Queue = queue.Queue()
        call = channel.stream_stream(WATCH_METHOD, request_serializer=_identity,
                                     response_deserializer=_identity)
        self._call = call(iter(self._requests.get, None))
        self._on_response = on_response
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="etcd-watch-stream", daemon=True)
        self._thread.start()

    def send(self, request: bytes) -> None:
        self._requests.put(request)

    def _read(self) -> None:
        import grpc

        try:
            for raw in self._call:
                # decoded before the callback's clock is read: decoding is the client's work, and a
                # clientv3 user sees the events only once they are decoded
                self._on_response(decode_watch_response(raw), self)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
        except BaseException as exc:  # noqa: BLE001 - kept and raised by EtcdWatchers.check()
            self.error = exc

    def close(self) -> None:
        self._requests.put(None)  # ends the request side (half-close)
        self._call.cancel()
        self._thread.join(_STOP_TIMEOUT_S)


class EtcdWatchers:
    """``count`` watches on the keys starting with ``prefix``, on the etcd member at ``target``.

    ``callback(index, events, t)`` runs on a stream's reader thread for every response carrying
    events, ``index`` being the watch's number (0 to count - 1), ``events`` a tuple of
    :class:`WatchEvent` and ``t`` the ``time.perf_counter()`` at which the response was decoded.
    ``streams="shared"`` (clientv3's way) puts every watch on one gRPC stream; ``"per-watcher"``
    gives each its own stream. Use as a context manager: entering returns once etcd has created
    every watch; leaving cancels the streams and closes the channel.
    """

    def __init__(self, target: str, prefix: bytes, count: int, callback, *, streams: str = "shared",
                 start_revision: int = 0):
        if streams not in ("shared", "per-watcher"):
            raise ValueError(f"streams must be 'shared' or 'per-watcher', not {streams!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self.target, self.prefix, self.count = target, prefix, count
        self.streams_mode, self.start_revision = streams, start_revision
        self._callback = callback
        self._channel = None
        self._streams: list = []
        # per stream: the watch indexes waiting for their created response, in request order
        self._pending: dict = {}
        self._index_of: dict = {}  # (stream id, watch_id) -> watch index
        self._created = threading.Semaphore(0)

    def __enter__(self) -> "EtcdWatchers":
        import grpc

        self._channel = grpc.insecure_channel(self.target, options=_GRPC_OPTIONS)
        try:
            request = encode_watch_create(self.prefix, prefix_range_end(self.prefix), self.start_revision)
            n_streams = 1 if self.streams_mode == "shared" else self.count
            for s in range(n_streams):
                stream = _Stream(self._channel, self._on_response)
                indexes = range(self.count) if self.streams_mode == "shared" else range(s, s + 1)
                self._pending[id(stream)] = list(indexes)[::-1]  # popped from the end: request order
                self._streams.append(stream)
                for _ in indexes:
                    stream.send(request)
            deadline = time.monotonic() + _CREATE_TIMEOUT_S
            for _ in range(self.count):
                if not self._created.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    self.check()
                    raise RuntimeError(f"etcd created fewer than {self.count} watches in {_CREATE_TIMEOUT_S:.0f} s")
            self.check()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _on_response(self, response: WatchResponse, stream: _Stream) -> None:
        t = time.perf_counter()
        if response.created:
            index = self._pending[id(stream)].pop()
            self._index_of[(id(stream), response.watch_id)] = index
            self._created.release()
        if response.canceled:
            raise RuntimeError(f"etcd canceled watch {response.watch_id}: {response.cancel_reason or 'no reason'}"
                               + (f" (compacted at {response.compact_revision})" if response.compact_revision else ""))
        if response.events:
            self._callback(self._index_of[(id(stream), response.watch_id)], response.events, t)

    def check(self) -> None:
        """Raise the first error a stream's reader met (a canceled watch, a broken stream)."""
        for stream in self._streams:
            if stream.error is not None:
                raise RuntimeError(f"etcd watch stream failed: {stream.error}") from stream.error

    def __exit__(self, *exc_info) -> None:
        for stream in self._streams:
            stream.close()
        self._streams = []
        if self._channel is not None:
            self._channel.close()
            self._channel = None
