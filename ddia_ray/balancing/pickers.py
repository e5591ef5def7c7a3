"""The common interface of every replica picker, and the checks they share.

Theory of operation
-------------------
A *picker* answers one question: "which member gets the next request?". It
owns the member set and the weights, nothing else: in-flight counts (``load``)
and the members that may not be chosen right now (``exclude``, e.g. ejected by
outlier detection) are passed into every :meth:`Picker.pick`, so one picker can
be driven by a :class:`~ddia_ray.balancing.core.BalancerCore` or by a test
with no other moving parts. Pickers are deterministic: the only randomness is
the injected, seeded :class:`random.Random`.

:meth:`Picker.pick` validates its arguments, drops excluded members, raises
:class:`~ddia_ray.errors.NoReplicaAvailableError` when nothing is left, and
hands the remaining candidates (in insertion order) to the subclass's
``_choose``. Subclasses react to membership changes through the ``_on_*``
hooks. The concrete algorithms live one per module: ``round_robin``,
``weighted``, ``least_connections``, ``power_of_two`` and ``consistent_hash``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Set
from types import MappingProxyType

from .._validate import integer, positive
from ..errors import ConfigError, InvalidArgumentError, NoReplicaAvailableError, UnknownNodeError

__all__ = ["Picker"]


class Picker(ABC):
    """Abstract base of the pickers: a weighted member set and a ``pick`` method.

    ``rng`` is the only source of randomness; it defaults to ``random.Random(0)``
    so an unseeded picker is still reproducible (pass your own seeded one to get
    independent streams).
    """

    def __init__(self, *, rng: random.Random | None = None):
        if rng is None:
            rng = random.Random(0)
        if not isinstance(rng, random.Random):
            raise InvalidArgumentError(f"rng must be a random.Random, got {type(rng).__name__}")
        self._rng = rng
        # dict keeps insertion order: it is the canonical member order.
        self._weights: dict[str, int] = {}

    # --- membership ------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        """Every member, in insertion order."""
        return tuple(self._weights)

    @property
    def weights(self) -> Mapping[str, int]:
        """A read-only view of member -> weight."""
        return MappingProxyType(self._weights)

    def weight(self, member: str) -> int:
        """The weight of ``member``; raises :class:`UnknownNodeError`."""
        self._require_member(member)
        return self._weights[member]

    def __contains__(self, member: object) -> bool:
        return member in self._weights

    def __len__(self) -> int:
        return len(self._weights)

    def add(self, member: str, weight: int = 1) -> None:
        """Add ``member`` with a positive integer ``weight``.

        Raises :class:`ConfigError` if it is already a member or the weight is
        not positive, :class:`InvalidArgumentError` for a non-str name or a
        non-int weight.
        """
        _check_member_name(member)
        _check_weight(weight)
        if member in self._weights:
            raise ConfigError(f"{member!r} is already a member; use set_weight() to change its weight")
        self._weights[member] = weight
        self._on_add(member, weight)

    def remove(self, member: str) -> None:
        """Remove ``member``; raises :class:`UnknownNodeError` if it is not one."""
        self._require_member(member)
        index = list(self._weights).index(member)
        del self._weights[member]
        self._on_remove(member, index)

    def set_weight(self, member: str, weight: int) -> None:
        """Change the weight of an existing member."""
        self._require_member(member)
        _check_weight(weight)
        old = self._weights[member]
        self._weights[member] = weight
        self._on_weight(member, old, weight)

    # --- picking ---------------------------------------------------------

    def pick(
        self,
        key: bytes | str | None = None,
        *,
        exclude: Set = frozenset(),
        load: Mapping[str, int] | None = None,
    ) -> str:
        """Choose one member that is not in ``exclude``.

        ``key`` is the request's routing key (only consistent hashing needs
        it); ``load`` maps members to their current in-flight counts (missing
        members count as 0; only load-aware pickers read it). Raises
        :class:`NoReplicaAvailableError` when the pool is empty or every member
        is excluded.
        """
        key_bytes = _normalise_key(key)
        if not isinstance(exclude, Set):
            raise InvalidArgumentError(f"exclude must be a set of member names, got {type(exclude).__name__}")
        if load is None:
            load = {}
        elif not isinstance(load, Mapping):
            raise InvalidArgumentError(f"load must be a mapping member -> in-flight count, got {type(load).__name__}")
        if not self._weights:
            raise NoReplicaAvailableError(f"{type(self).__name__} has no members; add() at least one")
        candidates = tuple(m for m in self._weights if m not in exclude)
        if not candidates:
            raise NoReplicaAvailableError(
                f"all {len(self._weights)} members of {type(self).__name__} are excluded: {sorted(self._weights)}"
            )
        return self._choose(key_bytes, candidates, exclude, load)

    @abstractmethod
    def _choose(self, key: bytes | None, candidates: tuple[str, ...], exclude: Set, load: Mapping[str, int]) -> str:
        """Pick one of the non-empty ``candidates`` (members not in ``exclude``, in member order)."""

    # --- hooks for subclasses --------------------------------------------

    def _on_add(self, member: str, weight: int) -> None:  # noqa: B027 - an optional hook, not abstract
        """Called after ``member`` was added."""

    def _on_remove(self, member: str, index: int) -> None:  # noqa: B027 - an optional hook, not abstract
        """Called after ``member`` (formerly at position ``index``) was removed."""

    def _on_weight(self, member: str, old: int, new: int) -> None:  # noqa: B027 - an optional hook, not abstract
        """Called after ``member``'s weight changed from ``old`` to ``new``."""

    # --- helpers ---------------------------------------------------------

    def _require_member(self, member: str) -> None:
        if member not in self._weights:
            raise UnknownNodeError(member, self._weights)


class _Cursor:
    """A round-robin position in a member list that survives removals.

    Shared by the round-robin picker and the least-connections tie breaker:
    ``rotated`` yields members starting at the cursor, ``advance_past`` moves
    the cursor just after the chosen one.
    """

    __slots__ = ("position",)

    def __init__(self) -> None:
        self.position = 0

    def rotated(self, order: tuple[str, ...]):
        """Yield ``(index, member)`` for every member, starting at the cursor."""
        n = len(order)
        start = self.position % n
        for step in range(n):
            index = (start + step) % n
            yield index, order[index]

    def advance_past(self, index: int) -> None:
        """Make the member after ``index`` the next one to be considered."""
        self.position = index + 1

    def on_remove(self, index: int) -> None:
        """Keep pointing at the same next member after position ``index`` vanished."""
        if index < self.position:
            self.position -= 1


def _check_member_name(member) -> None:
    if not isinstance(member, str):
        raise InvalidArgumentError(f"member names are str, got {type(member).__name__}")
    if not member:
        raise ConfigError("member name must be a non-empty string")


def _check_weight(weight) -> None:
    integer("weight", weight)
    positive("weight", weight)


def _normalise_key(key) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgumentError(f"key must be bytes, str or None, got {type(key).__name__}")


def _load_of(load: Mapping[str, int], member: str) -> int:
    """The in-flight count of ``member`` (0 when absent), checked to be an int >= 0."""
    value = load.get(member, 0)
    integer(f"load[{member!r}]", value)
    if value < 0:
        raise ConfigError(f"load[{member!r}] must be >= 0, got {value}")
    return value
