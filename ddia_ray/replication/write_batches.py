"""What a replicated store's client packs into one request: its units, its batches, and their bounds.

Theory of operation
-------------------
Every call of a :class:`~.client.ReplicatedClient` becomes a *unit*: the operations of one
``put``, ``delete``, ``cas``, ``delete_range`` or ``write(batch)``, with the future of their
result. The client packs consecutive units that ask for the same acknowledgements into one
:class:`~.records.ReplWrite`: one log entry, whose operations apply atomically, and a unit is
never split between two. A batch is bounded by ``max_batch`` operations and ``max_batch_bytes``
bytes of keys, values and procedure arguments (:func:`ops_bytes`).

Why a bound in bytes: the Raft leader decides a whole entry in one step of its
event loop, and sends no heartbeat meanwhile. An entry of 200 event-store
appends of 100 events (2.6 MB) took the leader 80-230 ms, past the followers'
election timeout: they elected another leader, the client sent the same batch
there, and the store changed leaders every two seconds without committing it
(a livelock, seen with ``bench/events.py``'s batched appends run many times in a
row on one store; docs/replication.md). A unit larger than the bound still goes, alone.

Pure: no Ray, no I/O. The operations are checked here as they are built, so a bad one is refused
in the caller's thread with :class:`~ddia_ray.errors.InvalidArgumentError`, before it joins a batch.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from typing import Any

from ..errors import InvalidArgumentError
from ..storage.engine import WriteBatch, check_batch
from .records import DELETE, DELETE_RANGE, PUT

__all__ = ["MAX_BATCH_BYTES", "Batch", "Unit", "batch_ops", "key_bytes", "ops_bytes", "value_bytes"]

#: The default bound on the bytes one write batch packs (:func:`ops_bytes`): etcd's default
#: ``MaxSizePerMsg`` (1 MiB), which keeps a Raft leader's step for one entry well inside an
#: election timeout (see the module docstring).
MAX_BATCH_BYTES = 1 << 20

_KINDS = {"put": PUT, "delete": DELETE, "delete_range": DELETE_RANGE}


def key_bytes(key: Any) -> bytes:
    """``key`` as bytes (a str is sent as UTF-8); InvalidArgumentError for anything else."""
    if type(key) is bytes:
        return key
    if type(key) is str:
        return key.encode("utf-8")
    raise InvalidArgumentError(f"keys are bytes (or str, sent as UTF-8), got {type(key).__name__}")


def value_bytes(value: Any, what: str = "values") -> bytes:
    """``value``, which must be bytes; InvalidArgumentError (naming ``what``) for anything else."""
    if type(value) is not bytes:
        raise InvalidArgumentError(f"{what} are bytes, got {type(value).__name__}: encode structured values first "
                                   f"(ddia_ray.codec.encode gives versioned msgpack)")
    return value


def batch_ops(batch) -> tuple:
    """A :class:`~ddia_ray.storage.WriteBatch`, or ``(kind, key, value_or_end)`` tuples, as the
    ``(code, key, tail)`` operations of a :class:`~.records.ReplWrite` (bad input refused precisely)."""
    if isinstance(batch, WriteBatch):
        # Op records checked their fields when built; _submit_write's check_ops keeps out bytes
        # subclasses and reserved keys, as for the tuples below.
        cols = batch.puts()
        if cols is not None and cols[0]:  # puts only, kept as two lists: no Op record made
            return tuple(zip(itertools.repeat(PUT, len(cols[0])), *cols))
        checked = tuple([(_KINDS[op.kind], op.key, op.end if op.kind == "delete_range" else op.value)
                         for op in check_batch(batch)])
        if not checked:
            raise InvalidArgumentError("an empty batch writes nothing")
        return checked
    if isinstance(batch, (list, tuple)):
        items = list(batch)
    else:
        raise InvalidArgumentError(f"write() takes a WriteBatch or (kind, key, value) tuples, "
                                   f"got {type(batch).__name__}")
    ops = []
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3) or item[0] not in _KINDS:
            raise InvalidArgumentError(f"a batch operation is (kind, key[, value or end]) with kind in "
                                       f"{sorted(_KINDS)}, got {item!r}")
        tail = item[2] if len(item) == 3 else b""
        end_or_value = key_bytes(tail) if item[0] == "delete_range" else value_bytes(tail)
        ops.append((_KINDS[item[0]], key_bytes(item[1]), end_or_value))
    if not ops:
        raise InvalidArgumentError("an empty batch writes nothing")
    return tuple(ops)


def ops_bytes(ops: tuple) -> int:
    """The bytes of keys, values and procedure arguments that ``ops`` carry (what a batch's
    ``max_batch_bytes`` counts): the ``bytes`` fields of each operation."""
    return sum(len(x) for op in ops for x in op if isinstance(x, (bytes, bytearray)))


class Unit:
    """Operations that succeed or fail together, and the future of their result; ``puts``: how many
    puts its one ingest operation stands for (a batch of puts sent as columns), else 0; ``size``:
    a write's :func:`ops_bytes` (0 for a read, whose ``ops`` is its key)."""

    __slots__ = ("ops", "future", "deadline_s", "single", "puts", "size")

    def __init__(self, ops: Any, future: concurrent.futures.Future, deadline_s: float, single: bool,
                 puts: int = 0, size: int = 0):
        self.ops, self.future, self.deadline_s, self.single, self.puts = ops, future, deadline_s, single, puts
        self.size = size


class Batch:
    """One ReplWrite in flight (or a batch of reads), with its units; ``puts``: how many puts its
    payload carries as one ingest operation (:func:`.ingest.puts_op`), whose one result stands for all."""

    __slots__ = ("payload", "units", "target", "tries", "puts")

    def __init__(self, payload: Any, units: list, puts: int = 0):
        self.payload, self.units, self.target, self.tries, self.puts = payload, units, None, 0, puts
