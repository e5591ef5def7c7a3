"""The consumer groups as a leader service: their state in the leader's memory, checkpointed to their rows.

Theory of operation
-------------------
Every consumer's batch used to be one procedure call, ``events.group_ack_pull``:
a Raft commit on three members per batch (1.4 to 4.7 ms here, with four in
flight), and the group's row rewritten on every member. EventStoreDB keeps a
persistent subscription's state on the leader instead and writes a checkpoint
now and then; this module is that design on the replicated store's leader
services (:mod:`ddia_ray.replication.leader_services`):

* the leader loads a group's row (:class:`~.consumer_groups.Group`) the first
  time a call names it in its term, and from then on serves pulls, acks and
  nacks from memory, with the same functions the procedures use
  (:mod:`.consumer_groups`), so the rules (timeouts, retries, parks,
  ``max_in_flight``) are one implementation;
* a pull's answer carries the events it hands out (the chunk parts and rows of
  :func:`~.consumer_groups.read_positions`), read from the leader's state in
  the same call: there is no log entry whose size the events would swell, so a
  batch is one round trip instead of a pull and a read;
* the leader writes each changed group's row (and its parked events) as one
  write entry every 0.2 s while something changed, after 10,000 changes, and at
  once for a *durable* call, answered only when that entry commits: create,
  delete, an explicit ack (``PersistentSubscription.ack``, which ``run`` sends on
  its way out), a nack, an unpark, and a pull that parked events.

What a leader failover costs: the new leader resumes from the last checkpoint,
so events handed out or acked (by a pull's ack) since then are handed out again.
Delivery was at least once already; this makes redeliveries after a failover
more likely, never a loss. A parked event is parked durably before anyone hears
of it, so parks stay never silent. A call that fails on the old leader is sent
to the new one by the client, so every method can be repeated: an ack of a
settled event is a no-op, a second pull hands out more (the first's events
time out).

Each call works on a copy of its group and keeps it only if the whole call
succeeded, so a refused call (``NotDeliveredError`` halfway through an ack)
changes nothing, as a refused procedure writes nothing.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError, UnknownConsumerGroupError
from ..replication.leader_services import leader_service
from ..replication.records import PUT
from ..replication.state import state_reader
from . import keys
from .consumer_groups import (MAX_READ_POSITIONS, Group, _ack, _check_name, _group_key, _nack, _pull, _unpark,
                              group_create, group_delete, info_of, read_positions)

__all__ = ["GroupService", "SERVICE", "MAX_ANSWER_EVENTS"]

#: The leader service's name.
SERVICE = "events.groups"
#: The most events a pull's answer carries (what :func:`~.consumer_groups.read_positions` reads in
#: one call); a pull that hands out more sends their positions, and the consumer reads the rest.
MAX_ANSWER_EVENTS = MAX_READ_POSITIONS


@leader_service(SERVICE)
class GroupService:
    """Every consumer group's state on the leader (see the module docstring)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}  # loaded (or created) in this term: authoritative from then on
        self.gone: set[str] = set()  # deleted in this term (their rows may still be in the state)
        self._ops: dict[str, list] = {}  # group -> what its next checkpoint writes besides its row
        self._changed: set[str] = set()
        self.unsaved = 0  # events handed out or settled since the last checkpoint

    def call(self, state: Any, method: str, args: Any) -> tuple[Any, bool]:
        """Run ``method`` with ``args``: ``(result, durable)`` (see the module docstring)."""
        fn = _METHODS.get(method) if isinstance(method, str) else None
        if fn is None:
            raise InvalidArgumentError(f"the consumer groups have no method {method!r:.80}; they have "
                                       f"{tuple(_METHODS)}")
        if not isinstance(args, tuple) or not args:
            raise InvalidArgumentError(f"the arguments of {method} are a tuple starting with the group's name")
        _check_name("consumer group", args[0])
        return fn(self, state, args)

    def checkpoint(self) -> tuple:
        """The ops writing every group changed since the last checkpoint: the parks and deletes it
        made, then its row."""
        ops: list = []
        for group in sorted(self._changed):
            ops.extend(self._ops.pop(group, ()))
            g = self.groups.get(group)
            if g is not None:
                ops.append((PUT, _group_key(group), g.row()))
        self._changed.clear()
        self.unsaved = 0
        return tuple(ops)

    # --- the groups ------------------------------------------------------------------------------

    def _get(self, state: Any, group: str):
        """A procedure's ``get`` over ``state`` that sees this term's groups as they are in memory."""
        reader = state_reader(state)
        key = _group_key(group)

        def get(k: bytes) -> bytes | None:
            if k == key:
                g = self.groups.get(group)
                if g is not None:
                    return g.row()
                if group in self.gone:
                    return None
            return reader(k)

        get.seek = reader.seek  # type: ignore[attr-defined]
        get.many = reader.many  # type: ignore[attr-defined]
        return get

    def _load(self, state: Any, group: Any) -> Group:
        """A copy of ``group``'s state to change (kept by :meth:`_keep` when the call succeeds); its
        name was checked by :meth:`call`."""
        g = self.groups.get(group)
        if g is None:
            row = None if group in self.gone else state.get(_group_key(group))
            if row is None:
                raise UnknownConsumerGroupError(f"no consumer group {group!r}: create it first", group=group)
            g = self.groups[group] = Group(row)
            # An earlier leader may have handed out events after this checkpoint, and acks of those
            # must not be refused as never delivered. It handed out only events committed before
            # this leader's term, all below the end of $all now (this leader has applied them).
            g.foreign = keys.next_position(state.get)
        return g.copy()

    def _keep(self, group: str, g: Group, ops: tuple | list = ()) -> None:
        """``g`` is ``group``'s state now; ``ops`` (parks) go with its next checkpoint."""
        before = self.groups[group]
        changes = sum(g.counters.values()) - sum(before.counters.values())
        if changes or ops or g.cursor != before.cursor or len(g.retry) != len(before.retry) \
                or len(g.inflight) != len(before.inflight) or g.parked != before.parked:
            self._changed.add(group)
            self.unsaved += max(changes, 1)
        self.groups[group] = g
        if ops:
            self._ops.setdefault(group, []).extend(ops)

    # --- methods ---------------------------------------------------------------------------------

    def _create(self, state: Any, args: tuple) -> tuple[bool, bool]:
        ops, created = group_create(self._get(state, args[0]), args)
        if created:
            group = args[0]
            self.gone.discard(group)
            self.groups[group] = Group(ops[0][2])
            self._changed.add(group)
        return created, True

    def _delete(self, state: Any, args: tuple) -> tuple[bool, bool]:
        ops, existed = group_delete(self._get(state, args[0]), args)
        if existed:
            group = args[0]
            self.groups.pop(group, None)
            self.gone.add(group)
            self._ops[group] = list(ops)  # its pending parks are deleted with it
            self._changed.add(group)
        return existed, True

    def _pull(self, state: Any, args: tuple) -> tuple[tuple, bool]:
        if len(args) != 4:
            raise InvalidArgumentError("a pull is (group, consumer, n, now_ms)")
        group, consumer, n, now_ms = args
        g = self._load(state, group)
        return self._hand_out(state, group, g, consumer, n, now_ms)

    def _ack_pull(self, state: Any, args: tuple) -> tuple[tuple, bool]:
        if len(args) != 5:
            raise InvalidArgumentError("an ack-and-pull is (group, positions, consumer, n, now_ms)")
        group, positions, consumer, n, now_ms = args
        g = self._load(state, group)
        _ack(g, group, positions)
        return self._hand_out(state, group, g, consumer, n, now_ms)

    def _hand_out(self, state: Any, group: str, g: Group, consumer: Any, n: Any, now_ms: Any) -> tuple[tuple, bool]:
        """Pull for ``consumer`` and keep ``g``: ``((checkpoint, handed runs, their events), durable)``;
        durable when the pull parked events (timed out too often), so a park is committed first."""
        parks, handed = _pull(state_reader(state), g, group, consumer, n, now_ms)
        checkpoint = g.checkpoint
        self._keep(group, g, parks)
        positions = tuple(p for first, last, _ in handed for p in range(first, last + 1))
        events = read_positions(state, (positions,)) if positions and len(positions) <= MAX_ANSWER_EVENTS else None
        return (checkpoint, handed, events), bool(parks)

    def _ack(self, state: Any, args: tuple) -> tuple[int, bool]:
        if len(args) != 2:
            raise InvalidArgumentError("an ack is (group, positions)")
        group, positions = args
        g = self._load(state, group)
        _ack(g, group, positions)
        self._keep(group, g)
        return g.checkpoint, True

    def _nack(self, state: Any, args: tuple) -> tuple[int, bool]:
        if len(args) != 4:
            raise InvalidArgumentError("a nack is (group, positions, action, reason)")
        group, positions, action, reason = args
        g = self._load(state, group)
        parks = _nack(g, group, positions, action, reason)
        self._keep(group, g, parks)
        return g.checkpoint, True

    def _unpark(self, state: Any, args: tuple) -> tuple[int, bool]:
        if len(args) != 2:
            raise InvalidArgumentError("an unpark is (group, positions)")
        group, positions = args
        g = self._load(state, group)
        ops, moved = _unpark(state_reader(state), g, group, positions)
        self._keep(group, g, ops)
        return moved, True

    def _info(self, state: Any, args: tuple) -> tuple[dict, bool]:
        if len(args) != 1:
            raise InvalidArgumentError("an info call is (group,)")
        group = args[0]
        g = self._load(state, group)
        return {**info_of(g, group, keys.next_position(state.get)), "unsaved": self.unsaved}, False


_METHODS = {"create": GroupService._create, "delete": GroupService._delete, "pull": GroupService._pull,
            "ack_pull": GroupService._ack_pull, "ack": GroupService._ack, "nack": GroupService._nack,
            "unpark": GroupService._unpark, "info": GroupService._info}
