"""A store double for the cache tests: the storage node's protocol over a MemoryEngine, with gates."""

from __future__ import annotations

import threading

from ddia_ray import codec
from ddia_ray.storage.engine import MemoryEngine, decode_ops


class StoreDouble:
    """Speaks the storage node's protocol over MemoryEngine; can hold reads/writes, fail, or refuse keys.

    A runtime service: the test launches it in a shell, so the caches call it exactly as they call
    a storage node.
    """

    methods = ("ping", "get_many", "write", "set", "gate", "report")

    def __init__(self, node_id: str):
        self.engine = MemoryEngine()
        self.lock = threading.Lock()
        self.requested: list[bytes] = []      # keys asked for by get_many (recorded before any gate)
        self.written: dict[bytes, int] = {}   # applied operations per key
        self.write_attempts = 0
        self.failing = False
        self.refuse_prefix: bytes | None = None
        self.reads_open = threading.Event()
        self.reads_open.set()
        self.writes_open = threading.Event()
        self.writes_open.set()

    def ping(self) -> str:
        return "double"

    def get_many(self, keys: bytes) -> bytes:
        ks = codec.decode(keys, tuple)
        with self.lock:
            self.requested.extend(ks)
        assert self.reads_open.wait(30)
        return codec.encode(tuple(self.engine.get(k) for k in ks))

    def write(self, ops: bytes) -> int:
        batch = decode_ops(ops)
        with self.lock:
            self.write_attempts += 1
        if self.failing:
            raise ConnectionError("store is down")
        if self.refuse_prefix is not None and any(op.key.startswith(self.refuse_prefix) for op in batch.ops):
            raise PermissionError("store refused the write")
        assert self.writes_open.wait(30)
        self.engine.write(batch)
        with self.lock:
            for op in batch.ops:
                self.written[op.key] = self.written.get(op.key, 0) + 1
        return len(batch)

    def set(self, name: str, value) -> None:
        setattr(self, name, value)

    def gate(self, reads: bool | None, writes: bool | None) -> None:
        for event, is_open in ((self.reads_open, reads), (self.writes_open, writes)):
            if is_open is True:
                event.set()
            elif is_open is False:
                event.clear()

    def report(self) -> dict:
        with self.lock:
            return {"requested": list(self.requested), "written": dict(self.written),
                    "write_attempts": self.write_attempts,
                    "data": dict(self.engine.scan())}
