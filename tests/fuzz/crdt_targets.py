"""Fuzz target of the CRDT states: what a replica receives as a delta or a whole state, as bytes.

Theory of operation
-------------------
A versioned store ships CRDT values as ``crdt.state`` records (ddia_ray/crdt/base.py): a delta
per write, a whole state in anti-entropy and read repair. Every kind is seeded with a whole
state, and the text CRDT also with the one-edit deltas a typing trace ships (an insert that
extends a run, one inside a run, one of another writer, a deleted range), which its
``merge_bytes`` reads by shortcuts that skip the codec's general walk
(:func:`ddia_ray.crdt.text_format.edit_payload`, ``edit_block``, ``edit_range``).

The oracle, for each mutated input:

* ``crdt.decode`` returns a state that encodes to bytes that decode to an equal state (what a
  replica stores and forwards), or refuses it with a ``ddia_ray.errors`` exception; unchanged bytes
  decode to the state they were made from;
* for a text state, ``merge_bytes`` into a replica that already holds text does what
  ``decode`` then ``merge`` does: the same refusal (and the replica unchanged), or the same state.
"""

from __future__ import annotations

from ddia_ray import crdt
from ddia_ray.errors import CodecError, CRDTTypeError, DdiaRayError

from .targets import Seed, Target, Violation

__all__ = ["CRDTStateTarget"]


def _states() -> list:
    """``(name, state)`` of every kind, small and whole."""
    text = crdt.Text()
    text.insert("a", 0, "hello world")
    text.insert("b", 5, ",")
    text.delete("a", 0, 1)
    orset = crdt.ORSet()
    orset.add("a", b"x")
    orset.add("b", b"y")
    orset.remove("a", b"x")
    ormap = crdt.ORMap()
    ormap.update("a", "k", "pncounter", "increment", 3)
    mv = crdt.MVRegister()
    mv.assign("a", b"one")
    return [("gcounter", crdt.GCounter().increment("a", 3)), ("pncounter", crdt.PNCounter().decrement("b", 2)),
            ("gset", crdt.GSet().add("a", b"e")), ("2pset", crdt.TwoPSet().add("a", b"e")), ("orset", orset),
            ("lww", crdt.LWWRegister().assign("a", b"v", 5)), ("mvregister", mv), ("ormap", ormap),
            ("text", text)]


class CRDTStateTarget(Target):
    """``crdt.decode`` and ``Text.merge_bytes`` of mutated CRDT states and text deltas."""

    name = "crdt_state"
    allowed = (CodecError, CRDTTypeError)  # CorruptRecordError and UnknownVersionError are CodecErrors
    input_seconds = 0.5

    def build(self) -> list:
        out = []
        for name, state in _states():
            data = crdt.encode(state)
            out.append(Seed(f"state:{name}", data, (0, 1, 2, 3, 5, len(data) - 8), state))
        writer = crdt.Text()
        deltas = [("insert", writer.insert("a", 0, "abc")), ("extend", writer.insert("a", 3, "d")),
                  ("inside", writer.insert("a", 2, "XY")), ("other-writer", writer.insert("b", 1, "q")),
                  ("delete", writer.delete("a", 1, 3))]
        for name, delta in deltas:
            data = crdt.encode(delta)
            out.append(Seed(f"text-delta:{name}", data, (0, 1, 2, 3, 44, len(data) - 4), delta))
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        try:
            state = crdt.decode(data)
        except DdiaRayError as e:
            refused: DdiaRayError | None = e
        else:
            refused = None
            if data == seed.data and state != seed.context:
                raise Violation(f"unchanged bytes decoded to {state!r:.200}")
            again = crdt.decode(crdt.encode(state))
            if again != state:
                raise Violation(f"a decoded state does not survive its own encoding: {state!r:.200}")
        base = crdt.Text()
        base.insert("a", 0, "abc")
        base.insert("b", 1, "zz")
        before = crdt.encode(base)
        try:
            expected = base.copy().merge(crdt.decode(data, "text"))
        except DdiaRayError as e:
            try:
                base.merge_bytes(data)
            except type(e):
                if crdt.encode(base) != before:
                    raise Violation("a refused merge_bytes changed the replica") from None
            else:
                raise Violation(f"merge_bytes took bytes decode refuses ({type(e).__name__}: {e})")
        else:
            base.merge_bytes(data)
            if base != expected or base.value() != expected.value():
                raise Violation(f"merge_bytes gave {base.value()!r:.120}, decode and merge {expected.value()!r:.120}")
        if refused is not None:
            raise refused
