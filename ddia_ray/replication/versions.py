"""The versions of a key when several replicas accept writes, and how their conflicts resolve.

Theory of operation
-------------------
Under multi-leader and leaderless replication two replicas may accept writes of one
key at once, and neither write happened before the other (DDIA 5.4 "Handling Write
Conflicts", 5.5 "Detecting Concurrent Writes"). A replica therefore keeps, per key,
a :class:`~ddia_ray.clocks.dotted.DVVSet`: every value not yet superseded, each
stamped with a *dot* ``(node, counter)`` by the replica that coordinated its write,
plus the causal context of the whole set. Two operations move it forward:

* ``put`` at a coordinator (:meth:`KeyVersions.put`): the client's write carries the
  causal context of the read it is based on; the new value supersedes exactly the
  versions that context covers, and stays a sibling of the rest. A conflict is thus
  reported exactly when the writes were concurrent, never when one saw the other.
  Dotted version vectors stamp the write with the coordinator's dot, not the
  client's, so one client writing again and again does not grow siblings (the
  "sibling explosion" Riak documents for per-client vector clocks, and the
  false conflicts of per-replica ones).
* ``merge`` at any replica (:meth:`KeyVersions.merge`): another replica's versions
  of the key arrive (replication, read repair, hinted handoff, anti-entropy) and are
  synced: each side keeps what the other's causal past does not cover. Sync is
  commutative, associative and idempotent, so the replicas converge whatever the
  order and duplication of deliveries.

How the siblings that remain become one value is a :class:`ConflictPolicy`, chosen
per store or per key prefix (longest prefix wins):

======================  =============================================================
``"siblings"``          Riak's model: ``get`` returns every concurrent value and the
                        causal context; a ``put`` with that context replaces them.
``"lww"``               last writer wins by hybrid logical clock ``(wall, logical,
                        node)``. The losers are dropped, and *counted*: the replica
                        where two concurrent versions meet records the loser by key
                        and dot, and the store counts the union, so each loss counts
                        once (DDIA 5.4 warns that LWW loses writes silently; here it
                        is never silent).
``"resolver:NAME"``     a registered resolver (:mod:`.resolvers`, a plain callable or a
                        plugin). On write, the coordinator merges the new value with
                        the siblings it does not replace, into one new write that
                        replaces them all (Bucardo resolves as it replicates); a read
                        of siblings left by a partition answers their merge. With
                        ``"resolver:NAME@read"`` only reads merge (CouchDB). A
                        resolver that raises is isolated: the key keeps its siblings,
                        the failure is counted, and the read reports it.
``"crdt:KIND"``         the key holds a CRDT (:mod:`ddia_ray.crdt`) that merges without
                        conflict; clients apply its operations instead of ``put``.
======================  =============================================================

Tombstones: a delete is a sibling whose value is None, so a deletion concurrent
with an update is a conflict like any other, and a merge cannot resurrect a deleted
value. A key left with tombstones only is collected after a grace period
(:mod:`.tombstones`): :meth:`KeyVersions.collect` removes it, and a merge does not take
such an expired state in for a key this replica no longer holds.

Causal contexts leave the store as opaque bytes (:func:`encode_context`) bound to
the store's identity, so a context from another store is refused
(:class:`~ddia_ray.errors.ForeignContextError`) rather than silently superseding
versions it never saw.

Pure: no Ray, no clock (the caller passes each write's hybrid timestamp).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

from .. import codec, crdt
from ..clocks import DVVSet, VectorClock
from ..codec import record
from ..errors import (CodecError, ConfigError, CRDTTypeError, ForeignContextError, InvalidArgumentError,
                      ResolverFailedError)
from .resolvers import Sibling, _lww_key, get_resolver
from .tombstones import expired_tombstone

__all__ = ["RESOLUTIONS", "ConflictPolicy", "Policies", "parse_policies", "CausalContext", "encode_context",
           "decode_context", "KeyVersions", "live_siblings"]

#: How the siblings of a key may resolve (see the module docstring).
RESOLUTIONS = ("siblings", "lww", "resolver", "crdt")
_MAX_ERRORS = 100  # resolver failures remembered for stats(): the newest ones
#: Versions dropped by LWW that a replica identifies (so the store counts each once across replicas).
LWW_LOST_KEPT = 100_000
_FAILED = object()  # what _resolve answers when the resolver failed


@record("repl.conflict_policy", version=1)
class ConflictPolicy:
    """How the keys under ``prefix`` resolve: ``mode`` one of :data:`RESOLUTIONS`; ``resolver`` the
    registered resolver's name (mode ``"resolver"``) and ``on_read`` whether it runs on reads only;
    ``kind`` the CRDT kind (mode ``"crdt"``)."""

    prefix: bytes = b""
    mode: str = "siblings"
    resolver: str = ""
    on_read: bool = False
    kind: str = ""

    def __post_init__(self):
        if not isinstance(self.prefix, bytes):
            raise InvalidArgumentError(f"a policy's prefix is bytes, got {type(self.prefix).__name__}")
        if self.mode not in RESOLUTIONS:
            raise ConfigError(f"unknown conflict resolution {self.mode!r}; use one of {RESOLUTIONS}")
        if not isinstance(self.resolver, str) or not isinstance(self.kind, str) or type(self.on_read) is not bool:
            raise InvalidArgumentError("a policy's resolver and kind are str, on_read a bool")
        if (self.mode == "resolver") != bool(self.resolver):
            raise ConfigError("a resolver policy names its resolver (\"resolver:NAME\"), and only it does")
        if (self.mode == "crdt") != bool(self.kind):
            raise ConfigError("a CRDT policy names its kind (\"crdt:KIND\"), and only it does")
        if self.kind and self.kind not in crdt.KINDS:
            raise CRDTTypeError(f"unknown CRDT kind {self.kind!r}; known: {sorted(crdt.KINDS)}", got=self.kind)

    def spec(self) -> str:
        """The policy as the string :func:`parse_policies` reads."""
        if self.mode == "resolver":
            return f"resolver:{self.resolver}" + ("@read" if self.on_read else "")
        return f"crdt:{self.kind}" if self.mode == "crdt" else self.mode


def _parse_one(prefix: bytes, spec: Any) -> ConflictPolicy:
    if isinstance(spec, ConflictPolicy):
        return dataclasses.replace(spec, prefix=prefix)
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"a conflict resolution is a str such as 'lww', 'siblings', 'resolver:NAME' "
                                   f"or 'crdt:KIND', got {type(spec).__name__}")
    mode, _, rest = spec.partition(":")
    if mode == "resolver":
        name, _, when = rest.partition("@")
        if when not in ("", "read", "write"):
            raise ConfigError(f"a resolver runs '@read' or '@write', got {spec!r}")
        get_resolver(name)  # an unknown name fails here, at launch, not at the first conflict
        return ConflictPolicy(prefix, "resolver", resolver=name, on_read=when == "read")
    if mode == "crdt":
        return ConflictPolicy(prefix, "crdt", kind=rest)
    if rest:
        raise ConfigError(f"conflict resolution {spec!r}: only 'resolver:' and 'crdt:' take an argument")
    return ConflictPolicy(prefix, mode)


def parse_policies(resolution: Any) -> tuple:
    """``resolution`` (one spec for the whole store, or a mapping key prefix -> spec, str or bytes
    prefixes) as policies sorted by prefix; the empty prefix defaults to ``"siblings"``."""
    if isinstance(resolution, (str, ConflictPolicy)):
        resolution = {b"": resolution}
    if isinstance(resolution, (tuple, list)) and all(isinstance(p, ConflictPolicy) for p in resolution):
        resolution = {p.prefix: p for p in resolution}
    if not isinstance(resolution, Mapping):
        raise InvalidArgumentError(f"resolution is a spec str or a mapping prefix -> spec, got "
                                   f"{type(resolution).__name__}")
    out: dict[bytes, ConflictPolicy] = {}
    for prefix, spec in resolution.items():
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        if not isinstance(raw, bytes):
            raise InvalidArgumentError(f"a policy prefix is str or bytes, got {type(prefix).__name__}")
        if raw in out:
            raise ConfigError(f"prefix {raw!r} has two conflict resolutions")
        out[raw] = _parse_one(raw, spec)
    out.setdefault(b"", ConflictPolicy())
    return tuple(out[p] for p in sorted(out))


class Policies:
    """The policies of a store: :meth:`of` a key is the one with the longest matching prefix."""

    def __init__(self, policies: Iterable[ConflictPolicy]):
        self._all = tuple(sorted(policies, key=lambda p: len(p.prefix), reverse=True))
        if not any(p.prefix == b"" for p in self._all):
            self._all += (ConflictPolicy(),)
        self._only = self._all[0] if len(self._all) == 1 else None

    @property
    def all(self) -> tuple:
        """Every policy, longest prefix first."""
        return self._all

    @property
    def only(self) -> ConflictPolicy | None:
        """The policy of every key, when the store has one; else None."""
        return self._only

    def of(self, key: bytes) -> ConflictPolicy:
        """The policy that governs ``key``."""
        if self._only is not None:
            return self._only
        for p in self._all:
            if key.startswith(p.prefix):
                return p
        raise AssertionError("the empty prefix matches every key")  # unreachable: __init__ adds it


# --- causal contexts ------------------------------------------------------------------------------


@record("repl.causal_context", version=1, fields_checked=True)
class CausalContext:
    """What a read saw of a key (``clock``), and the store (``store``) whose versions it describes."""

    store: str
    clock: VectorClock

    def __post_init__(self):
        if not isinstance(self.store, str) or not isinstance(self.clock, VectorClock):
            raise InvalidArgumentError("a causal context is a store name and a VectorClock")


def encode_context(store: str, clock: VectorClock) -> bytes:
    """The opaque token a read returns and a write passes back."""
    return codec.encode(CausalContext(store, clock))


def decode_context(store: str, token: Any) -> VectorClock:
    """The clock of a context token of ``store``; ForeignContextError for another store's or garbage."""
    if token is None or token == b"":
        return VectorClock()
    if not isinstance(token, bytes):
        raise ForeignContextError(f"a causal context is the bytes a get returned, got {type(token).__name__}")
    try:
        ctx = codec.decode(token)
    except CodecError as e:
        raise ForeignContextError(f"this causal context is not one a get of store {store!r} returned: {e}") from None
    if not isinstance(ctx, CausalContext):
        raise ForeignContextError(f"this causal context is not one a get of store {store!r} returned "
                                  f"(it decodes to a {type(ctx).__name__})")
    if ctx.store != store:
        raise ForeignContextError(f"this causal context comes from store {ctx.store!r}, not {store!r}: pass the "
                                  f"context a get of {store!r} returned")
    return ctx.clock


# --- a replica's versions ---------------------------------------------------------------------------


#: The constructors of the fresh-key write (:meth:`KeyVersions.put`): its parts are checked there.
_sibling = codec.prechecked_maker(Sibling)
_dvvset = codec.prechecked_maker(DVVSet)


def _new_state(node: str, sibling: Sibling) -> DVVSet:
    """The state of a key whose first write ``node`` coordinates: one entry, counter 1."""
    return _dvvset(((node, 1, (sibling,)),), ())


def live_siblings(state: DVVSet) -> tuple:
    """The siblings of ``state`` that hold a value (deletions left out)."""
    return tuple(s for s in state.values() if s.value is not None)


class KeyVersions:
    """The versions one replica keeps, key -> DVVSet (or CRDT), with conflicts resolved by policy.

    ``node`` stamps the writes this replica coordinates; ``on_change(key, state)`` is told of every
    change (the replica persists it and updates its Merkle tree); ``data`` is where the states live
    (a dict by default; :class:`~.version_store.EngineVersions` for a storage engine). Counters for ``stats()``:
    ``lww_discarded`` and ``lww_lost`` (versions LWW dropped at this replica, identified by key and dot,
    so that the store counts each loss once however many replicas dropped it), ``resolutions`` (sibling
    sets a resolver merged), ``resolver_failures``, ``tombstones_collected`` and ``tombstones_ignored``
    (:mod:`.tombstones`; the replica sets ``tombstone_horizon_ns`` from its clock).
    """

    def __init__(self, node: str, store: str, policies: Policies,
                 on_change: Callable[[bytes, Any], None] | None = None, data: Any = None):
        self.node = node
        self.store = store
        self.policies = policies
        #: key -> state: a dict, or a storage engine's (:mod:`.version_store`)
        self.data: Any = {} if data is None else data
        self.on_change = on_change
        self.on_lost: Callable[[tuple], None] | None = None  # told of each version LWW drops here
        self.lww_discarded = 0  # versions LWW dropped here (the same version may be dropped at several replicas)
        self.lww_lost: dict[tuple, None] = {}  # (key, node, counter) of each, the first LWW_LOST_KEPT
        self.lww_lost_untracked = 0  # dropped after lww_lost filled up: counted here, not identified
        self.resolutions = 0
        self.resolver_failures = 0
        self.tombstone_horizon_ns = 0  # tombstones stamped before this are past the grace (0: none are)
        self.tombstones_collected = 0
        self.tombstones_ignored = 0
        self.resolver_errors: list[tuple[bytes, str, str]] = []  # (key, resolver, error), newest last
        self.siblings_max = 0

    # --- writes ---------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes | None, context: VectorClock, timestamp: tuple[int, int]) -> Any:
        """Coordinate a client's write of ``value`` (None: delete) that saw ``context``; returns the key's
        new state. ``timestamp``: the coordinator's hybrid clock reading ``(wall_ns, logical)``."""
        policy = self.check_kind(key, False)
        old = self.data.get(key)
        if old is None and not context.entries and (value is None or type(value) is bytes):
            # A key this replica does not hold, written blind: the new state is the write alone, with
            # the coordinator's first dot (what update() of an empty state gives), built directly.
            return self._settle(key, None, _new_state(self.node, _sibling(value, timestamp[0], self.node,
                                                                          timestamp[1])), policy)
        base = old if old is not None else DVVSet()
        sibling = Sibling(value, timestamp[0], self.node, timestamp[1])
        if policy.mode == "resolver" and not policy.on_read and base.size():
            merged = self._fold(key, base, sibling, context, policy)
            if merged is not None:
                sibling, context = merged
        state = base.update(DVVSet.new(sibling, context), self.node)
        return self._settle(key, old, state, policy)

    def check_kind(self, key: bytes, update: bool) -> ConflictPolicy:
        """``key``'s policy, or CRDTTypeError for a write of the wrong kind for it: a put (``update``
        False) to a CRDT key, a CRDT operation (``update`` True) on another. :meth:`put` and
        :meth:`update` check so, and a coordinator checks a batch's every key before it writes any."""
        policy = self.policies.of(key)
        if update and policy.mode != "crdt":
            raise CRDTTypeError(f"{key!r} is not a CRDT key (its resolution is {policy.spec()!r}); use put",
                                expected="crdt", got=policy.mode)
        if not update and policy.mode == "crdt":
            raise CRDTTypeError(f"{key!r} holds a {policy.kind} CRDT: apply its operations with update(), not put",
                                expected=policy.kind, got="put")
        return policy

    def new_keys(self, keys: tuple | list) -> list[bool]:
        """Whether each of ``keys`` is one this replica does not hold and whose policy takes puts: the
        keys whose first write's state is that write alone (:meth:`store_new`), as :meth:`put` and
        :meth:`merge` would make it."""
        absent = self.data.absent(keys)
        only = self.policies.only
        if only is not None:
            return absent if only.mode != "crdt" else [False] * len(absent)
        of = self.policies.of
        return [a and of(key).mode != "crdt" for key, a in zip(keys, absent)]

    def store_new(self, keys: tuple | list, encoded: tuple | list) -> None:
        """Keep ``encoded[i]``, the state of a first write alone, under ``keys[i]``, keys that
        :meth:`new_keys` found new: what :meth:`put` (a blind write) or :meth:`merge` would store for
        each, without building the states. The caller tells the replica (``on_change`` is not called)."""
        if keys:
            self.data.put_new(keys, encoded)
            self.siblings_max = max(self.siblings_max, 1)

    def _fold(self, key: bytes, base: DVVSet, sibling: Sibling, context: VectorClock,
              policy: ConflictPolicy) -> tuple[Sibling, VectorClock] | None:
        """A write under a resolver on write: the new value merged with the siblings it does not replace,
        as one new write whose context covers them all; None if the resolver failed (they stay siblings).

        Resolving here, at the coordinator, makes the merge a write event of its own, replicated like any
        other; resolving while merging replicas' states instead would make each replica's result depend on
        the order its deliveries came in (a merged value has no dot that a later write could supersede),
        and the replicas would not converge."""
        concurrent = [v for dot, v in base.dotted_values()
                      if dot is None or dot.counter > context.get(dot.node)]
        if not concurrent:
            return None
        value = self._resolve(key, (sibling, *concurrent), policy)
        if value is _FAILED:
            return None
        return Sibling(value, sibling.timestamp, sibling.node, sibling.logical), context.merge(base.context())

    def merge(self, key: bytes, incoming: Any) -> bool:
        """Merge another replica's versions of ``key``; returns whether the local state changed."""
        policy = self.policies.of(key)
        old: Any = self.data.get(key)
        if policy.mode == "crdt":
            if not isinstance(incoming, crdt.CRDT):
                raise CRDTTypeError(f"{key!r} holds a {policy.kind} CRDT; a replica sent it plain versions",
                                    expected=policy.kind, got=type(incoming).__name__)
            joined = crdt.merge(old, incoming) if old is not None else incoming.copy()
            if old is not None and joined == old:
                return False
            self._store(key, joined)
            return True
        if not isinstance(incoming, DVVSet):
            raise CRDTTypeError(f"{key!r} holds plain versions; a replica sent a {type(incoming).__name__}",
                                expected="versions", got=type(incoming).__name__)
        if old is None and expired_tombstone(incoming, self.tombstone_horizon_ns):
            # Collected here already, or about to be everywhere: taking it in would only hand the key back
            # and forth between replicas that collect it at different moments (see .tombstones).
            self.tombstones_ignored += 1
            return False
        state = old.sync(incoming) if old is not None else incoming
        if state == old:
            return False
        return self._settle(key, old, state, policy) != old  # what _settle kept is what the key holds now

    def update(self, key: bytes, op: str, args: tuple, timestamp: tuple[int, int]) -> tuple[Any, Any]:
        """Apply CRDT operation ``op(*args)`` to ``key`` at this replica; returns ``(state, delta)``.

        A LWW-register assignment takes this replica's hybrid timestamp. CRDTTypeError when ``key`` is not
        a CRDT key, or ``op`` is not an operation of its kind."""
        policy = self.check_kind(key, True)
        if policy.kind == "lww" and op == "assign":
            # One int in 64 bits that orders as the HLC reading does: its wall time in microseconds, and the
            # logical counter in the nanosecond digits (a replica's readings stay strictly increasing).
            args = (*args, timestamp[0] // 1000 * 1000 + min(timestamp[1], 999))
        state, delta = crdt.apply(self.data.get(key), policy.kind, self.node, op, tuple(args))
        self._store(key, state)
        return state, delta

    def combine(self, key: bytes, states: Iterable[Any]) -> Any:
        """The merge of several replicas' states of ``key`` (None entries skipped), resolved by the key's
        policy as a write would resolve it, without storing it: a read coordinator's answer, which may
        hold the key or not. None when no replica had it."""
        policy = self.policies.of(key)
        merged: Any = None
        for state in states:
            if state is None:
                continue
            if policy.mode == "crdt":
                if not isinstance(state, crdt.CRDT):
                    raise CRDTTypeError(f"{key!r} holds a {policy.kind} CRDT; a replica answered plain versions",
                                        expected=policy.kind, got=type(state).__name__)
                merged = state.copy() if merged is None else merged.merge(state)
            else:
                if not isinstance(state, DVVSet):
                    raise CRDTTypeError(f"{key!r} holds plain versions; a replica answered a {type(state).__name__}",
                                        expected="versions", got=type(state).__name__)
                merged = state if merged is None else merged.sync(state)
        if isinstance(merged, DVVSet) and merged.size() > 1 and policy.mode == "lww":
            merged = merged.last_writer(_lww_key)
        return merged

    def _settle(self, key: bytes, old: Any, state: DVVSet, policy: ConflictPolicy) -> DVVSet:
        """Resolve ``state`` by ``policy`` (write side), count what that drops, and keep it."""
        if state.size() > 1:
            if policy.mode == "lww":
                before = state.dotted_values()
                state = state.last_writer(_lww_key)
                kept = state.values()  # the winner (it may lose its dot: see DVVSet.last_writer)
                for dot, value in before:
                    if value not in kept:
                        self._lost(key, dot)
        self.siblings_max = max(self.siblings_max, state.size())
        if state != old:
            self._store(key, state)
        return state

    def _lost(self, key: bytes, dot: Any) -> None:
        """LWW dropped version ``dot`` of ``key`` here. Several replicas may drop the same version (each
        met both writes before it met the other's decision); identifying the loss by ``(key, dot)`` lets
        the store count each loss once, as the union over its replicas."""
        ident = (key, dot.node, dot.counter) if dot is not None else (key, "", 0)
        if ident in self.lww_lost:
            return
        self.remember_lost(ident)
        if self.on_lost is not None:
            self.on_lost(ident)

    def remember_lost(self, ident: tuple) -> None:
        """Count version ``(key, node, counter)`` as dropped by LWW here (recovery calls it for the losses
        this replica persisted: the replayed states no longer hold the loser, so replaying cannot find it)."""
        if ident in self.lww_lost:
            return
        self.lww_discarded += 1
        if len(self.lww_lost) < LWW_LOST_KEPT:
            self.lww_lost[ident] = None
        else:
            self.lww_lost_untracked += 1

    def _resolve(self, key: bytes, siblings: tuple, policy: ConflictPolicy) -> Any:
        """The policy's resolver applied to ``siblings``: the merged value, or :data:`_FAILED` (counted and
        remembered) if the resolver raised or returned something other than bytes or None."""
        try:
            value = get_resolver(policy.resolver).resolve(key, siblings)
            if value is not None and not isinstance(value, bytes):
                raise InvalidArgumentError(f"a resolver returns bytes or None, got {type(value).__name__}")
        except Exception as e:  # noqa: BLE001 - a user's function: isolated, counted, reported; the key keeps its siblings
            self.resolver_failures += 1
            self.resolver_errors.append((key, policy.resolver, f"{type(e).__name__}: {e}"))
            del self.resolver_errors[:-_MAX_ERRORS]
            return _FAILED
        self.resolutions += 1
        return value

    def _store(self, key: bytes, state: Any) -> None:
        self.data[key] = state
        if self.on_change is not None:
            self.on_change(key, state)

    def restore(self, key: bytes, state: Any) -> None:
        """Put back a state this replica persisted (recovery); no resolution, no counting."""
        self.data[key] = state

    def collect(self, key: bytes) -> bool:
        """Remove ``key`` if it holds only tombstones past the grace period (:mod:`.tombstones`); returns
        whether it did. Not a change the replicas exchange: each collects on its own clock."""
        # A sweep looks at every key in turn: read past the mapping's cache of hot keys, if it has one.
        peek = getattr(self.data, "peek", None)
        state = peek(key) if peek is not None else self.data.get(key)
        if state is None or not expired_tombstone(state, self.tombstone_horizon_ns):
            return False
        del self.data[key]
        self.tombstones_collected += 1
        return True

    # --- reads ------------------------------------------------------------------------------------

    def answer(self, key: bytes, state: Any) -> dict:
        """What a client gets for ``key`` whose merged state is ``state``: ``siblings`` (live values),
        ``context`` (token), ``crdt`` (the CRDT's encoded state for CRDT keys), ``error`` (a resolver's
        failure on read: the siblings are returned as they are)."""
        policy = self.policies.of(key)
        if policy.mode == "crdt" or isinstance(state, crdt.CRDT):
            return {"siblings": (), "context": b"", "crdt": crdt.encode(state) if state is not None else None,
                    "kind": policy.kind, "error": None}
        if state is None:
            return {"siblings": (), "context": encode_context(self.store, VectorClock()), "crdt": None,
                    "kind": "", "error": None}
        error = None
        siblings = live_siblings(state)
        if policy.mode == "resolver" and state.size() > 1:
            # Stored siblings left by a partition (or kept by "@read"): the read answers their merge.
            values = state.values()
            value = self._resolve(key, values, policy)
            if value is _FAILED:
                _, name, text = self.resolver_errors[-1]
                error = ResolverFailedError(f"resolver {name!r} failed on {key!r}: {text}; the key's siblings are "
                                            f"returned unresolved", resolver=name, key=key)
            else:
                newest = max(values, key=_lww_key)
                siblings = (Sibling(value, newest.timestamp, newest.node, newest.logical),) if value is not None else ()
        return {"siblings": siblings, "context": encode_context(self.store, state.context()),
                "crdt": None, "kind": "", "error": error}

    def stats(self) -> dict:
        """The counters (see the class docstring) and how many keys this replica holds."""
        return {"keys": len(self.data), "lww_discarded": self.lww_discarded, "resolutions": self.resolutions,
                "resolver_failures": self.resolver_failures, "siblings_max": self.siblings_max,
                "tombstones_collected": self.tombstones_collected, "tombstones_ignored": self.tombstones_ignored,
                "resolver_errors": [{"key": k, "resolver": r, "error": t} for k, r, t in self.resolver_errors[-10:]]}
