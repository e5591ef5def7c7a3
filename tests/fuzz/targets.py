"""Fuzz targets: one per byte format that crosses a trust boundary, each with its seed corpus and oracle.

Theory of operation
-------------------
A :class:`Target` builds its seed corpus once per process through the public
APIs (so the seeds are real files and payloads, never hand-written bytes),
derives one input per iteration from a ``random.Random`` and runs it through
:meth:`Target.execute`. ``execute`` returns normally when the outcome is the
right data, lets a ``ddia_ray.errors`` exception through when the input was
refused, and raises :class:`Violation` when the oracle says the outcome is
wrong (a wrong value, a silently shortened log, a rollback). The runner
classifies everything else (a foreign exception, a slow input, a dead child).

This module holds the codec and the runtime durable log; the storage engines
are in :mod:`.storage_targets`, the event store's rows and files in
:mod:`.event_targets`, the CRDT states and deltas in :mod:`.crdt_targets`; the
deliberately broken ``selftest-*`` targets prove that the harness reports each kind of failure.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Any, Callable

import fsspec
import msgpack

from ddia_ray import codec
from ddia_ray.errors import CodecError, CorruptionError, DdiaRayError, InvalidArgumentError
from ddia_ray.framing import HEADER_BYTES

from .mutate import mutate
from .oracle import LogShape, log_verdict

__all__ = ["Seed", "Target", "Violation", "SetupError", "get_target", "TARGET_NAMES", "SELFTEST_NAMES"]


class Violation(Exception):
    """The oracle's verdict: the outcome is neither the right data nor a clean refusal."""


class SetupError(Exception):
    """The seed corpus could not be built or does not read back (the harness, not the input, is wrong)."""


@dataclass(frozen=True)
class Seed:
    """One valid input: its name, its bytes, mutation hints (offsets of headers) and oracle context.

    Inputs made by a generator rather than by mutating a seed are named ``gen:<generator>``.
    """

    name: str
    data: bytes
    hints: tuple = ()
    context: Any = field(default=None, compare=False)


class Target:
    """A format under test: seeds, input generation and the oracle (see the module docstring)."""

    name = "?"
    #: ``ddia_ray.errors`` types that count as a clean refusal of a damaged input.
    allowed: tuple = (DdiaRayError,)
    #: Wall-clock bound of one input, seconds (a slower input is reported as a failure).
    input_seconds = 3.0

    def __init__(self):
        self._seeds: list | None = None
        self._trials = itertools.count()

    def seeds(self) -> list:
        """The seed corpus (built on first use)."""
        if self._seeds is None:
            self._seeds = self.build()
        return self._seeds

    def build(self) -> list:
        """Build the seed corpus through the public APIs."""
        raise NotImplementedError

    def generate(self, rng: random.Random) -> tuple[Seed, bytes, tuple]:
        """One input: ``(seed it came from, bytes, mutation descriptions)``."""
        seed = rng.choice(self.seeds())
        data, mutations = mutate(rng, seed.data, seed.hints)
        return seed, data, tuple(m.describe() for m in mutations)

    def execute(self, seed: Seed, data: bytes) -> None:
        """Run the input; return (right data), raise a ddia_ray error (refused) or :class:`Violation`."""
        raise NotImplementedError

    def scratch(self, prefix: str) -> str:
        """A fresh ``memory://`` directory for one trial (removed by :func:`drop_scratch`)."""
        return f"memory://fuzz-{prefix}-{os.getpid()}-{next(self._trials)}"


def drop_scratch(url: str) -> None:
    """Remove a trial's ``memory://`` directory (memory is bounded: trials must not accumulate)."""
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


# --- codec -------------------------------------------------------------------------------------

_M61 = (1 << 61) - 1  # CPython hashes ints modulo this prime: these ints all hash alike


def _codec_values() -> list:
    from ddia_ray.clocks import HLCTimestamp, LamportTimestamp, VectorClock
    from ddia_ray.consensus.raft.messages import (CONF_CHANGE, NOOP, ConfChange, ConfState, Entry, HardState,
                                                  LogAppend, Message, RaftSnapshot, SnapshotMeta)
    from ddia_ray.partitioning import initial_map
    from ddia_ray.replication.indexing import IndexDef, ReplIndexScan
    from ddia_ray.replication.leader_services import ReplServiceCall
    from ddia_ray.replication.ownership import OwnedRange, Ownership, ReplOwnership
    from ddia_ray.replication.leaderless_messages import LLStoreNew
    from ddia_ray.replication.records import Append, LogEntries, ReplWrite
    from ddia_ray.replication.versioned_records import V_DELETE, V_PUT, V_UPDATE, VWrite
    from ddia_ray.storage.engine import Op, OpColumns

    entries = (Entry(3, 7, data=b"set x 1"), Entry(3, 8, kind=NOOP),
               Entry(3, 9, kind=CONF_CHANGE, data=ConfChange("add_voter", "n4")),
               Entry(4, 10, data={"op": "put", "key": b"k", "vals": (1, -2, 3.5, None, True)}))
    # The replication stream's records check their own fields (codec fields_checked): mutations of
    # them must still decode or fail as CorruptRecordError, never leak another exception.
    repl = ((2, 5, ((0, b"k1", b"v1"), (1, b"k2", b""), (2, b"a", b"m")), 1, ("c1", 3, 2, (None, None, True), 77)),
            (2, 6, ((0, b"k3", b"v3"),), 0, ()))
    snap = RaftSnapshot(SnapshotMeta(9, 3, ConfState(("n1", "n2", "n3"), ("n4",))), b"\x00state" * 8)
    return [
        Message("app", "n1", "n2", 4, log_term=3, index=6, entries=entries, commit=6),
        Message("snap", "n1", "n3", 4, snapshot=snap),
        Message("vote_resp", "n2", "n1", 5, reject=True),
        HardState(4, "n1", 6), LogAppend(entries),
        LamportTimestamp(41, "n1"), HLCTimestamp(1_700_000_000_000_000_000, 3, "n2"),
        VectorClock({"n1": 3, "n2": 1, "n3": 7}),
        Op("put", b"key", b"value"), Op("delete_range", b"a", end=b"m"),
        OpColumns(bytes([0, 1, 2]), (b"a", b"b", b"c"), (b"1", b"", b"z")),
        Append(2, 4, 2, repl, 6), LogEntries(repl),
        ReplWrite(((0, b"k", b"v"), (3, b"c", None, b"old")), acks=1, client="s1", seq=4, fence=3),
        ReplOwnership(Ownership("s", 4, (OwnedRange(1, b"", b"m", 2), OwnedRange(3, b"q", None, 4, False)),
                                (IndexDef("by", "m:f", {"name": "c"}),)), 2),
        ReplIndexScan("by", b"red", b"k1", 50, 3),
        # The leaderless batch records check their fields column by column (codec fields_checked).
        VWrite(((V_PUT, b"k1", b"v1", b""), (V_DELETE, b"k2", b"", b"\x81ctx"),
                (V_UPDATE, b"c", ("incr", (2, {"by": [1, (2, 3)]})), b"")), n=3, w=1, body=False),
        LLStoreNew(7, "r1", 1_700_000_000_000_000_000, 4, (b"a", b"bb", b"c"), (b"1", b"", b"3" * 40),
                   LLStoreNew.pack_hashes(([1, 2 ** 64 - 1, 3], [4, 5, 2 ** 63]))),
        ReplServiceCall("events.groups", "ack_pull", b"\x95\xa1g\x91\x92\x00\x09\xa1c\xcd\x03\xe8\x01"),
        initial_map("hash", ("g1", "g2"), partitions=4).split(1, b"\x50" * 8),
        {"nested": [1, [2, [3, [4, {"deep": b"bytes"}]]]], "s": "uni\u00e7ode", "f": -0.5, "big": 2 ** 63,
         "neg": -(2 ** 63), "t": (True, False, None)},
        [entries[0], {"clock": VectorClock({"a": 1})}, [LamportTimestamp(1, "b")] * 3],
        list(range(200)), b"\xff" * 300, "x" * 100,
    ]


def deep_ext(depth: int) -> bytes:
    """``depth`` records nested through their fields (raft entries whose data is the next entry)."""
    inner = msgpack.packb(None)
    for _ in range(depth):
        body = msgpack.packb({"t": "raft.entry", "v": 1, "f": {"term": 0, "index": 0, "data": None}})
        body = body[:-1] + inner  # the last field value (nil) replaced by the record below
        inner = msgpack.packb(msgpack.ExtType(codec.FORMAT_1, body))
    return inner


def colliding_keys(count: int, rng: random.Random) -> bytes:
    """A map whose ``count`` 5-tuple keys all hash alike (each element is ``5 + k * (2**61 - 1)``)."""
    alike = [k * _M61 + 5 for k in range(8)]  # the 8 such ints within msgpack's uint64 range: one hash
    keys = set()
    while len(keys) < count:
        keys.add(tuple(rng.choice(alike) for _ in range(5)))
    return msgpack.packb({k: None for k in keys})


class CodecTarget(Target):
    """``codec.decode`` of mutated real payloads, deep nesting and colliding map keys."""

    name = "codec"
    allowed = (CodecError,)
    input_seconds = 0.5

    def build(self) -> list:
        out = []
        for i, value in enumerate(_codec_values()):
            data = codec.encode(value)
            out.append(Seed(f"value{i}:{type(value).__name__}", data, (0, 1, 2, 3, 5), codec.decode(data)))
        return out

    def generate(self, rng: random.Random):
        roll = rng.random()
        if roll < 0.04:
            depth = rng.choice((50, 150, 200, 300, 1000, 3000))
            return Seed("gen:deep-ext", b""), deep_ext(depth), (f"deep-ext(depth={depth})",)
        if roll < 0.07:
            depth = rng.choice((1000, 100_000, 1_000_000))
            opener = rng.choice((b"\x91", b"\x81\xa1k", b"\x92\xc0"))
            return Seed("gen:deep-array", b""), opener * depth + b"\xc0", (f"deep({opener.hex()} x {depth})",)
        if roll < 0.071:
            count = rng.choice((2000, 4000, 8000))
            return Seed("gen:colliding-keys", b""), colliding_keys(count, rng), (f"colliding-keys({count})",)
        return super().generate(rng)

    def execute(self, seed: Seed, data: bytes) -> None:
        value = codec.decode(data)
        if data == seed.data and seed.context is not None and value != seed.context:
            raise Violation(f"unchanged bytes decoded to {value!r:.200}, not {seed.context!r:.200}")
        try:  # whatever decodes must re-encode, or be refused the codec's way
            codec.encode(value)
        except CodecError:
            pass


class IngestTarget(Target):
    """``decode_ingest`` of mutated bulk-load batches (ddia_ray/replication/ingest.py): what decodes
    must be a well-formed Arrow pair that reads back in full, an unchanged batch its own rows."""

    name = "ingest"
    allowed = (InvalidArgumentError,)
    input_seconds = 0.5

    def build(self) -> list:
        from ddia_ray.replication.ingest import ingest_op

        rng = random.Random(7)
        out = []
        for i, n in enumerate((1, 2, 7, 100)):
            pairs = [(rng.randbytes(rng.randint(1, 12)), rng.randbytes(rng.randint(0, 30))) for _ in range(n)]
            op = ingest_op([k for k, _ in pairs], [v for _, v in pairs])
            width = 4 * (n + 1)  # mutation hints: the header, both offset arrays, the data
            out.append(Seed(f"batch{i}:{n}", op[2], (0, 4, 5, 9, 9 + width, 9 + 2 * width), pairs))
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.replication.ingest import decode_ingest

        rows = decode_ingest(data)
        rows.keys.validate(full=True)  # a foreign ArrowInvalid here means the checks let a bad batch in
        rows.values.validate(full=True)
        pairs = list(zip(rows.keys.to_pylist(), rows.values.to_pylist()))
        if data == seed.data and pairs != seed.context:
            raise Violation(f"an unchanged batch decoded to {pairs!r:.200}")


class ScanPageTarget(Target):
    """``read_page`` of mutated scan pages (ddia_ray/replication/arrow_pages.py: the Arrow IPC stream a
    replica answers a scan with): what reads must be whole binary key and value columns whose every
    row reads back, an unchanged page its own rows."""

    name = "scan_page"
    allowed = (CodecError,)  # CorruptRecordError is one
    input_seconds = 0.5

    def build(self) -> list:
        from ddia_ray.replication.arrow_pages import page_bytes, rows_page

        rng = random.Random(11)
        out = [Seed("empty", page_bytes([]), (), [])]
        for i, n in enumerate((1, 3, 50)):
            pairs = [(rng.randbytes(rng.randint(1, 12)), rng.randbytes(rng.randint(0, 30))) for _ in range(n)]
            data = rows_page(tuple(k for k, _ in pairs), tuple(v for _, v in pairs))
            out.append(Seed(f"page{i}:{n}", data, (0, 8, len(data) // 2, len(data) - 8), pairs))
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.replication.arrow_pages import read_page

        pairs = []
        for batch in read_page(data):
            pairs += zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())
        if not all(type(k) is bytes and type(v) is bytes for k, v in pairs):
            raise Violation(f"a page read as rows that are not bytes: {pairs!r:.200}")
        if data == seed.data and pairs != seed.context:
            raise Violation(f"an unchanged page read as {pairs!r:.200}")


class VersionsTarget(Target):
    """``decode_state`` of mutated key states (ddia_ray/replication/state_format.py: what a versioned
    replica receives, logs and stores for a key): what decodes must encode again to the same bytes
    (the Merkle trees hash them; format 2 is canonical), an unchanged state to its own value."""

    name = "versions"
    allowed = (CodecError,)  # CorruptRecordError and UnknownVersionError are
    input_seconds = 0.5

    def build(self) -> list:
        from ddia_ray.clocks import DVVSet
        from ddia_ray.replication.resolvers import Sibling
        from ddia_ray.replication.state_format import encode_state

        def sib(value, ts, node, logical=0):
            return Sibling(value, ts, node, logical)

        states = [
            DVVSet((("r1", 1, (sib(b"v" * 100, 1_700_000_000_000_000_000, "r1"),)),), ()),
            DVVSet((("r1", 3, (sib(b"a", 5, "r1", 2), sib(None, 4, "r1"))), ("r2", 1, (sib(b"", 7, "r2"),))), ()),
            DVVSet((("r1", 2, ()),), (sib(b"x", 1, ""), sib(b"y", 2, "c"))),
            DVVSet(),
        ]
        out = []
        for i, state in enumerate(states):
            data = encode_state(state)
            out.append(Seed(f"state{i}", data, (0, 1, 2, 3, len(data) // 2), state))
        out.append(Seed("format1", codec.encode(states[1]), (0, 1, 2, 3, 5), states[1]))  # what older replicas wrote
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.clocks import DVVSet
        from ddia_ray.replication.state_format import decode_state, encode_state

        state = decode_state(data)
        if data[:2] == b"\x93\x02":
            if type(state) is not DVVSet:
                raise Violation(f"format 2 decoded to a {type(state).__name__}")
            if encode_state(state) != data:
                raise Violation(f"format 2 bytes that decode are not the canonical encoding: {data!r:.200}")
        if data == seed.data and state != seed.context:
            raise Violation(f"an unchanged state decoded to {state!r:.200}")


# --- runtime durable log ------------------------------------------------------------------------


def _durable_corpus() -> list:
    from ddia_ray.consensus.raft.messages import (ConfState, Entry, HardState, LogAppend, RaftSnapshot,
                                                  SnapshotMeta)
    from ddia_ray.demo.replica import Served
    from ddia_ray.runtime.core import Rewrite

    snap = RaftSnapshot(SnapshotMeta(4, 2, ConfState(("a", "b", "c"))), b"kv-state" * 40)
    return [
        ("served", [[Served(1), Served(2), Served(3)], [Served(4), Rewrite((Served(10), Served(11))), Served(12)],
                    [Served(13), Served(14)]]),
        ("raft", [[HardState(1, "a", 0), LogAppend((Entry(1, 1, data=b"x" * 60), Entry(1, 2, data=b"y")))],
                  [HardState(2, "b", 2), LogAppend((Entry(2, 3, data={"k": (1, 2)}),))],
                  [Rewrite((HardState(2, "b", 3), snap)), LogAppend((Entry(2, 5, data=b"z" * 300),))],
                  [HardState(3, "", 5), LogAppend((Entry(3, 6),))]]),
    ]


class DurableTarget(Target):
    """``DurableLog.read_all`` of a mutated ``records.log``, then one more append and a re-read (a restart)."""

    name = "durable"
    allowed = (CodecError, CorruptionError)
    input_seconds = 1.0

    def __init__(self, reader: Callable | None = None):
        super().__init__()
        self._reader = reader or (lambda log: log.read_all())

    def build(self) -> list:
        from ddia_ray.runtime.durable import MAGIC, DurableLog, apply_records

        seeds = []
        for name, appends in _durable_corpus():
            root = self.scratch(f"seed-{name}")
            log = DurableLog(root, "n")
            for batch in appends:
                log.append(batch)
            log.close()
            expected = apply_records([], [r for batch in appends for r in batch])
            fs = log.fs
            original = fs.cat_file(f"{log.dir}/records.log")
            # The same records appended one at a time to a fresh log give each frame's exact bytes.
            ref = DurableLog(self.scratch(f"ref-{name}"), "n")
            # The file's magic is its header, not part of the first frame: spliced whole frames
            # right after it are undetectable by design and must count as data.
            sizes = [len(MAGIC) if original.startswith(MAGIC) else 0]
            for rec in expected:
                ref.append([rec])
                sizes.append(fs.size(f"{ref.dir}/records.log"))
            ref.close()
            if fs.cat_file(f"{ref.dir}/records.log") != original or log.read_all() != expected:
                raise SetupError(f"durable seed {name!r}: the rewritten log differs from its records appended anew")
            shape = LogShape.from_sizes(original, sizes, expected, frame_header_bytes=HEADER_BYTES)
            hints = tuple(o + d for o in shape.offsets() for d in (0, 4, 8))
            seeds.append(Seed(name, original, hints, shape))
            drop_scratch(root)
            drop_scratch(ref.url)
        return seeds

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.demo.replica import Served
        from ddia_ray.runtime.durable import DurableLog

        root = self.scratch("durable")
        try:
            log = DurableLog(root, "n")
            log.fs.pipe_file(f"{log.dir}/records.log", data)
            got, error = None, None
            try:
                got = self._reader(log)
            except DdiaRayError as e:
                error = e
            verdict = log_verdict(seed.context, data, got, error)
            if verdict:
                raise Violation(verdict)
            if error is not None:
                raise error
            sentinel = Served(999_999)  # the restart: append after whatever the read accepted
            log.append([sentinel])
            log.close()
            try:
                again = self._reader(DurableLog(root, "n"))
            except DdiaRayError as e:
                raise Violation(f"read {len(got)} records, then after one more append the log raised "
                                f"{type(e).__name__}: an unrecoverable restart ({e})") from e
            if list(again) != list(got) + [sentinel]:
                raise Violation(f"read {len(got)} records, appended one more, then read {len(again)} back "
                                f"(the append after the torn tail was lost or the log changed)")
        finally:
            drop_scratch(root)


# --- deliberately broken targets: the harness must report each of these -----------------------------


class _LeakyCodec(CodecTarget):
    """A decoder that forgets to translate its errors: a raw TypeError escapes."""

    name = "selftest-foreign"

    def execute(self, seed, data):
        try:
            codec.decode(data)
        except CodecError as e:
            raise TypeError(f"leaked: {e}") from None


class _CrashingCodec(CodecTarget):
    """A decoder that kills its process with SIGSEGV on the fifth input it sees."""

    name = "selftest-segfault"

    def __init__(self):
        super().__init__()
        self._inputs = 0

    def execute(self, seed, data):
        self._inputs += 1
        if self._inputs == 5:
            os.kill(os.getpid(), signal.SIGSEGV)
        codec.decode(data)


class _SlowCodec(CodecTarget):
    """A decoder that busy-waits past the per-input bound on every input."""

    name = "selftest-slow"
    input_seconds = 0.01

    def execute(self, seed, data):
        import time

        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass


class _HungryCodec(CodecTarget):
    """A decoder that tries to allocate far more memory than the child may use."""

    name = "selftest-memory"

    def execute(self, seed, data):
        bytearray(64 << 30)


def _short_log() -> DurableTarget:
    target = DurableTarget(reader=lambda log: log.read_all()[:-1])  # silently drops the last record
    target.name = "selftest-shortlog"
    return target


_FACTORIES: dict = {
    "codec": CodecTarget,
    "ingest": IngestTarget,
    "scan_page": ScanPageTarget,
    "versions": VersionsTarget,
    "durable": DurableTarget,
    "wal": lambda: _storage("WalTarget"),
    "manifest": lambda: _storage("ManifestTarget"),
    "btree": lambda: _storage("BTreeTarget"),
    "event_chunk": lambda: _events("EventChunkTarget"),
    "group_row": lambda: _events("GroupRowTarget"),
    "event_archive": lambda: _events("EventArchiveTarget"),
    "crdt_state": lambda: _crdt("CRDTStateTarget"),
    "selftest-foreign": _LeakyCodec,
    "selftest-segfault": _CrashingCodec,
    "selftest-slow": _SlowCodec,
    "selftest-memory": _HungryCodec,
    "selftest-shortlog": _short_log,
}
TARGET_NAMES = ("codec", "ingest", "scan_page", "versions", "durable", "wal", "manifest", "btree", "event_chunk",
                "group_row", "event_archive", "crdt_state")
SELFTEST_NAMES = tuple(n for n in _FACTORIES if n.startswith("selftest-"))


def _storage(cls_name: str) -> Target:
    from . import storage_targets

    return getattr(storage_targets, cls_name)()


def _events(cls_name: str) -> Target:
    from . import event_targets

    return getattr(event_targets, cls_name)()


def _crdt(cls_name: str) -> Target:
    from . import crdt_targets

    return getattr(crdt_targets, cls_name)()


def get_target(name: str) -> Target:
    """A fresh target by name (see :data:`TARGET_NAMES`)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise SystemExit(f"unknown fuzz target {name!r}; known: {sorted(_FACTORIES)}") from None
