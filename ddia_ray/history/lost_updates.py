"""Lost updates: did the store keep every acknowledged write that nobody knowingly replaced?

Theory of operation
-------------------
A store that accepts concurrent writes of one key (multi-leader, leaderless) must not silently
drop any of them. Last-writer-wins does exactly that: of two concurrent acknowledged writes it
keeps one and discards the other, and no client ever learns (DDIA 5.4, "Last write wins
(discarding concurrent writes)"; 5.5, "Detecting Concurrent Writes"). Keeping siblings, merging
them with a resolver, or using CRDTs (Shapiro et al. 2011) keeps them. This checker tells the two
apart from a history of client operations and the store's final state.

Registers (:class:`RegisterWrite`). Each write has a unique ``id``, its ``key``, whether it was
``acked``, and ``observed``: the ids of the writes of that key whose values the client had read
before writing (from the siblings a read returned, or a merged value that names the ids it
merged): the writes it knowingly replaces. The final state gives, per key, the ids of the writes
whose values are present (the siblings left, or the ids a resolver's merged value names; a
delete is a write too, present while its tombstone is the state). A write is *replaced* if a
present or an acknowledged write observes it, directly or through a chain of observations (the
closure): an acknowledged write replaced what it observed even if it was itself lost later, and
only its own loss counts. An acked write is **lost** if it is neither present nor replaced.
Unacked writes may or may not have landed: never lost, but what they observed counts.

Counters (:class:`CounterUpdate`). Acked increments must all land, unacked ones may: the final
value must lie within ``acked sum + [sum of the unacked negative amounts, sum of the unacked
positive ones]``. Below that the shortfall is the ``lost_amount`` (with unit increments, the
number of lost increments, which is what ``lost`` counts); above, the ``excess_amount``
(an increment applied twice, e.g. a retried non-idempotent one).

Sets (:class:`SetUpdate`, an OR-Set's history). An acked add of element ``e`` is lost if ``e``
is absent at the end and no remove observed that add (a remove removes the adds it saw, DDIA
fig. 5-14's shopping cart). An acked remove is lost if its element is present although every add
of it was observed by acked removes (the element came back).

Text (:class:`TextUpdate`, a sequence CRDT's history such as RGA or Logoot). An insert of
``text`` creates the characters ``(id, 0) .. (id, len - 1)``; a delete names the characters it
deletes, which it must have observed. The final state gives, per key, the ids of the characters
present. Each acked inserted character neither present nor deleted by some delete is lost.

The check is linear in the history: one pass to index the operations, one closure per key.
Operations and results are codec records, so histories can be saved and checked later.

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

from ..codec import record
from ..errors import CRDTTypeError, InvalidArgumentError

__all__ = ["RegisterWrite", "CounterUpdate", "SetUpdate", "TextUpdate", "LostUpdateResult", "check_lost_updates",
           "LOST_IDS_MAX"]

#: Default cap of the ids a result lists.
LOST_IDS_MAX = 20


def _common(op) -> None:
    if not isinstance(op.id, str) or not op.id:
        raise InvalidArgumentError(f"an operation id is a non-empty str, got {op.id!r:.60}")
    if not isinstance(op.key, bytes):
        raise InvalidArgumentError(f"an operation key is bytes, got {type(op.key).__name__}")
    if not isinstance(op.acked, bool):
        raise InvalidArgumentError(f"acked is a bool, got {type(op.acked).__name__}")


def _ids(name: str, value) -> None:
    if not isinstance(value, tuple) or not all(isinstance(i, str) for i in value):
        raise InvalidArgumentError(f"{name} is a tuple of operation ids (str)")


@record("history.lu_write", version=1)
class RegisterWrite:
    """A write (or delete) ``id`` of register ``key``; ``observed``: the ids of the writes of ``key`` whose
    values the client read before writing, which this write knowingly replaces."""

    id: str
    key: bytes
    acked: bool
    observed: tuple = ()

    def __post_init__(self):
        _common(self)
        _ids("observed", self.observed)


@record("history.lu_counter", version=1)
class CounterUpdate:
    """An increment ``id`` of counter ``key`` by ``amount`` (negative: a decrement)."""

    id: str
    key: bytes
    acked: bool
    amount: int = 1

    def __post_init__(self):
        _common(self)
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise InvalidArgumentError(f"amount is an int, got {type(self.amount).__name__}")


@record("history.lu_set", version=1)
class SetUpdate:
    """An ``"add"`` or ``"remove"`` ``id`` of ``element`` in set ``key``; a remove's ``observed`` are the ids of
    the adds of ``element`` it saw and removes."""

    id: str
    key: bytes
    acked: bool
    op: str
    element: bytes
    observed: tuple = ()

    def __post_init__(self):
        _common(self)
        if self.op not in ("add", "remove"):
            raise InvalidArgumentError(f"a set operation is 'add' or 'remove', got {self.op!r:.40}")
        if not isinstance(self.element, bytes):
            raise InvalidArgumentError(f"a set element is bytes, got {type(self.element).__name__}")
        _ids("observed", self.observed)
        if self.op == "add" and self.observed:
            raise InvalidArgumentError("an add observes nothing; removes observe the adds they remove")


@record("history.lu_text", version=1)
class TextUpdate:
    """An ``"insert"`` of ``text`` (characters ``(id, 0)``, ``(id, 1)``, ...) or a ``"delete"`` of the
    characters ``deletes`` (``(insert id, offset)`` pairs it observed) in text ``key``."""

    id: str
    key: bytes
    acked: bool
    op: str
    text: str = ""
    deletes: tuple = ()

    def __post_init__(self):
        _common(self)
        if self.op not in ("insert", "delete"):
            raise InvalidArgumentError(f"a text operation is 'insert' or 'delete', got {self.op!r:.40}")
        if not isinstance(self.text, str):
            raise InvalidArgumentError(f"text is a str, got {type(self.text).__name__}")
        if not isinstance(self.deletes, tuple) or not all(
                isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], int)
                and not isinstance(c[1], bool) and c[1] >= 0 for c in self.deletes):
            raise InvalidArgumentError("deletes is a tuple of (insert id, offset >= 0) pairs")
        if self.op == "insert" and self.deletes or self.op == "delete" and self.text:
            raise InvalidArgumentError("an insert has text and no deletes; a delete has deletes and no text")


_KINDS = {RegisterWrite: "register", CounterUpdate: "counter", SetUpdate: "set", TextUpdate: "text"}


@record("history.lost_updates", version=1)
class LostUpdateResult:
    """The verdict of :func:`check_lost_updates`.

    ``checked``: acked items judged (register writes, counter keys, set adds and removes, inserted
    characters). ``lost``: how many of them were lost (a counter's shortfall counts as that many unit
    increments). ``lost_ids``: a sorted sample (at most the cap) of what was lost: write, add and remove
    ids, ``"<insert id>#<offset>"`` for characters, ``"counter:<key hex>:<shortfall>"`` for counters.
    ``lost_amount`` / ``excess_amount``: the counters' shortfall and surplus, summed over keys.
    ``by_kind``: kind -> lost.
    """

    checked: int
    lost: int
    lost_ids: tuple = ()
    lost_amount: int = 0
    excess_amount: int = 0
    by_kind: dict = None  # type: ignore[assignment]  # a fresh {} per instance, set below

    def __post_init__(self):
        for name in ("checked", "lost", "lost_amount", "excess_amount"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgumentError(f"{name} is an int >= 0")
        if not isinstance(self.lost_ids, tuple) or not all(isinstance(i, str) for i in self.lost_ids):
            raise InvalidArgumentError("lost_ids is a tuple of str")
        if self.by_kind is None:
            object.__setattr__(self, "by_kind", {})
        if not isinstance(self.by_kind, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in self.by_kind.items()):
            raise InvalidArgumentError("by_kind maps a kind (str) to a count (int)")

    @property
    def ok(self) -> bool:
        """No acknowledged update was lost (and no counter over-counted)."""
        return self.lost == 0 and self.excess_amount == 0

    def summary(self) -> str:
        """One line: how many acked updates were checked and lost, and which."""
        if self.ok:
            return f"no lost updates: {self.checked} acknowledged updates checked"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()) if v)
        extra = f"; counters short by {self.lost_amount}" if self.lost_amount else ""
        extra += f"; counters over by {self.excess_amount}" if self.excess_amount else ""
        return (f"{self.lost} of {self.checked} acknowledged updates lost ({kinds or 'none'}){extra}; "
                f"e.g. {', '.join(self.lost_ids[:5])}")


def check_lost_updates(ops: Iterable[Any], final: Mapping[bytes, Any], *,
                       lost_ids_max: int = LOST_IDS_MAX) -> LostUpdateResult:
    """Judge a history of ``ops`` (:class:`RegisterWrite`, :class:`CounterUpdate`, :class:`SetUpdate`,
    :class:`TextUpdate`) against the store's ``final`` state per key (see the module doc):

    * register: the ids of the writes present (an iterable of str);
    * counter: the value (an int);
    * set: the elements present (an iterable of bytes);
    * text: the characters present (an iterable of ``(insert id, offset)``).

    A key absent from ``final`` is empty (0 for a counter). Raises :class:`InvalidArgumentError` for a
    malformed history (a repeated id, an observation of an unknown write or of another key) and
    :class:`CRDTTypeError` for a key used with operations of two kinds.
    """
    if isinstance(lost_ids_max, bool) or not isinstance(lost_ids_max, int) or lost_ids_max < 0:
        raise InvalidArgumentError(f"lost_ids_max is an int >= 0, got {lost_ids_max!r}")
    if not isinstance(final, Mapping):
        raise InvalidArgumentError(f"final is a mapping of key -> final state, got {type(final).__name__}")
    by_id: dict[str, Any] = {}
    by_key: dict[bytes, list] = defaultdict(list)
    kind_of: dict[bytes, str] = {}
    for op in ops:
        kind = _KINDS.get(type(op))
        if kind is None:
            raise InvalidArgumentError(f"a history holds RegisterWrite, CounterUpdate, SetUpdate and TextUpdate "
                                       f"records, got {type(op).__name__}")
        if op.id in by_id:
            raise InvalidArgumentError(f"operation id {op.id!r} occurs twice; ids must be unique")
        if kind_of.setdefault(op.key, kind) != kind:
            raise CRDTTypeError(f"key {op.key!r} has {kind_of[op.key]} and {kind} operations", kind_of[op.key], kind)
        by_id[op.id] = op
        by_key[op.key].append(op)
    checked, lost_amount, excess = 0, 0, 0
    lost: list[str] = []
    by_kind = {"register": 0, "counter": 0, "set": 0, "text": 0}
    for key, key_ops in by_key.items():
        kind = kind_of[key]
        state = final.get(key)
        if kind == "register":
            n, found = _registers(key, key_ops, by_id, state)
        elif kind == "counter":
            n, found, short, over = _counter(key, key_ops, state)
            lost_amount += short
            excess += over
        elif kind == "set":
            n, found = _set(key, key_ops, by_id, state)
        else:
            n, found = _text(key, key_ops, by_id, state)
        checked += n
        by_kind[kind] += len(found) if kind != "counter" else _lost_amount_of(found)
        lost += found
    total = sum(by_kind.values())
    return LostUpdateResult(checked, total, tuple(sorted(lost)[:lost_ids_max]), lost_amount, excess, by_kind)


def _lost_amount_of(found: list[str]) -> int:
    """How many unit increments the counter entries of ``found`` (``"counter:<hex>:<amount>"``) lost."""
    return sum(int(f.rsplit(":", 1)[1]) for f in found)


def _iter_final(state, what: str, key: bytes) -> set:
    if state is None:
        return set()
    if isinstance(state, (str, bytes)) or not isinstance(state, Iterable):
        raise InvalidArgumentError(f"the final state of {what} {key!r} is an iterable, got {type(state).__name__}")
    try:
        return {tuple(x) if isinstance(x, list) else x for x in state}
    except TypeError as e:  # an unhashable item: not an id, an element or a character
        raise InvalidArgumentError(f"the final state of {what} {key!r} holds an item of the wrong type: {e}") from None


def _check_observed(op, observed: tuple, by_id: Mapping[str, Any], want: type, key: bytes) -> None:
    for i in observed:
        other: Any = by_id.get(i)
        if other is None:
            raise InvalidArgumentError(f"operation {op.id!r} observed {i!r}, which is not in the history")
        if type(other) is not want or getattr(other, "key", None) != key:
            raise InvalidArgumentError(f"operation {op.id!r} observed {i!r}, which is not a {want.__name__} of {key!r}")


def _registers(key: bytes, ops: list, by_id: Mapping[str, Any], state) -> tuple[int, list[str]]:
    present = _iter_final(state, "register", key)
    for op in ops:
        _check_observed(op, op.observed, by_id, RegisterWrite, key)
    for i in present:
        if not isinstance(i, str) or i not in by_id or by_id[i].key != key:
            raise InvalidArgumentError(f"the final state of {key!r} names {i!r:.60}, no write of that key")
    # Everything a present or an acknowledged write knowingly replaced, transitively: an explicit stack, not
    # recursion. An acknowledged write replaced what it observed even if it was itself lost later: its own
    # loss is the one to count, not again the loss of what it had replaced.
    replaced: set[str] = set()
    stack = [*present, *(op.id for op in ops if op.acked)]
    while stack:
        for observed in by_id[stack.pop()].observed:
            if observed not in replaced:
                replaced.add(observed)
                stack.append(observed)
    acked = [op.id for op in ops if op.acked]
    return len(acked), [i for i in acked if i not in present and i not in replaced]


def _counter(key: bytes, ops: list, state) -> tuple[int, list[str], int, int]:
    value = 0 if state is None else state
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"the final state of counter {key!r} is an int, got {type(value).__name__}")
    acked = sum(op.amount for op in ops if op.acked)
    low = acked + sum(op.amount for op in ops if not op.acked and op.amount < 0)
    high = acked + sum(op.amount for op in ops if not op.acked and op.amount > 0)
    short, over = max(0, low - value), max(0, value - high)
    found = [f"counter:{key.hex()}:{short}"] if short else []
    return (1 if any(op.acked for op in ops) else 0), found, short, over


def _set(key: bytes, ops: list, by_id: Mapping[str, Any], state) -> tuple[int, list[str]]:
    present = _iter_final(state, "set", key)
    removed_by: dict[str, list] = defaultdict(list)  # add id -> removes that observed it
    adds_of: dict[bytes, list] = defaultdict(list)
    for op in ops:
        if op.op == "remove":
            _check_observed(op, op.observed, by_id, SetUpdate, key)
            for i in op.observed:
                if by_id[i].op != "add" or by_id[i].element != op.element:
                    raise InvalidArgumentError(f"remove {op.id!r} observed {i!r}, not an add of its element")
                removed_by[i].append(op)
        else:
            adds_of[op.element].append(op)
    checked, lost = 0, []
    for op in ops:
        if not op.acked:
            continue
        checked += 1
        if op.op == "add":
            if op.element not in present and not removed_by.get(op.id):
                lost.append(op.id)
        elif op.element in present:
            # The element is back although acked removes saw every add of it: a remove was lost.
            adds = adds_of.get(op.element, [])
            if all(any(r.acked for r in removed_by.get(a.id, ())) for a in adds):
                lost.append(op.id)
    return checked, lost


def _text(key: bytes, ops: list, by_id: Mapping[str, Any], state) -> tuple[int, list[str]]:
    present = _iter_final(state, "text", key)
    deleted: set = set()
    for op in ops:
        if op.op == "delete":
            for insert_id, offset in op.deletes:
                other = by_id.get(insert_id)
                if type(other) is not TextUpdate or other.key != key or other.op != "insert" \
                        or offset >= len(other.text):
                    raise InvalidArgumentError(f"delete {op.id!r} names character ({insert_id!r}, {offset}), which "
                                               f"no insert of {key!r} created")
                deleted.add((insert_id, offset))
    checked, lost = 0, []
    for op in ops:
        if op.op == "insert" and op.acked:
            for offset in range(len(op.text)):
                checked += 1
                char = (op.id, offset)
                if char not in present and char not in deleted:
                    lost.append(f"{op.id}#{offset}")
    return checked, lost
