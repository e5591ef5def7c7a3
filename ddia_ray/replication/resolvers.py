"""Conflict resolvers: how concurrent writes of one key become one value again.

Theory of operation
-------------------
Single-leader replication orders every write of a key, so there is nothing to
resolve. Multi-leader and leaderless replication accept writes of one key at
several replicas at once; the version vectors of those replicas tell which
writes are concurrent (DDIA ch. 5, "Handling Write Conflicts" and "Detecting
Concurrent Writes"), and the replica keeps them all as *siblings* until a
resolver merges them. A resolver is a pure function of the key and its
siblings; it must be deterministic and give the same answer for the siblings
in any order, so that every replica that merges the same siblings converges to
the same value (the convergence requirement of DDIA ch. 5, "Converging toward a
consistent state").

Two resolvers ship with ddia-ray:

* ``"lww"``, last writer wins: the sibling with the highest ``(timestamp,
  logical, node)`` (a hybrid logical clock reading) wins (an exact tie is
  broken by the value); the others are lost. Simple and convergent, and it
  silently discards concurrent writes (DDIA ch. 5, "Last write wins
  (discarding concurrent writes)"); a tombstone can win, and then the key is
  deleted.
* ``"set_union"``: each value is a codec-encoded tuple of items; the merge is
  the sorted union of the items of every live sibling (the shopping cart of
  DDIA fig. 5-14). Removals need tombstones *inside* the value to survive a
  union; a deleted sibling contributes nothing.

Plugins add theirs through :func:`register_resolver`; the replication
protocols look them up by name with :func:`get_resolver`. This module lives
with replication, the lowest floor whose code merges replicated values; it is
pure (no Ray, no clock).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from .. import codec
from ..codec import record
from ..errors import InvalidArgumentError
from ..registry import Registry

__all__ = ["Sibling", "ConflictResolver", "LastWriterWins", "SetUnion", "RESOLVERS", "register_resolver",
           "unregister_resolver", "get_resolver", "resolve"]


# v2 added logical (default 0)
@record("repl.sibling", version=2, upgrades={1: lambda fields: fields}, fields_checked=True)
class Sibling:
    """One of the concurrent versions of a key: ``value`` (None for a deletion), the ``timestamp`` the
    writer gave it (a hybrid or Lamport clock reading: the HLC's wall time in ns), the HLC's ``logical``
    counter (0 for a plain clock) and the ``node`` that accepted it (the tie-break)."""

    value: bytes | None
    timestamp: int = 0
    node: str = ""
    logical: int = 0

    def __post_init__(self):
        if self.value is not None and not isinstance(self.value, bytes):
            raise InvalidArgumentError(f"a sibling's value is bytes or None, got {type(self.value).__name__}")
        if not isinstance(self.timestamp, int) or isinstance(self.timestamp, bool):
            raise InvalidArgumentError(f"a sibling's timestamp is an int, got {type(self.timestamp).__name__}")
        if not isinstance(self.node, str):
            raise InvalidArgumentError(f"a sibling's node is a str, got {type(self.node).__name__}")
        if not isinstance(self.logical, int) or isinstance(self.logical, bool) or self.logical < 0:
            raise InvalidArgumentError(f"a sibling's logical counter is an int >= 0, got {self.logical!r}")


@runtime_checkable
class ConflictResolver(Protocol):
    """Merges the siblings of one key into its value (None: the key is deleted).

    REQUIRES: ``siblings`` is not empty. The result must not depend on the siblings' order.
    """

    def resolve(self, key: bytes, siblings: Sequence[Sibling]) -> bytes | None:
        """The merged value of ``key``."""


class LastWriterWins:
    """The sibling with the highest ``(timestamp, logical, node)`` wins, then the highest value, a tombstone lowest
    (see the module doc for what it loses)."""

    def resolve(self, key: bytes, siblings: Sequence[Sibling]) -> bytes | None:
        """The value of the latest sibling."""
        _check(siblings)
        # node breaks a timestamp tie, so that every replica picks the same winner; the value breaks an
        # exact tie (one node stamping two writes alike: a clock bug), a tombstone losing, so the
        # order stays total and the merge convergent even then.
        return max(siblings, key=_lww_key).value


def _lww_key(s: Sibling) -> tuple:
    return (s.timestamp, s.logical, s.node, s.value is not None, s.value or b"")


class SetUnion:
    """The union of the items of every live sibling, each value a codec-encoded tuple of items."""

    def resolve(self, key: bytes, siblings: Sequence[Sibling]) -> bytes | None:
        """An encoded, sorted tuple of every item of every live sibling; None if all are deletions."""
        _check(siblings)
        live = [s.value for s in siblings if s.value is not None]
        if not live:
            return None
        items: set = set()
        for value in live:
            decoded = codec.decode(value)
            if not isinstance(decoded, tuple):
                raise InvalidArgumentError(f"set_union merges encoded tuples; a sibling of {key!r} holds a "
                                           f"{type(decoded).__name__}")
            items.update(decoded)
        try:
            merged = tuple(sorted(items))  # sorted: the same bytes on every replica, whatever the order
        except TypeError:
            raise InvalidArgumentError(f"set_union needs items of one sortable type; {key!r} mixes them") from None
        return codec.encode(merged)


def _check(siblings: Sequence[Sibling]) -> None:
    if not siblings:
        raise InvalidArgumentError("there is nothing to resolve: no siblings")
    for s in siblings:
        if not isinstance(s, Sibling):
            raise InvalidArgumentError(f"siblings are Sibling records, got {type(s).__name__}")


def _as_resolver(name: str, resolver: Any) -> ConflictResolver:
    if isinstance(resolver, ConflictResolver):
        return resolver
    if not callable(resolver):
        raise InvalidArgumentError(f"resolver {name!r} must have resolve(key, siblings) or be a function, "
                                   f"got {type(resolver).__name__}")
    return _FunctionResolver(resolver)


_RESOLVERS: Registry[ConflictResolver] = Registry(
    "conflict resolver", {"lww": LastWriterWins(), "set_union": SetUnion()}, check=_as_resolver,
    same=operator.eq)  # a function registered twice wraps into equal resolvers
#: Resolver name -> resolver. Read-only: add one with :func:`register_resolver`.
RESOLVERS: Mapping[str, ConflictResolver] = _RESOLVERS.view


def register_resolver(name: str, resolver: ConflictResolver | Callable[[bytes, Sequence[Sibling]], bytes | None]
                      ) -> ConflictResolver:
    """Make ``name`` resolve with ``resolver``: an object with ``resolve(key, siblings)``, or a plain
    function of the same signature. A name taken by another resolver raises ConfigError; registering
    the same one again is a no-op. Returns what was registered."""
    return _RESOLVERS.register(name, resolver)


def unregister_resolver(name: str, resolver: object) -> bool:
    """Forget resolver ``name`` if ``resolver`` (as given to :func:`register_resolver`) is what it
    resolves with; returns whether it was removed."""
    return _RESOLVERS.unregister(name, resolver)


def get_resolver(name: str) -> ConflictResolver:
    """The resolver registered as ``name``; ConfigError naming the known ones otherwise."""
    return _RESOLVERS.get(name)


def resolve(name: str, key: bytes, siblings: Sequence[Sibling]) -> bytes | None:
    """``get_resolver(name).resolve(key, siblings)``; one sibling is its own answer, unasked."""
    resolver = get_resolver(name)
    if len(siblings) == 1 and isinstance(siblings[0], Sibling):
        return siblings[0].value
    return resolver.resolve(key, siblings)


class _FunctionResolver:
    """A function ``(key, siblings) -> value`` as a resolver; equal when it wraps the same function,
    so registering one function twice is a no-op."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[bytes, Sequence[Sibling]], bytes | None]):
        self.fn = fn

    def resolve(self, key: bytes, siblings: Sequence[Sibling]) -> bytes | None:
        """What the function answers."""
        return self.fn(key, siblings)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FunctionResolver) and other.fn is self.fn

    def __hash__(self) -> int:
        return id(self.fn)

    def __repr__(self) -> str:
        return f"resolver({getattr(self.fn, '__qualname__', self.fn)!r})"
