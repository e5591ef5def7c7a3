"""Dotted version vectors: the concurrent versions of one key, with exactly their causality.

Theory of operation
-------------------
A leaderless or multi-leader store keeps, per key, every value that no later write has
superseded (DDIA ch. 5, "Detecting Concurrent Writes": "Capturing the happens-before
relationship" and "Version vectors"). A plain version vector per key, one entry per
replica, cannot tell two clients writing through one replica apart: it either merges their
writes into one history (silently losing one) or keeps every value it cannot order, so a
client that keeps writing accumulates its own old values ("sibling explosion"). Dotted
version vectors fix this (Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version
Vectors: Logical Clocks for Optimistic Replication", arXiv:1011.5808, 2010; the compact
form used here is the *DVVSet* of Almeida, Baquero, Gonçalves, Preguiça, Fonte, "Scalable
and Accurate Causality Tracking for Eventually Consistent Stores", DAIS 2014, Riak's
``dvvset``). Each value carries a *dot* ``(node, counter)``: the coordinator that stamped
its write and that write's number there. A client's write carries the causal context of
the read it is based on, and supersedes exactly the values that context covers.

Representation (a :class:`DVVSet` record)::

    entries   := ((node, n, (v_n, v_n-1, ..., v_n-k+1)), ...)   sorted by node, k <= n
    anonymous := (value, ...)                                   canonical order, no duplicates

An entry says: the dots ``(node, 1..n)`` are in this key's causal past (so the causal
context is the vector ``node -> n``); of them the newest ``k`` are still siblings, holding
``v_n`` (dot ``(node, n)``) down to ``v_n-k+1``; the older ``n - k`` were superseded.
The siblings of a node are always a suffix of its dots, because a coordinator stamps its
writes in order and a context that covers one of its dots covers all the older ones.
Merging two entries of a node (:meth:`DVVSet.sync`) keeps the longer counter and the
shorter suffix that both allow: a dot survives unless the other side knows it *and* no
longer holds it.

Operations (after ``dvvset.erl``):

==========================  ==========================================================
``new(v, ctx)``             a client's write, unstamped: ``v`` anonymous, context ``ctx``
``local.update(w, node)``   coordinator ``node`` stamps ``w`` with dot ``(node, n + 1)``,
                            drops the local values ``w``'s context covers, keeps the rest
``a.sync(b)``               a replica merges another's versions of the key
``context()``               the vector ``node -> n``: what a read returns, a write passes back
``reconcile(f)``            one value ``f(values)``, anonymous, with the context of all
``last_writer(key)``        the value with the highest ``key(value)`` (see below)
==========================  ==========================================================

Laws (tested against a reference model that keeps whole causal histories): after any
writes with stale or fresh contexts and any syncs, in any order and with duplicates, the
siblings are exactly the writes no other known write happened after. ``sync`` is
commutative, idempotent, and associative on states whose values all have dots (every
state a coordinator's :meth:`~DVVSet.update` produces); ``update`` then ``sync`` with the
old state is the update.

Anonymous values (our rules, where Riak's are client-side only)
----------------------------------------------------------------
Values without a dot come from :meth:`~DVVSet.new` (before a coordinator stamps them),
:meth:`~DVVSet.reconcile`, and :meth:`~DVVSet.last_writer` when the winner is not the
newest value of its coordinator. Riak keeps such values on clients; a store that resolves
conflicts on its replicas keeps them in replicated state, so they follow these rules:

* ``sync`` drops side A's anonymous values only when B's context strictly includes A's
  *and* B holds no dotted sibling inside A's context. ``dvvset`` drops them on the first
  condition alone, which loses data: a replica that resolved ``{x, y}`` into ``v`` meets a
  replica where a later write superseded ``x`` but not ``y``; ``dvvset`` drops ``v`` and,
  as A's context covers ``y``, ``y`` too. Here ``v`` stays, beside the later write.
* ``update`` drops the coordinator's anonymous values when the client's context includes
  the coordinator's whole (non-empty) context: the client read them, or the siblings they
  summarise.
  (``dvvset`` keeps them unless the context is strictly larger, a false conflict with the
  very value the client read.)
* A value without a dot has no identity of its own, so sync cannot be associative for
  every mix of anonymous values with different contexts; it stays commutative and
  idempotent, and once replicas share a context it is a union, so they converge.
* ``last_writer`` keeps the winner's dot when the winner is the newest value of its
  coordinator; ``dvvset`` would move an older winner onto its coordinator's newest dot,
  so that one dot would name two values on two replicas and sync would stop commuting.
  Such a winner becomes anonymous instead.

Bounds: node ids are non-empty str of at most :data:`NODE_ID_CHARS_MAX` characters;
counters are ints in ``[1, COUNTER_MAX]``; at most :data:`NODES_MAX` entries and
:data:`VALUES_MAX` values. Beyond them construction raises InvalidArgumentError (decode
raises CorruptRecordError). Values are opaque codec-encodable objects (the replication
cores store :class:`~ddia_ray.replication.resolvers.Sibling` records in them).

Pure: no Ray, no clock, no randomness. Every DVVSet is immutable; every operation returns a
new one. Operations build their results from parts already checked
(:func:`~ddia_ray.codec.prechecked`) and check only what is new, because ``update`` and
``sync`` run on every write.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable

from .. import codec
from ..codec import prechecked, record
from ..errors import CodecError, InvalidArgumentError
from .vector import VectorClock

__all__ = ["Dot", "DVVSet", "NODE_ID_CHARS_MAX", "COUNTER_MAX", "NODES_MAX", "VALUES_MAX"]

#: Longest node id, in characters (a node id is a replica's name, not data).
NODE_ID_CHARS_MAX = 256
#: Highest counter: a signed 64-bit integer, what every peer's msgpack reads as an int.
COUNTER_MAX = 2**63 - 1
#: Most entries (nodes that ever coordinated a write of the key) in one DVVSet.
NODES_MAX = 4096
#: Most values (siblings) in one DVVSet.
VALUES_MAX = 65536

# Value types that need no walk: scalars, and (added on first sight) registered record classes,
# whose fields the codec checks in their own frame.
_PLAIN_VALUE_TYPES: set = {str, bytes, int, float, bool, type(None)}


def _check_node(node: Any, what: str = "a node id") -> str:
    if type(node) is not str or not node or len(node) > NODE_ID_CHARS_MAX:
        shown = f"a {type(node).__name__}" if type(node) is not str else f"{len(node)} characters"
        raise InvalidArgumentError(f"{what} is a str of 1 to {NODE_ID_CHARS_MAX} characters, got {shown}")
    return node


def _check_counter(counter: Any, what: str) -> int:
    if type(counter) is not int or not 1 <= counter <= COUNTER_MAX:
        raise InvalidArgumentError(f"{what} is an int in [1, 2**63 - 1], got {counter!r:.40}")
    return counter


@record("clock.dot", version=1, fields_checked=True)
class Dot:
    """One write's identity: the ``counter``-th write that ``node`` coordinated."""

    node: str
    counter: int

    def __post_init__(self) -> None:
        _check_node(self.node, "a dot's node")
        _check_counter(self.counter, "a dot's counter")


@record("clock.dvvset", version=1, fields_checked=True)
class DVVSet:
    """The versions of one key: for each node that coordinated a write, its counter and the values (newest first)
    of the events (node, counter-i) that are still siblings; plus anonymous values (no dot) from writes that
    have not been through a coordinator (new()).  Immutable; every operation returns a new DVVSet.

    ``entries`` is ``((node, counter, values), ...)`` sorted by node, with ``len(values) <= counter``;
    ``anonymous`` is kept in a canonical order (by encoding) without duplicates. See the module docstring."""

    entries: tuple = ()
    anonymous: tuple = ()

    def __post_init__(self) -> None:
        entries, anonymous = self.entries, self.anonymous
        if type(entries) is not tuple or type(anonymous) is not tuple:
            raise InvalidArgumentError("a DVVSet's entries and anonymous values are tuples")
        if len(entries) > NODES_MAX:
            raise InvalidArgumentError(f"a DVVSet has at most {NODES_MAX} entries, got {len(entries)}")
        total = len(anonymous)
        previous = ""
        for entry in entries:
            if type(entry) is not tuple or len(entry) != 3:
                raise InvalidArgumentError("a DVVSet entry is a (node, counter, values) tuple")
            node, counter, values = entry
            _check_node(node, "an entry's node")
            _check_counter(counter, f"the counter of {node!r:.40}")
            if type(values) is not tuple or len(values) > counter:
                raise InvalidArgumentError(f"entry {node!r:.40} holds a tuple of at most {counter} values")
            if node <= previous:
                raise InvalidArgumentError("DVVSet entries are sorted by node, each node once")
            previous = node
            total += len(values)
        if total > VALUES_MAX:
            raise InvalidArgumentError(f"a DVVSet holds at most {VALUES_MAX} values, got {total}; resolve siblings")
        _check_values(entries, anonymous)
        if len(anonymous) > 1:
            canonical = _canonical(anonymous)
            if canonical != anonymous:
                object.__setattr__(self, "anonymous", canonical)

    # --- writing ----------------------------------------------------------------------------

    @classmethod
    def new(cls, value: Any, context: VectorClock | None = None) -> DVVSet:
        """A client write of `value` that has seen `context` (None/empty: a blind write). Not yet stamped."""
        if context is None:
            return cls((), (value,))
        if not isinstance(context, VectorClock):
            raise InvalidArgumentError(f"a write's context is a VectorClock or None, got {type(context).__name__}")
        return cls(tuple((node, n, ()) for node, n in context.entries.items()), (value,))

    def update(self, incoming: DVVSet, node: str) -> DVVSet:
        """Coordinator `node` stamps the client write `incoming` (from new()) against the local versions `self`:
        the new value gets dot (node, max(self's, incoming's counter for node)+1); every local value the
        incoming context covers is dropped; the others stay as siblings. (dvvset:update/3.)

        ``incoming`` must hold exactly one anonymous value (what :meth:`new`, :meth:`reconcile` and an
        anonymous :meth:`last_writer` return). Local anonymous values are dropped when the incoming
        context includes the whole, non-empty, local context (see the module docstring)."""
        if type(incoming) is not DVVSet:
            raise InvalidArgumentError(f"update stamps a DVVSet from new(), got {type(incoming).__name__}")
        _check_node(node, "the coordinator's node id")
        if len(incoming.anonymous) != 1:
            raise InvalidArgumentError(f"update stamps one client write: a DVVSet from new() with one anonymous "
                                       f"value, got {len(incoming.anonymous)}")
        ctx = incoming.entries
        merged = _sync_entries(ctx, self.entries)
        anonymous = self.anonymous
        if anonymous and self.entries and _includes(ctx, self.entries):
            anonymous = ()  # the client read them, or the siblings they summarise (a blind write did neither)
        entries = _event(merged, node, incoming.anonymous[0])
        _check_totals(entries, anonymous)
        return prechecked(DVVSet, entries, anonymous)

    def sync(self, other: DVVSet) -> DVVSet:
        """Merge two replicas' versions of one key: keep each value not covered by the other's causal past.
        Commutative, associative, idempotent. (dvvset:sync/1.)

        Associative for states whose values all have dots; see the module docstring for anonymous ones."""
        if type(other) is not DVVSet:
            raise InvalidArgumentError(f"sync merges a DVVSet, got {type(other).__name__}")
        if other is self:
            return self
        entries = _sync_entries(self.entries, other.entries)
        anonymous = _sync_anonymous(self, other)
        if entries is self.entries and anonymous is self.anonymous:
            return self
        if entries is other.entries and anonymous is other.anonymous:
            return other
        _check_totals(entries, anonymous)
        return prechecked(DVVSet, entries, anonymous)

    # --- reading ----------------------------------------------------------------------------

    def context(self) -> VectorClock:
        """The causal context: node -> counter over all entries (dvvset:join/1).
        A get returns it; a put passes it back."""
        return VectorClock({node: n for node, n, _ in self.entries})

    def values(self) -> tuple:
        """Every sibling value (dotted ones in a deterministic order: by node, newest first; then anonymous)."""
        return tuple(chain.from_iterable([e[2] for e in self.entries])) + self.anonymous

    def dotted_values(self) -> tuple:
        """``((Dot | None, value), ...)``: every sibling with its dot (None if anonymous), in :meth:`values` order."""
        out: list = []
        for node, n, values in self.entries:
            out.extend((prechecked(Dot, node, n - i), v) for i, v in enumerate(values))
        out.extend((None, v) for v in self.anonymous)
        return tuple(out)

    def size(self) -> int:
        """The number of siblings (dotted and anonymous values)."""
        return sum([len(e[2]) for e in self.entries]) + len(self.anonymous)

    def covers(self, dot: Dot) -> bool:
        """Whether ``dot`` is in this key's causal past (a sibling, or a write superseded here)."""
        if type(dot) is not Dot:
            raise InvalidArgumentError(f"covers takes a Dot, got {type(dot).__name__}")
        for node, n, _ in self.entries:
            if node == dot.node:
                return dot.counter <= n
        return False

    def descends(self, other: DVVSet) -> bool:
        """Whether self's causal past includes other's: syncing ``other`` into ``self`` changes nothing
        (self's context includes other's, self knows every write other knows to be superseded, and
        other's anonymous values are held or superseded here). Reflexive."""
        if type(other) is not DVVSet:
            raise InvalidArgumentError(f"descends compares with a DVVSet, got {type(other).__name__}")
        mine = {node: (n, len(values)) for node, n, values in self.entries}
        for node, n, values in other.entries:
            have = mine.get(node)
            # The merged entry is self's iff self's counter is not lower and its superseded prefix not shorter.
            if have is None or have[0] < n or have[0] - have[1] < n - len(values):
                return False
        return _sync_anonymous(self, other) == self.anonymous

    def concurrent(self, other: DVVSet) -> bool:
        """Neither descends the other: each knows of a write the other does not."""
        return not self.descends(other) and not other.descends(self)

    # --- resolving --------------------------------------------------------------------------

    def reconcile(self, merge_fn: Callable[[tuple], Any]) -> DVVSet:
        """One value: merge_fn(values) -> value, kept as the only sibling, with the causal context of all
        (dvvset:reconcile/2).

        The value is anonymous; errors of ``merge_fn`` propagate unchanged. InvalidArgumentError if
        there is no sibling. To make it a write of its own, stamp it: ``state.update(result, node)``."""
        if not callable(merge_fn):
            raise InvalidArgumentError(f"reconcile needs a function of the values, got {type(merge_fn).__name__}")
        values = self.values()
        if not values:
            raise InvalidArgumentError("there is nothing to reconcile: this DVVSet holds no value")
        return self._collapsed(merge_fn(values))

    def last_writer(self, key_fn: Callable[[Any], Any]) -> DVVSet:
        """One value: the sibling with the highest key_fn(value); the context of all (dvvset:lww/2).

        The first of equal keys in :meth:`values` order wins. The winner keeps its dot when it is the
        newest value of its node, and is anonymous otherwise (see the module docstring)."""
        if not callable(key_fn):
            raise InvalidArgumentError(f"last_writer needs a key function, got {type(key_fn).__name__}")
        best: Any = None
        best_key: Any = None
        where: tuple | None = None  # (entry index, position in its values) of a dotted winner
        found = False
        for index, (_, _, values) in enumerate(self.entries):
            for position, value in enumerate(values):
                key = key_fn(value)
                if not found or key > best_key:
                    best, best_key, where, found = value, key, (index, position), True
        for value in self.anonymous:
            key = key_fn(value)
            if not found or key > best_key:
                best, best_key, where, found = value, key, None, True
        if not found:
            raise InvalidArgumentError("there is no last writer: this DVVSet holds no value")
        if where is None or where[1] != 0:
            return self._collapsed(best)
        entries = tuple((node, n, (best,) if i == where[0] else ()) for i, (node, n, _) in enumerate(self.entries))
        return prechecked(DVVSet, entries, ())

    def map_values(self, fn: Callable[[Any], Any]) -> DVVSet:
        """The same dots with ``fn`` applied to each value (to strip or transform them). Anonymous results
        that encode alike merge into one."""
        if not callable(fn):
            raise InvalidArgumentError(f"map_values needs a function, got {type(fn).__name__}")
        entries = tuple((node, n, tuple(map(fn, values))) for node, n, values in self.entries)
        return DVVSet(entries, tuple(map(fn, self.anonymous)))

    def _collapsed(self, value: Any) -> DVVSet:
        """``value`` as the only (anonymous) sibling, with this state's whole context."""
        _check_values((), (value,))
        return prechecked(DVVSet, tuple((node, n, ()) for node, n, _ in self.entries), (value,))


# --- the algorithm ----------------------------------------------------------------------------


def _merge_entry(a: tuple, b: tuple) -> tuple:
    """Two entries of one node: the higher counter, and the siblings neither side knows superseded.

    A side's siblings are the suffix of its dots above ``counter - len(values)``; a dot below the
    other side's counter survives only inside the other side's suffix too (dvvset:merge/5)."""
    node, n1, v1 = a
    _, n2, v2 = b
    if n1 >= n2:
        keep = n1 - n2 + len(v2)
        return a if len(v1) <= keep else (node, n1, v1[:keep])
    keep = n2 - n1 + len(v1)
    return b if len(v2) <= keep else (node, n2, v2[:keep])


def _sync_entries(a: tuple, b: tuple) -> tuple:
    """Merge two sorted entry tuples node by node. Returns ``a`` itself when ``b`` adds nothing."""
    if a is b or not b:
        return a
    if not a:
        return b
    out = []
    i = j = 0
    la, lb = len(a), len(b)
    changed = False
    while i < la and j < lb:
        ea, eb = a[i], b[j]
        if ea[0] == eb[0]:
            merged = ea if ea is eb else _merge_entry(ea, eb)
            changed = changed or merged is not ea
            out.append(merged)
            i += 1
            j += 1
        elif ea[0] < eb[0]:
            out.append(ea)
            i += 1
        else:
            out.append(eb)
            changed = True
            j += 1
    if j < lb:
        out.extend(b[j:])
        changed = True
    if not changed:
        return a
    out.extend(a[i:])
    return tuple(out)


def _includes(big: tuple, small: tuple) -> bool:
    """Whether the context of entries ``big`` includes that of ``small`` (pointwise >=)."""
    counters = {node: n for node, n, _ in big}
    return all(counters.get(node, 0) >= n for node, n, _ in small)


def _superseded(a: tuple, b: tuple) -> bool:
    """Whether side ``b`` supersedes the anonymous values of side ``a`` (entries ``a``, ``b``): b's context
    strictly includes a's, and b holds no dotted sibling inside a's context (such a sibling is something
    a's anonymous values summarise and b has not superseded, so they must stay)."""
    counters = {node: n for node, n, _ in a}
    shared = 0
    strict = False
    for node, nb, values in b:
        na = counters.get(node, 0)
        if nb < na:
            return False
        if na:
            shared += 1
            if values and nb - len(values) < na:  # b's oldest sibling of node, nb-len+1, is <= na
                return False
        if nb > na:
            strict = True
    return strict and shared == len(counters)


def _sync_anonymous(a: DVVSet, b: DVVSet) -> tuple:
    """The anonymous values of ``a.sync(b)``: each side's, unless the other supersedes them; canonical."""
    va, vb = a.anonymous, b.anonymous
    if not va and not vb:
        return va
    if va and _superseded(a.entries, b.entries):
        va = ()
    if vb and _superseded(b.entries, a.entries):
        vb = ()
    # Returning a side's own tuple (not an equal copy) lets sync() hand back that side unchanged.
    if not vb or vb == va:
        return va
    if not va:
        return vb
    return _canonical(va + vb)


def _event(entries: tuple, node: str, value: Any) -> tuple:
    """``entries`` with a new event of ``node`` holding ``value`` (dvvset:event/3)."""
    for index, (name, n, values) in enumerate(entries):
        if name == node:
            if n >= COUNTER_MAX:
                raise InvalidArgumentError(f"node {node!r:.40} has stamped 2**63 - 1 writes of this key; "
                                           "its counter cannot grow")
            return entries[:index] + ((node, n + 1, (value, *values)),) + entries[index + 1:]
        if name > node:
            return entries[:index] + ((node, 1, (value,)),) + entries[index:]
    return entries + ((node, 1, (value,)),)


def _check_totals(entries: tuple, anonymous: tuple) -> None:
    """The bounds of a result built from checked parts (two checked states may add up past them)."""
    if len(entries) > NODES_MAX:
        raise InvalidArgumentError(f"a DVVSet has at most {NODES_MAX} entries; this one would have {len(entries)}")
    total = sum([len(e[2]) for e in entries]) + len(anonymous)
    if total > VALUES_MAX:
        raise InvalidArgumentError(f"a DVVSet holds at most {VALUES_MAX} values; this one would hold {total}: "
                                   "resolve the key's siblings")


def _check_values(entries: tuple, anonymous: tuple) -> None:
    """Refuse values the codec could not carry as fields of this record (the record is fields_checked)."""
    kinds = set(map(type, chain.from_iterable([e[2] for e in entries])))
    kinds.update(map(type, anonymous))
    odd = kinds - _PLAIN_VALUE_TYPES
    if not odd:
        return
    for kind in odd:
        if codec.record_type_of(kind) is not None:
            _PLAIN_VALUE_TYPES.add(kind)
    if kinds <= _PLAIN_VALUE_TYPES:
        return
    # Containers or unknown objects: check nesting and map keys where the values sit, and that each encodes.
    try:
        codec.check_value(entries, "a DVVSet's entries")
        codec.check_value(anonymous, "a DVVSet's anonymous values")
        for value in chain(chain.from_iterable([e[2] for e in entries]), anonymous):
            if type(value) not in _PLAIN_VALUE_TYPES:
                codec.encode(value)
    except CodecError as e:
        raise InvalidArgumentError(f"a DVVSet value must be codec-encodable: {e}") from e


def _encoding(value: Any) -> bytes:
    try:
        return codec.encode(value)
    except CodecError as e:
        raise InvalidArgumentError(f"a DVVSet value must be codec-encodable: {e}") from e


def _canonical(values: tuple) -> tuple:
    """``values`` sorted by their encoding, duplicates (equal encodings) removed: anonymous values have no dot
    to order or identify them by, and sync must not depend on which side came first."""
    if len(values) < 2:
        return values
    by_encoding: dict = {}
    for value in values:
        by_encoding.setdefault(_encoding(value), value)
    return tuple(by_encoding[k] for k in sorted(by_encoding))
