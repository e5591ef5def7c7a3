"""The codec's limits: nesting depth, map keys, memory per input byte, and refusal of anything else.

Crash tests run in a child interpreter, so a segfault fails one test instead of killing the run,
and there in a thread with a 1 MiB C stack (``threading.stack_size(1 << 20)``), an eighth of the
main thread's.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.codec import FIELD_DEPTH_MAX, FORMAT_1, RECORD_DEPTH_MAX, decode, encode, record
from ddia_ray.errors import CodecError, CorruptRecordError, InvalidArgumentError

UNPACK_DEPTH_MAX = 1024  # msgpack's own bound for arrays and maps when unpacking
PACK_DEPTH_MAX = codec._PACK_DEPTH_MAX  # and when packing: 1024 since msgpack 1.2, 511 before
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@record("test.limits.box", version=1)
class Box:
    inner: Any = None


@record("test.limits.upgraded", version=2, upgrades={1: lambda f: {"n": f["missing"]}})
class Upgraded:
    n: int = 0


@record("test.limits.fragile", version=1)
class Fragile:
    n: int = 0

    def __post_init__(self):
        if self.n == 13:
            raise AttributeError("an unlucky number")
        if self.n == 14:
            raise MemoryError("out of memory while validating")


def boxes(depth: int, inner: Any = None) -> Any:
    """``depth`` records, each the only field of the one around it."""
    for _ in range(depth):
        inner = Box(inner)
    return inner


def tuples(depth: int, inner: Any = None) -> Any:
    """``depth`` arrays, each the only element of the one around it."""
    for _ in range(depth):
        inner = (inner,)
    return inner


def raw_boxes(depth: int, bottom: bytes = b"\xc0") -> bytes:
    """``depth`` nested record frames as a hostile writer makes them (not through encode); ``bottom`` is
    the msgpack of the innermost field."""
    data = bottom
    for _ in range(depth):
        body = msgpack.packb({"t": "test.limits.box", "v": 1, "f": {"inner": None}})
        data = msgpack.packb(msgpack.ExtType(FORMAT_1, body[:-1] + data))  # the nil field becomes the record below
    return data


def raw_record(tag: str, version: Any, fields: Any) -> bytes:
    """One record frame with whatever tag, version and fields, as a hostile writer makes it."""
    return msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": tag, "v": version, "f": fields})))


def run_isolated(body: str) -> str:
    """Run ``body`` in a fresh interpreter, in a thread with a 1 MiB stack; its stdout. A crash fails the test."""
    script = textwrap.dedent("""
        import sys, threading
        import msgpack
        sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
        from test_codec_limits import *
        def main():
        {body}
        failure = []
        def guarded():
            try:
                main()
            except BaseException as e:
                failure.append(e)
        threading.stack_size(1 << 20)
        t = threading.Thread(target=guarded)
        t.start()
        t.join()
        if failure:
            raise failure[0]
    """).format(repo=REPO, tests=os.path.join(REPO, "tests"), body=textwrap.indent(textwrap.dedent(body), "    "))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"child exited with {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


# --- records inside records ---------------------------------------------------------------------


def test_hostile_nested_records_are_refused_in_a_small_thread_stack():
    """Nested frames, as few as 25 of which used to crash this thread, refused before the stack runs out."""
    out = run_isolated("""
        for depth in (RECORD_DEPTH_MAX + 1, 200, 3000):
            try:
                decode(raw_boxes(depth))
            except CorruptRecordError as e:
                print(depth, e)
    """)
    lines = out.splitlines()
    assert len(lines) == 3 and all(f"RECORD_DEPTH_MAX={RECORD_DEPTH_MAX}" in line for line in lines), out


def test_the_deepest_records_allowed_round_trip_in_a_small_thread_stack():
    out = run_isolated("""
        value = boxes(RECORD_DEPTH_MAX, "bottom")
        assert decode(encode(value)) == value
        assert decode(raw_boxes(RECORD_DEPTH_MAX)) == boxes(RECORD_DEPTH_MAX)
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_the_deepest_value_allowed_everywhere_at_once_round_trips_in_a_small_thread_stack():
    """msgpack's levels at the top, then the most records allowed, each with the most nesting allowed."""
    out = run_isolated("""
        value = None
        for _ in range(RECORD_DEPTH_MAX):
            value = Box(tuples(FIELD_DEPTH_MAX, value))
        value = tuples(PACK_DEPTH_MAX - 1, value)
        data = encode(value)
        back = decode(data)
        hash(back)
        assert encode(back) == data
        print("ok", len(data))
    """)
    assert out.split()[0] == "ok"


def test_encoding_records_nested_too_deep_names_the_limit():
    """300 nested records used to encode and then crash on decode; now encode refuses them."""
    with pytest.raises(CodecError, match=f"RECORD_DEPTH_MAX={RECORD_DEPTH_MAX}"):
        encode(boxes(300))
    with pytest.raises(CodecError, match=f"RECORD_DEPTH_MAX={RECORD_DEPTH_MAX}"):
        encode(boxes(RECORD_DEPTH_MAX + 1))
    assert decode(encode(boxes(RECORD_DEPTH_MAX))) == boxes(RECORD_DEPTH_MAX)


def test_a_refused_encode_leaves_the_packers_usable():
    """Each record depth reuses a packer per thread; a refusal half-way must not leave one half-written."""
    expected = encode({"a": boxes(3, b"x")})
    for bad in (boxes(RECORD_DEPTH_MAX + 1), boxes(2, tuples(FIELD_DEPTH_MAX + 1)), Box({1: 2}), Box(object())):
        with pytest.raises(CodecError):
            encode(bad)
        assert encode({"a": boxes(3, b"x")}) == expected


def test_records_past_the_stack_parsed_depth_refuse_trailing_and_missing_bytes():
    """Frames deeper than the ones msgpack.unpackb parses go through an Unpacker: same refusals."""
    depth = codec._STACK_PARSE_DEPTH + 1
    for body in (msgpack.packb({"t": "test.limits.box", "v": 1, "f": {}}) + b"\xc0",  # one byte too many
                 msgpack.packb({"t": "test.limits.box", "v": 1, "f": {}})[:-1],  # one byte short
                 b""):
        data = msgpack.packb(msgpack.ExtType(FORMAT_1, body))
        for _ in range(depth - 1):
            data = msgpack.packb(msgpack.ExtType(FORMAT_1, msgpack.packb({"t": "test.limits.box", "v": 1,
                                                                          "f": {"inner": None}})[:-1] + data))
        with pytest.raises(CorruptRecordError):
            decode(data)


# --- arrays and maps ----------------------------------------------------------------------------


def test_arrays_and_maps_in_a_field_nest_up_to_the_field_limit():
    for inner in (tuples(FIELD_DEPTH_MAX), {"k": tuples(FIELD_DEPTH_MAX - 2, {"deep": b"x"})}):
        assert decode(encode(Box(inner))) == Box(inner)
    with pytest.raises(CodecError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        encode(Box(tuples(FIELD_DEPTH_MAX + 1)))
    with pytest.raises(CodecError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        encode(Box([[{"k": tuples(FIELD_DEPTH_MAX - 2)}]]))  # lists and dicts count like tuples
    with pytest.raises(CorruptRecordError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        decode(raw_record("test.limits.box", 1, {"inner": tuples(FIELD_DEPTH_MAX + 1)}))


def test_wide_levels_of_tuples_are_walked_to_the_bottom():
    """Log entries of many operations (tuples of tuples of tuples) take the walk's C-level path; what
    hides among many flat elements is still found: a deep chain, a bad map key, a tuple subclass."""
    from collections import namedtuple

    ops = tuple((0, b"k%d" % i, b"v") for i in range(500))
    entries = tuple((1, lsn, ops, 0, ("client", lsn, 0, (None,) * 500)) for lsn in range(3))
    assert decode(encode(Box(entries))) == Box(entries)
    deep = ops[:250] + (tuples(FIELD_DEPTH_MAX - 2),) + ops[250:]  # 3 levels above the chain: one too many
    with pytest.raises(CodecError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        encode(Box(((1, 2, deep),)))
    with pytest.raises(CorruptRecordError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        decode(raw_record("test.limits.box", 1, {"inner": ((1, 2, deep),)}))
    assert decode(encode(Box(((1, 2, deep[:250] + (tuples(FIELD_DEPTH_MAX - 3),)),)))) is not None
    with pytest.raises(CodecError, match="map keys must be str or bytes"):
        encode(Box((ops + ({1: b"x"},),)))
    Pair = namedtuple("Pair", "a b")  # packed as an array: a tuple subclass is walked as well
    with pytest.raises(CodecError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        encode(Box((ops + (Pair(1, tuples(FIELD_DEPTH_MAX)),),)))


def test_a_record_in_a_field_starts_its_own_count():
    value = Box(tuples(FIELD_DEPTH_MAX - 1, Box(tuples(FIELD_DEPTH_MAX - 1, Box(tuples(FIELD_DEPTH_MAX))))))
    assert decode(encode(value)) == value


def test_arrays_and_maps_outside_records_nest_up_to_msgpacks_limits():
    data = encode(tuples(PACK_DEPTH_MAX))
    assert encode(decode(data)) == data  # (== itself would exceed Python's recursion limit at this depth)
    with pytest.raises(CodecError, match=f"msgpack's {PACK_DEPTH_MAX} levels"):
        encode(tuples(PACK_DEPTH_MAX + 1))
    assert isinstance(decode(b"\x91" * UNPACK_DEPTH_MAX + b"\xc0"), tuple)
    for opener in (b"\x91", b"\x81\xa1k"):
        with pytest.raises(CorruptRecordError, match=f"msgpack's {UNPACK_DEPTH_MAX} levels"):
            decode(opener * (UNPACK_DEPTH_MAX + 1) + b"\xc0")
        with pytest.raises(CorruptRecordError):
            decode(opener * 1_000_000 + b"\xc0")


def test_deep_arrays_are_refused_in_a_small_thread_stack():
    out = run_isolated("""
        for data in (b"\\x91" * 100_000 + b"\\xc0", raw_record("test.limits.box", 1, {"inner": tuples(500)})):
            try:
                decode(data)
            except CorruptRecordError:
                print("refused")
        for value in (Box(tuples(5000)), tuples(5000), boxes(5, tuples(900))):
            try:
                encode(value)
            except CodecError:
                print("refused")
    """)
    assert out.split() == ["refused"] * 5


# --- map keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, -1, 2**64 - 1, 1.5, None, True, (1, 2)],
                         ids=["int", "negative", "uint64", "float", "nil", "bool", "array"])
def test_map_keys_other_than_str_and_bytes_are_refused(key):
    data = msgpack.packb({key: 1}, use_bin_type=True)
    with pytest.raises(CorruptRecordError, match="map keys must be str or bytes"):
        decode(data)
    with pytest.raises(CorruptRecordError, match="map keys must be str or bytes"):
        decode(raw_record("test.limits.box", 1, {"inner": {key: 1}}))
    with pytest.raises(CodecError, match="map keys must be str or bytes"):
        encode(Box({key: 1}))
    with pytest.raises(CodecError, match="map keys must be str or bytes"):
        encode(Box(({"ok": {key: 1}},)))


def test_str_and_bytes_keys_round_trip_side_by_side():
    value = {"a": 1, b"a": 2, "": (), b"": {"x": None}}
    assert decode(encode(value)) == value
    assert decode(encode(Box(value))) == Box(value)


def test_colliding_keys_are_refused_at_the_first_one():
    """4,096 tuple keys whose hashes all collide took 0.3 s to over a second; now the first key is refused."""
    m61 = (1 << 61) - 1  # CPython hashes ints modulo this prime
    alike = [k * m61 + 5 for k in range(8)]
    keys = {(alike[i % 8], alike[i // 8 % 8], alike[i // 64 % 8], alike[i // 512 % 8]) for i in range(4096)}
    data = b"\xdf" + len(keys).to_bytes(4, "big") + b"".join(msgpack.packb(k) + b"\xc0" for k in keys)
    start = time.perf_counter()
    with pytest.raises(CorruptRecordError, match="map keys"):
        decode(data)
    assert time.perf_counter() - start < 0.05


def test_our_records_with_map_fields_round_trip():
    """Vector clocks and core options are our maps; both are keyed by str."""
    from ddia_ray.clocks import VectorClock
    from ddia_ray.runtime.core import CoreSpec

    for value in (VectorClock({"n1": 3, "n2": 1}), CoreSpec("ddia_ray.demo.replica:make", {"rounds": 3})):
        assert decode(encode(value)) == value


# --- memory and time per input byte -------------------------------------------------------------


def _array(items: list[bytes]) -> bytes:
    return b"\xdd" + len(items).to_bytes(4, "big") + b"".join(items)


@pytest.mark.parametrize("data", [
    _array([b"\x80"] * 20_000),  # empty maps: the most Python memory per byte found (80 bytes)
    _array([b"\x81\xa0\xc0"] * 20_000),
    _array([b"\x91\xc0"] * 20_000),
    _array([b"\xe0"] * 20_000),  # negative ints outside CPython's cache
    _array([raw_record("test.limits.box", 1, {})] * 2_000),
    _array([raw_record("test.limits.box", 7, {"new": {}})] * 2_000),  # newer writer: unknown fields kept
    msgpack.packb("\U0001f600" + "a" * 20_000),  # one wide character makes every character 4 bytes
], ids=["empty-maps", "one-entry-maps", "one-element-arrays", "negative-ints", "records", "newer-records",
        "wide-str"])
def test_python_memory_stays_within_a_constant_factor_of_the_input(data):
    tracemalloc.start()
    try:
        value = decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value is not None
    assert peak < 100 * len(data) + 64 * 1024, f"{peak} bytes for {len(data)} input bytes"


@pytest.mark.parametrize("data", [
    b"\xdd\xff\xff\xff\xff\xc0",  # an array claiming 2**32 - 1 elements
    b"\xdf\xff\xff\xff\xff\xc0\xc0",
    b"\xdb\xff\xff\xff\xffabc",
    b"\xc6\xff\xff\xff\xffabc",
    b"\xc9\xff\xff\xff\xff\x01abc",
    raw_boxes(1, bottom=b"\xdd\xff\xff\xff\xff"),
    raw_boxes(codec._STACK_PARSE_DEPTH + 1, bottom=b"\xdd\xff\xff\xff\xff"),
], ids=["array", "map", "str", "bin", "ext", "array-in-record", "array-in-deep-record"])
def test_lengths_beyond_the_input_are_refused_before_allocating(data):
    tracemalloc.start()
    try:
        with pytest.raises(CorruptRecordError):
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # not 32 GiB: what is left is the parse stack (40 KiB) of an Unpacker per deep frame


# --- everything else is a CodecError -----------------------------------------------------------


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1", None, 2**64 - 1], ids=str)
def test_malformed_versions_are_corrupt_records(version):
    if version == 2**64 - 1:  # a far newer writer of a type that accepts newer versions: read, kept
        assert decode(raw_record("test.limits.box", version, {"inner": 1})) == Box(1)
        return
    with pytest.raises(CorruptRecordError, match="malformed"):
        decode(raw_record("test.limits.box", version, {}))


def test_a_failing_upgrade_step_is_a_corrupt_record():
    with pytest.raises(CorruptRecordError, match="upgrade step failed"):
        decode(raw_record("test.limits.upgraded", 1, {"n": 1}))  # the step reads a field v1 lacks


def test_a_validator_failing_in_any_way_is_a_corrupt_record():
    assert decode(encode(Fragile(12))) == Fragile(12)
    with pytest.raises(CorruptRecordError, match="invalid field values"):
        decode(raw_record("test.limits.fragile", 1, {"n": 13}))


def test_memory_errors_pass_through():
    """Running short of memory says nothing about the bytes: a log reader must not take it for damage."""
    with pytest.raises(MemoryError):
        decode(raw_record("test.limits.fragile", 1, {"n": 14}))

    class Hungry:
        def __lt__(self, other):
            raise MemoryError

        def __hash__(self):
            return id(self)

    with pytest.raises(MemoryError):
        encode({Hungry(), Hungry()})


def test_decoding_from_a_stack_near_the_recursion_limit_is_a_codec_error():
    data = encode(boxes(RECORD_DEPTH_MAX))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 25)
    try:
        with pytest.raises(CodecError, match="recursion depth") as caught:
            decode(data)
    finally:
        sys.setrecursionlimit(limit)
    assert not isinstance(caught.value, CorruptRecordError)  # the bytes are fine


def test_field_names_that_are_not_str_are_corrupt_records():
    with pytest.raises(CorruptRecordError):
        decode(raw_record("test.limits.box", 1, {b"inner": 1}))


def test_a_module_that_fails_to_import_is_a_codec_error(tmp_path, monkeypatch):
    (tmp_path / "ddia_limits_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    codec.register_module("brokenprefix", "ddia_limits_broken")
    try:
        with pytest.raises(CodecError, match="broken on import"):
            decode(raw_record("brokenprefix.thing", 1, {}))
    finally:
        codec._MODULES.pop("brokenprefix")


def test_decoding_imports_only_registered_modules(tmp_path):
    """A tag names a type, never a module: a prefix nobody registered imports nothing."""
    marker = tmp_path / "imported"
    (tmp_path / "ddia_limits_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    script = textwrap.dedent(f"""
        import sys
        import msgpack
        sys.path.insert(0, {str(tmp_path)!r})
        import ddia_ray.codec as c
        before = set(sys.modules)
        for tag in ("ddia_limits_evil.x", "ddia_limits_evil", "os.system", "builtins.eval"):
            frame = msgpack.packb({{"t": tag, "v": 1, "f": {{}}}})
            try:
                c.decode(msgpack.packb(msgpack.ExtType(c.FORMAT_1, frame)))
            except c.UnknownTypeError:
                print("refused")
        print(sorted(set(sys.modules) - before))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.splitlines() == ["refused"] * 4 + ["[]"]
    assert not marker.exists()


def test_encode_wraps_failures_of_the_values_themselves():
    class Unordered:
        def __lt__(self, other):
            raise KeyError("no order")

        def __hash__(self):
            return id(self)

    with pytest.raises(CodecError):
        encode({Unordered(), Unordered()})  # sorting the set fails inside msgpack's default hook
    with pytest.raises(CodecError):
        encode(Box({Unordered(), Unordered()}))


# --- properties ---------------------------------------------------------------------------------


keys = st.text(max_size=4) | st.binary(max_size=4)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=8) | st.binary(max_size=8))


def nested(depth: int) -> st.SearchStrategy:
    """Plain values whose arrays and maps nest at most ``depth`` deep."""
    if depth == 0:
        return scalars
    inner = nested(depth - 1)
    return scalars | st.lists(inner, max_size=3).map(tuple) | st.dictionaries(keys, inner, max_size=3)


def chains(depth_max: int) -> st.SearchStrategy:
    """A value wrapped in up to ``depth_max`` arrays or single-key maps: the deep end of the range."""
    def wrap(args):
        value, shells = args
        for shell in shells:
            value = (value,) if shell is None else {shell: value}
        return value
    return st.tuples(scalars, st.lists(st.none() | keys, max_size=depth_max)).map(wrap)


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, tuple):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def in_records(levels: int, value):
    """``value`` under ``levels`` records, each also holding a shallow copy beside the nested one."""
    for _ in range(levels):
        value = Box((value, {"beside": value}) if depth_of(value) < FIELD_DEPTH_MAX - 1 else value)
    return value


# 100 examples: each builds and round-trips values up to 200 levels deep (about 0.1 s apiece on 2 cores).
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=nested(4) | chains(FIELD_DEPTH_MAX) | chains(200), levels=st.integers(0, RECORD_DEPTH_MAX))
def test_plain_values_within_the_limits_round_trip(value, levels):
    data = in_records(levels, value)
    if levels and depth_of(value) > FIELD_DEPTH_MAX:
        with pytest.raises(CodecError, match="FIELD_DEPTH_MAX"):
            encode(data)
        return
    assert decode(encode(data)) == data


def _mutants():
    """Encodings of real messages to mutate: the structure arbitrary bytes rarely reach."""
    from ddia_ray.clocks import VectorClock
    from ddia_ray.consensus.raft.messages import ConfState, Entry, Message, RaftSnapshot, SnapshotMeta
    from ddia_ray.runtime.core import Envelope

    snap = RaftSnapshot(SnapshotMeta(9, 3, ConfState(("n1", "n2"), ("n3",))), b"state")
    return [encode(v) for v in (
        Envelope("n1", "n2", Message("app", "n1", "n2", 4, entries=(Entry(3, 7, data=b"x"), Entry(3, 8)))),
        (Envelope("n1", "n2", Message("snap", "n1", "n2", 4, snapshot=snap)),),
        boxes(RECORD_DEPTH_MAX - 1, {"k": tuples(FIELD_DEPTH_MAX - 1)}),
        VectorClock({"a": 1, "b": 2}),
        {"nested": [1, [2, {"deep": b"b"}]], "f": 0.5},
    )]


MUTANTS = _mutants()
SECONDS_PER_INPUT = 0.5


def _decodes_or_refuses(data: bytes) -> None:
    start = time.perf_counter()
    try:
        value = decode(data)
    except CodecError:
        pass
    else:
        try:  # what decodes re-encodes, or is refused the codec's way
            encode(value)
        except CodecError:
            pass
    assert time.perf_counter() - start < SECONDS_PER_INPUT


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_raise_a_codec_error(data):
    _decodes_or_refuses(data)


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, len(MUTANTS) - 1), edits=st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1, max_size=6))
def test_mutated_messages_decode_or_raise_a_codec_error(which, edits):
    data = bytearray(MUTANTS[which])
    for op, at, byte in edits:
        at %= len(data) + 1
        if op == "insert":
            data[at:at] = bytes([byte])
        elif at < len(data):
            if op == "flip":
                data[at] ^= 1 << (byte % 8)
            elif op == "delete":
                del data[at]
            else:
                data[at] = byte
    _decodes_or_refuses(bytes(data))


@record("test.limits.checked", version=1, fields_checked=True)
class Checked:
    """A record that validates its one field itself, so the codec skips its own walk of it."""

    items: tuple = ()

    def __post_init__(self):
        if not (isinstance(self.items, tuple) and all(type(x) is int for x in self.items)):
            raise InvalidArgumentError("items are ints")


def test_a_fields_checked_record_is_refused_by_its_own_validation_and_unknown_fields_still_walked():
    """fields_checked skips the generic walk of known fields only: their __post_init__ is the check,
    and a newer version's unknown fields (which no __post_init__ sees) are walked as before."""
    assert decode(encode(Checked((1, 2)))) == Checked((1, 2))
    with pytest.raises(InvalidArgumentError):
        Checked((tuples(FIELD_DEPTH_MAX + 1),))
    with pytest.raises(CorruptRecordError, match="items are ints"):  # __post_init__ refuses it on decode
        decode(raw_record("test.limits.checked", 1, {"items": (tuples(FIELD_DEPTH_MAX + 1),)}))
    with pytest.raises(CorruptRecordError, match=f"FIELD_DEPTH_MAX={FIELD_DEPTH_MAX}"):
        decode(raw_record("test.limits.checked", 2, {"items": (1,), "later": tuples(FIELD_DEPTH_MAX + 1)}))
    newer = decode(raw_record("test.limits.checked", 2, {"items": (1,), "later": (1, 2)}))
    assert newer == Checked((1,)) and decode(encode(newer)) == newer


def test_a_kv_batch_refuses_every_malformed_field_itself():
    """KVBatch is fields_checked: its own validation must refuse what the codec's walk refused."""
    from ddia_ray.kv.commands import KVBatch

    good = KVBatch("c", (("put", b"k", 1, b"v", None),), 0)
    assert decode(encode(good), KVBatch) == good
    for version, fields in (
            (2, {"client": "c", "ops": (("put", b"k", 1, tuples(FIELD_DEPTH_MAX + 1), None),), "acked_below": 0}),
            (2, {"client": "c", "ops": (("put", b"k", 1, {1: 2}, None),), "acked_below": 0}),
            (2, {"client": "c", "ops": (("put", "k", 1, b"v", None),), "acked_below": 0}),  # str key: v1 only
            (2, {"client": "c", "ops": (), "acked_below": tuples(FIELD_DEPTH_MAX + 1)}),
            (2, {"client": "c", "ops": (), "acked_below": -1}),
            (2, {"client": tuples(3), "ops": (), "acked_below": 0}),
            # version 1 is upgraded first; what it cannot hold is still refused
            (1, {"client": "c", "ops": (("put", "k", 1, tuples(FIELD_DEPTH_MAX + 1), None),), "acked_below": 0}),
            (1, {"client": "c", "ops": (("put", 5, 1, b"v", None),), "acked_below": 0})):
        with pytest.raises(CorruptRecordError):
            decode(raw_record("kv.batch", version, fields), KVBatch)
