"""The rebalancer: measure a running store, ask the planners, apply their proposals, by hand or by itself.

Theory of operation
-------------------
:class:`Rebalancer` closes the loop the pure planners (:mod:`.rebalance`) leave open:

1. :meth:`Rebalancer.measure` reads every partition once (its size in bytes and, for the range
   scheme, its middle key by bytes) and the request counters the groups' leaders keep per
   partition (:meth:`~.store.PartitionedStore.stats`); the rate is the counters' difference since
   the previous measurement;
2. :meth:`Rebalancer.propose` gives the partition proposals (:func:`~.rebalance.plan`: splits
   past a size or load threshold, merges of small neighbours, moves towards even group loads)
   and the replica moves (:func:`~.rebalance.plan_placement`: a replica whose Ray node left is
   replaced, replicas per node evened out when nodes join);
3. :meth:`Rebalancer.apply` carries them out with the store's own operations (split, merge,
   move, move_replica), one after the other, and records each outcome.

**Manual or automatic** (DDIA 6.3). Called by hand, the operator sees the proposals before any
happens: the human in the loop DDIA recommends, because an automatic rebalancer meeting an
automatic failure detector can shift load onto nodes that are only slow and cascade. With
:meth:`Rebalancer.start`, a background thread runs a round every ``interval_s``, applying at most
the policy's ``moves_per_round`` moves (and ``placement_moves`` replica moves) per round: the pace
limit is the guard against thrashing. A replica whose actor is merely down (killed, restarting) is
never replaced: only one whose Ray node has left the cluster.

Measuring reads every key once per round: its cost grows with the store, so rounds are minutes
apart by default.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import ConfigError, DdiaRayError
from .rebalance import PartitionLoad, PlacementMove, Proposal, RebalancePolicy, plan, plan_placement

__all__ = ["Rebalancer"]


class Rebalancer:
    """Measures, proposes and applies rebalancing for ``store`` (see the module docstring)."""

    def __init__(self, store, policy: RebalancePolicy | None = None, *, interval_s: float = 120.0,
                 placement_moves: int = 1):
        if not isinstance(interval_s, (int, float)) or interval_s <= 0:
            raise ConfigError(f"interval_s is a positive number of seconds, got {interval_s!r}")
        self.store = store
        self.policy = policy or RebalancePolicy()
        self.interval_s = float(interval_s)
        self.placement_moves = placement_moves
        self.history: list[tuple] = []  # (time, proposal, outcome)
        self._counters: dict[int, int] = {}
        self._measured_at: float | None = None
        self._seen: dict[str, dict[str, str]] = {}  # group -> replica -> the last Ray node it ran on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- measure -------------------------------------------------------------------------------------

    def measure(self) -> list[PartitionLoad]:
        """Every partition's size, request rate and (range scheme) middle key by bytes."""
        store = self.store
        pmap = store.partition_map()
        stats = store.stats()["partitions"]
        now = time.monotonic()
        elapsed = None if self._measured_at is None else max(1e-3, now - self._measured_at)
        loads = []
        for p in pmap.partitions:
            _, total, middle = store.partition_size(p, middle=pmap.scheme == "range")
            count = stats.get(p.id, {}).get("reads", 0) + stats.get(p.id, {}).get("writes", 0)
            before = self._counters.get(p.id)
            rate = 0.0 if elapsed is None or before is None or count < before else (count - before) / elapsed
            self._counters[p.id] = count
            loads.append(PartitionLoad(p.id, total, rate, middle))
        self._measured_at = now
        return loads

    # --- propose --------------------------------------------------------------------------------------

    def _placement_inputs(self) -> tuple[dict, list, dict]:
        import ray

        placement = self.store.placement()
        alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        lost: dict[str, dict[str, str]] = {}
        for group, store in self.store.groups.items():
            seen = self._seen.setdefault(group, {})
            seen.update({r: n for r, n in placement.get(group, {}).items() if n})
            for replica in store.members:
                if replica not in placement.get(group, {}) and replica in seen:
                    lost.setdefault(group, {})[replica] = seen[replica]
        return placement, alive, lost

    def propose(self, loads: list[PartitionLoad] | None = None) -> list[Proposal | PlacementMove]:
        """The partition proposals for ``loads`` (measured now when None), then the replica moves."""
        pmap = self.store.partition_map()
        loads = self.measure() if loads is None else loads
        proposals: list[Proposal | PlacementMove] = list(plan(pmap, loads, sorted(self.store.groups), self.policy))
        if self.placement_moves:
            placement, alive, lost = self._placement_inputs()
            if len(alive) > 1:
                proposals += plan_placement(placement, alive, lost=lost, max_moves=self.placement_moves)
        return proposals

    # --- apply ------------------------------------------------------------------------------------------

    def apply(self, proposals: list[Proposal | PlacementMove]) -> list[tuple[Any, str]]:
        """Carry out ``proposals`` in order; returns ``(proposal, "ok" or the error)`` each. A proposal that
        fails (a change met a fault, or the map moved on) does not stop the ones after it."""
        out = []
        for prop in proposals:
            try:
                self._apply_one(prop)
                outcome = "ok"
            except DdiaRayError as e:
                outcome = f"{type(e).__name__}: {e}"
            out.append((prop, outcome))
            self.history.append((time.time(), prop, outcome))
        return out

    def _apply_one(self, prop: Proposal | PlacementMove) -> None:
        store = self.store
        if isinstance(prop, PlacementMove):
            if prop.action == "relocate":
                store.move_replica(prop.group, prop.replica, prop.to)
            else:  # its node is gone: a new replica elsewhere, then the lost one removed for good
                group = store.group(prop.group)
                group.add_replica(ray_node=prop.to)
                group.remove_replica(prop.replica, force=True)
        elif prop.action == "split":
            store.split(prop.partition, prop.arg)
        elif prop.action == "merge":
            store.merge(prop.partition, prop.arg)
        elif prop.action == "move":
            store.move(prop.partition, prop.arg)
        else:
            raise ConfigError(f"unknown proposal {prop.action!r}")

    def round(self) -> list[tuple[Any, str]]:
        """One round: measure, propose, apply."""
        return self.apply(self.propose())

    # --- automatic mode --------------------------------------------------------------------------------

    def start(self) -> "Rebalancer":
        """Run a round every ``interval_s`` in a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise ConfigError("the rebalancer runs already")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ddia-ray-rebalancer")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.measure()  # a first measurement: rates need two
            while not self._stop.wait(self.interval_s):
                self.round()
        except BaseException as e:  # noqa: BLE001 - kept for the owner: stop() raises it
            self.error = e

    def stop(self) -> None:
        """Stop the background rounds (after the one running ends); raises what stopped them, if anything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(600)
            self._thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error
