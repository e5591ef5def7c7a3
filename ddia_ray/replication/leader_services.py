"""Leader-held services: state the Raft leader keeps in memory and checkpoints through its log.

Theory of operation
-------------------
A procedure (:mod:`.procedures`) is decided in the log, so every call costs a
commit: a round of messages to the followers and a write on every member. That is
the price of state that must never go back. Some state may go back a little, as
long as it never goes back silently: a consumer group's cursor and its events in
flight. A group that forgets an ack redelivers the event, which its consumers must
tolerate anyway (delivery is at least once). EventStoreDB keeps its persistent
subscriptions so: the leader holds each group's state in memory, serves pulls and
acks from it, and writes a checkpoint to a stream now and then; a new leader
resumes from the last checkpoint and hands out again what was in flight. Kafka's
group coordinator likewise keeps offsets in memory and commits them to a log.

A *leader service* is that pattern once, for any service of the replicated store:

* a class registered under a name with :func:`leader_service`, built on the leader
  the first time a call names it in a term (the member loads its modules as it
  loads procedures: ``procedures=``);
* ``call(state, method, args) -> (result, durable)``: a :class:`ReplServiceCall`
  sent to the leader, run against the leader's applied state (read only, as a
  query reads it: ``state.get``, ``state.get_many``, ``state.scan``;
  :func:`~.state.state_reader` gives a procedure's ``get`` over it) and the service's memory. ``durable`` asks the host
  to answer only once a checkpoint holding the call's effects has committed (a
  group's create, an explicit ack, a park); otherwise the answer goes at once;
* ``unsaved``: how much changed since the last checkpoint (a group counts events
  handed out and settled), and ``checkpoint() -> ops``: the puts and deletes that
  write the service's state to the store's rows.

:class:`LeaderServices` is the host, a pure object the Raft replica owns: it
keeps the services of the current term, counts the calls and checkpoints, and
says when a checkpoint is due (``every_ticks`` since the last one while anything
is unsaved, ``every_changes`` unsaved changes, or a durable call). The replica
proposes each checkpoint as an ordinary write entry, so it is replicated,
recovered and snapshotted like any other, and answers the durable calls that wait
on it when it applies.

Safety rests on two rules:

* **A service is built only from committed state.** The leader serves a call once
  it has applied an entry of its own term (its first entry, Raft's no-op), so
  every checkpoint committed by an earlier leader is in the state it loads from.
* **A service lives for one term.** When the member stops leading or the term
  changes, the host drops every service, and the calls waiting for a checkpoint
  are refused with :class:`~ddia_ray.errors.NotLeaderError`, which a client
  sends again to the new leader. A deposed leader that does not know it yet may
  still answer (its checkpoints cannot commit); what it handed out is handed out
  again by the new leader: duplicates, never losses.

So what a leader failover costs is what changed since the last checkpoint: the
service's state goes back to it, and a group hands out again the events it
delivered or had acked since then.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import codec
from ..codec import record
from ..error_record import ErrorRecord
from ..errors import DdiaRayError, InvalidArgumentError, UnknownProcedureError
from ..registry import Registry

__all__ = ["ReplServiceCall", "leader_service", "LeaderServices", "registered_services"]

#: A service's or a method's name: short and printable, as a procedure's.
_NAME_MAX = 128


@record("repl.service_call", version=1)
class ReplServiceCall:
    """A call of ``method`` of leader service ``service`` with msgpack ``args``, served by the
    leader (see the module docstring); answered as a :class:`~.records.QueryResult`."""

    service: str
    method: str
    args: bytes = b""

    # Routed as a leader read: the clients' read path sends it to the leader and follows its hints.
    read = "leader"
    after_epoch = 0
    after_lsn = 0
    max_staleness_s = -1.0
    wait_s = 0.0
    fence = 0

    def __post_init__(self):
        for what, name in (("service", self.service), ("method", self.method)):
            if not isinstance(name, str) or not name or len(name) > _NAME_MAX or not name.isprintable():
                raise InvalidArgumentError(f"a leader service call names its {what} with a printable str of "
                                           f"1..{_NAME_MAX} characters, got {name!r:.80}")
        if type(self.args) is not bytes:
            raise InvalidArgumentError("a leader service call's arguments are msgpack bytes")


def _same_class(a: Any, b: Any) -> bool:
    """One class, maybe loaded twice (a module imported again): the same module and name."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


_SERVICES: Registry[Callable[[], Any]] = Registry("leader service", same=_same_class, taken=InvalidArgumentError)


def leader_service(name: str) -> Callable:
    """Register the decorated class as leader service ``name`` in this process (see the module
    docstring); one name for two classes is refused, as for procedures."""
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidArgumentError(f"a leader service's name is a printable str of 1..{_NAME_MAX} characters")

    def wrap(cls):
        _SERVICES.register(name, cls)
        return cls

    return wrap


def registered_services() -> tuple[str, ...]:
    """The leader services this process knows."""
    return tuple(_SERVICES.names())


class LeaderServices:
    """The leader's services of one term (see the module docstring). ``every_ticks``: ticks between
    checkpoints while anything is unsaved; ``every_changes``: unsaved changes that make one due
    at once."""

    def __init__(self, *, every_ticks: int = 20, every_changes: int = 10_000) -> None:
        if type(every_ticks) is not int or every_ticks < 1 or type(every_changes) is not int or every_changes < 1:
            raise InvalidArgumentError("a leader checkpoints every_ticks >= 1 and every_changes >= 1")
        self.every_ticks = every_ticks
        self.every_changes = every_changes
        self.term = -1
        self._services: dict[str, Any] = {}
        self._saved_at = 0  # the tick of the last checkpoint taken
        self._urgent = False  # a durable call waits: checkpoint now
        self.figures = {"service_calls": 0, "service_checkpoints": 0, "service_resets": 0}
        # The calls of the host (tend): waiting for the leader to catch up with its term, durable
        # answers waiting for the next checkpoint, and those held until a proposed one applies.
        self._waiting: list[tuple[int, ReplServiceCall]] = []
        self._pending: list[tuple[int, Any]] = []
        self._held: dict[int, list] = {}  # checkpoint index -> [(request id, result)]
        self._last = -1  # the index of this term's last checkpoint proposed (-1: none)

    def __bool__(self) -> bool:
        return bool(self._services)

    @property
    def busy(self) -> bool:
        """Whether :meth:`tend` has anything to do: services to checkpoint, or calls to serve."""
        return bool(self._services or self._waiting or self._pending or self._held)

    @property
    def held(self) -> bool:
        """Whether durable answers wait for a proposed checkpoint to apply."""
        return bool(self._held)

    def flush(self) -> None:
        """Make a checkpoint due at the next :meth:`tend` (before a leadership transfer, so the new
        leader resumes from what this one holds, not from the last periodic checkpoint)."""
        if self._services:
            self._urgent = True

    def submit(self, rid: int, req: ReplServiceCall) -> None:
        """Take request ``rid`` for :meth:`tend` to serve."""
        self._waiting.append((rid, req))

    def tend(self, *, leading: bool, term: int, caught_up: bool, applied: int, ticks: int, state: Any,
             propose: Callable[[tuple], int], answer: Callable[[int, Any], None],
             refuse: Callable[[int], None], can_propose: bool = True) -> bool:
        """After an input of the replica: drop the services if the member stopped leading or leads
        in a new ``term``; serve the submitted calls once ``caught_up`` (the leader applied an entry
        of its term); propose a checkpoint (``propose(ops) -> index``) when one is due and
        ``can_propose`` (not while leadership is being transferred: durable answers wait). A durable
        call's result is given to ``answer`` once the checkpoint holding it applies (:meth:`saved`),
        or at once if there was nothing to write and none outstanding. ``refuse(rid)`` answers a
        call the term ended under. Whether it proposed a checkpoint."""
        if not leading:
            self._drop(-1, refuse, waiting=True)
            return False
        if term != self.term:  # leading in a new term: what an older one held is refused
            self._drop(term, refuse, waiting=False)
        if self._waiting and caught_up:
            waiting, self._waiting = self._waiting, []
            for rid, req in waiting:
                result, durable = self.call(req, state)
                if durable:
                    self._pending.append((rid, result))
                else:
                    answer(rid, result)
        if not can_propose or not (self._pending or self.due(ticks)):
            return False
        ops = self.checkpoint(ticks)
        if ops:
            self._last = propose(ops)
        if self._pending:
            pending, self._pending = self._pending, []
            if self._last > applied:
                self._held.setdefault(self._last, []).extend(pending)
            else:  # nothing to write and nothing outstanding: what they changed is saved already
                for rid, result in pending:
                    answer(rid, result)
        return bool(ops)

    def saved(self, index: int, answer: Callable[[int, Any], None]) -> None:
        """Entry ``index`` applied: answer the durable calls its checkpoint holds."""
        for rid, result in self._held.pop(index, ()):
            answer(rid, result)

    def _drop(self, term: int, refuse: Callable[[int], None], *, waiting: bool) -> None:
        """Forget the services of the term that ended and refuse the calls they hold (with
        ``waiting``, those not served yet too): the client asks the new leader, whose services
        resume from the last committed checkpoint. Calls submitted while leading in the new term
        stay."""
        refused = [rid for rid, _ in self._pending] + [rid for held in self._held.values() for rid, _ in held]
        if waiting:
            refused += [rid for rid, _ in self._waiting]
            self._waiting = []
        self._pending, self._held, self._last = [], {}, -1
        self.reset(term)
        for rid in refused:
            refuse(rid)

    def reset(self, term: int) -> None:
        """Drop every service: this member stopped leading, or leads in ``term`` now."""
        if self._services:
            self.figures["service_resets"] += 1
        self._services.clear()
        self._urgent = False
        self.term = term

    def call(self, req: ReplServiceCall, state: Any) -> tuple[Any, bool]:
        """Run ``req`` against ``state`` (the leader's applied state, read only):
        ``(result or the ErrorRecord it refused with, whether its answer waits for a checkpoint)``.
        Never raises, so a bad call cannot stop the replica."""
        self.figures["service_calls"] += 1
        try:
            svc = self._services.get(req.service)
            if svc is None:
                cls = _SERVICES.view.get(req.service)
                if cls is None:
                    raise UnknownProcedureError(
                        f"no leader service {req.service!r} in this store (it knows {registered_services()}); "
                        f"launch the store with the module that registers it in procedures=", name=req.service)
                svc = self._services[req.service] = cls()
            result, durable = svc.call(state, req.method, codec.decode(req.args))
            codec.check_value(result, f"the result of {req.service}.{req.method}")
        except DdiaRayError as e:
            return ErrorRecord.of(e), False
        except Exception as e:  # noqa: BLE001 - a service's bug answers its caller; the replica goes on
            return ErrorRecord.of(e), False
        if durable:
            self._urgent = True
        return result, bool(durable)

    def unsaved(self) -> int:
        """Changes since the last checkpoint, over every service."""
        return sum(svc.unsaved for svc in self._services.values())

    def due(self, ticks: int) -> bool:
        """Whether a checkpoint should be taken at tick ``ticks``."""
        if not self._services:
            return False
        if self._urgent:
            return True
        unsaved = self.unsaved()
        return unsaved > 0 and (unsaved >= self.every_changes or ticks - self._saved_at >= self.every_ticks)

    def checkpoint(self, ticks: int) -> tuple:
        """The ops that write every service's unsaved state (empty: nothing to write); the
        services count it as saved from here."""
        self._saved_at = ticks
        self._urgent = False
        ops: list = []
        for svc in self._services.values():
            ops.extend(svc.checkpoint())
        if ops:
            self.figures["service_checkpoints"] += 1
        return tuple(ops)

