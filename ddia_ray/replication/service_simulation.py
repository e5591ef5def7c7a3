"""The seeded simulation of a service built on procedures: its clients' base, the run and the drain.

Theory of operation
-------------------
A service on the replicated store (the event store, the configuration store)
is checked the way the store itself is: its Raft members (the same
:class:`~.raft_replica.RaftReplica` and the same procedures as on Ray) run on a
:class:`~ddia_ray.runtime.SimNetwork` under the Raft simulation's faults
(:func:`.simulation.simulate_raft`, whose own Raft checks run too), with
clients that speak the service. What every such run shares is here:

* :class:`ServiceSimClient`: a client that, one operation at a time, sends a
  procedure call (:func:`~.procedures.call_op`, as a :class:`~.records.ReplWrite`
  to the member it believes leads), a query (a :class:`~.records.ReplQuery`) or a
  leader service's call (a :class:`~.leader_services.ReplServiceCall`),
  retried elsewhere until its deadline (:class:`~ddia_ray.kv.simulation.SimClient`).
  Each service's client chooses its operations (``_next_op``) and reads their
  answers (``_answered``), and keeps its own history (the Raft simulation's
  linearizability check is for key-value operations).
* :func:`run_service`: one seeded run, then the *drain*: after the faults heal,
  every client keeps polling in ``draining`` mode until the service's own
  condition holds on the leader's state (the subscribers caught up, the
  watchers at the final revision), or 20 simulated seconds pass, which is a
  liveness violation. The service then checks its guarantees on that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..consensus.raft import LEADER
from ..history import HistoryRecorder
from ..kv.simulation import SimClient
from .leader_services import ReplServiceCall
from .records import ReplQuery, ReplWrite
from .simulation import simulate_raft

__all__ = ["ServiceSimClient", "ServiceSimReport", "ServiceViolation", "run_service", "DRAIN_S", "READ_MODES"]

#: Simulated seconds the clients have after healing to catch up before the run counts as stuck.
DRAIN_S = 20.0
#: The read modes a simulated query picks from (``follower`` too: a lagging replica may serve it).
READ_MODES = ("linearizable", "leader", "follower")


class ServiceViolation(AssertionError):
    """A run broke one of a service's guarantees; each service raises its own subclass."""


@dataclass
class ServiceSimReport:
    """What one run did: its seed, the Raft run's report (``raft``) and the events each client was
    delivered (``delivered``, by client); each service adds its own figures."""

    seed: int
    raft: Any = None
    delivered: dict = field(default_factory=dict)


class ServiceSimClient(SimClient):
    """A simulated client of a service built on procedures (see the module docstring).

    Subclasses implement ``_next_op(now_s)``, returning ``(kind, request, ...)`` with ``request`` a
    procedure call op or a :class:`~.records.ReplQuery`, and ``_answered(op, res)``, returning
    ``(succeeded, value, leader hint)`` as :meth:`SimClient._answer` does; ``_query_target(op)``
    chooses the member a query goes to (default: the one believed to lead).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Its own history: the Raft simulation's linearizability check is for key-value ops.
        self.rec = HistoryRecorder(clock=lambda: self.sim.now_s)
        #: True once the faults healed and the run waits for this client to catch up.
        self.draining = False

    def _next_op(self, now_s: float) -> tuple:  # pragma: no cover - every service defines it
        raise NotImplementedError

    def _answered(self, op: tuple, res: Any) -> tuple[bool, Any, str]:  # pragma: no cover - likewise
        raise NotImplementedError

    def _query_target(self, op: tuple) -> str:
        return self.leader

    def _start(self, now_s: float) -> None:
        self.seq += 1
        op = self._next_op(now_s)
        op_id = self.rec.invoke(self.process, "write", op[0], None)
        self.op = (op_id, op, "write", now_s)
        self.ops += 1
        self._send(op)

    def _send(self, op: tuple) -> None:
        if isinstance(op[1], ReplQuery):
            self.call = self.sim.request(self._query_target(op), op[1], src=self.name)
            return
        if isinstance(op[1], ReplServiceCall):  # a leader service's call: to the member believed to lead
            self.call = self.sim.request(self.leader, op[1], src=self.name)
            return
        payload = ReplWrite((op[1],), client=self.name, seq=self.seq, acked_below=self.acked_below)
        self.call = self.sim.request(self.leader, payload, src=self.name)

    def _answer(self, res: Any) -> tuple[bool, Any, str]:
        if self.op is None:
            return False, None, ""
        return self._answered(self.op[1], res)


def run_service(seed: int, client_class: type, clients: list, *, caught_up: Callable[[Any, list], bool],
                violation: type[Exception], lagging: str, duration_s: float,
                **options: Any) -> tuple[Any, list, Any]:
    """One seeded run of the Raft simulation with ``client_class`` (which appends each client it makes
    to ``clients``), then the drain (see the module docstring): ``(the Raft run's report, the clients
    but the run's final one, the leader's state once caught_up(state, clients) holds)``. A drain that
    does not end within :data:`DRAIN_S` raises ``violation`` saying that ``lagging`` (the
    subscribers, the watchers) did not catch up. ``options`` go to :func:`.simulation.simulate_raft`."""
    raft = simulate_raft(seed, client_class=client_class, duration_s=duration_s, keys=1, **options)
    active = [c for c in clients if c.name != "final"]
    sim = active[0].sim
    for c in active:
        c.draining = True
    deadline = sim.now_s + DRAIN_S
    while sim.now_s < deadline:
        sim.run_for(0.005)
        for c in active:
            c.poll(sim.now_s, stop=False)
        leader = next((n for n, node in sim.nodes.items() if node.alive and sim.core(n).node.role == LEADER), None)
        if leader is None:
            continue
        state = sim.core(leader).state
        if caught_up(state, active):
            return raft, active, state
    raise violation(f"seed {seed}: {lagging} within {DRAIN_S:.0f} s of healing")
