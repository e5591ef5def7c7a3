"""Rebalancing decisions: which partitions to split, merge or move (DDIA 6.3), as proposals.

Theory of operation
-------------------
The planner is pure: it takes the map, each partition's measured load (:class:`PartitionLoad`)
and a :class:`RebalancePolicy`, and returns :class:`Proposal` s. It changes nothing. The store
applies them, either when an operator says so or automatically at the policy's rate; DDIA
prefers a human in the loop because an automatic rebalancer that meets an automatic failure
detector can move load onto nodes that are merely slow and make them slower, a cascading
failure (DDIA 6.3, "Operations: Automatic or Manual Rebalancing").

Three kinds of proposal, planned in this order, each on the map the previous ones make:

* **split** a key-range partition whose size or load passes the policy's threshold, at the
  middle key its group reported (by bytes), as HBase and RethinkDB split ranges; a hash
  partition splits at the middle of its hash range;
* **merge** two neighbouring partitions of one group whose sizes are both under the merge
  threshold and whose sum stays under the split threshold (so the merge is not undone by the
  next round's split);
* **move** partitions from the most loaded group to the least loaded one while that narrows the
  gap between them by more than the tolerance, at most ``moves_per_round`` of them. A group with
  no partition (just added) is the least loaded, so new capacity fills up; a group the caller no
  longer lists is drained first. The load of a partition is its request rate when one was
  measured, else its size.

:func:`plan_placement` plans the other kind of rebalancing, of replicas over Ray nodes when nodes
join or leave: replace a replica whose node left, then even out replicas per node.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .._validate import non_negative, positive
from ..errors import ConfigError, InvalidArgumentError
from .keyspace import HASH_BYTES
from .partition_map import PartitionMap

__all__ = ["PartitionLoad", "RebalancePolicy", "Proposal", "plan", "apply_proposal", "PlacementMove",
           "plan_placement"]


@dataclasses.dataclass(frozen=True)
class PartitionLoad:
    """What a group measured for one partition: its size, its request rate, and its middle key by
    bytes (None when unknown or empty: such a range partition is not split)."""

    partition: int
    size_bytes: int = 0
    ops_per_s: float = 0.0
    middle: bytes | None = None


@dataclasses.dataclass(frozen=True)
class RebalancePolicy:
    """Thresholds and pace. ``split_bytes``/``split_ops_per_s`` (0: never by that measure), the size
    under which neighbours merge (``merge_bytes``, 0: never), at most ``moves_per_round`` moves per
    round, and ``tolerance``: a move must narrow the gap between the most and least loaded groups
    by more than this fraction of the mean group load."""

    split_bytes: int = 256 << 20
    split_ops_per_s: float = 0.0
    merge_bytes: int = 16 << 20
    moves_per_round: int = 1
    tolerance: float = 0.1

    def __post_init__(self):
        for name in ("split_bytes", "merge_bytes", "moves_per_round"):
            if type(getattr(self, name)) is not int:
                raise ConfigError(f"{name} is an int, got {getattr(self, name)!r}")
            non_negative(name, getattr(self, name))
        non_negative("split_ops_per_s", self.split_ops_per_s)
        positive("tolerance", self.tolerance)
        if self.split_bytes and self.merge_bytes * 2 > self.split_bytes:
            raise ConfigError("merge_bytes must be at most half of split_bytes, or a merge would be split again")


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One change: ``("split", pid, at)``, ``("merge", left, right)`` or ``("move", pid, group)``."""

    action: str
    partition: int
    arg: object
    reason: str


def _check_loads(pmap: PartitionMap, loads: Iterable[PartitionLoad]) -> dict[int, PartitionLoad]:
    by_id: dict[int, PartitionLoad] = {}
    ids = {p.id for p in pmap.partitions}
    for load in loads:
        if not isinstance(load, PartitionLoad):
            raise InvalidArgumentError(f"loads are PartitionLoad records, got {type(load).__name__}")
        if load.partition not in ids:
            continue  # measured under an older map (since merged away): not this map's to plan
        by_id[load.partition] = load
    return by_id


def plan(pmap: PartitionMap, loads: Iterable[PartitionLoad], groups: Iterable[str],
         policy: RebalancePolicy = RebalancePolicy()) -> list[Proposal]:
    """Proposals for ``pmap`` given the partitions' ``loads`` and the replica ``groups`` that may hold
    partitions (those of the map plus any new ones). Apply them in order with :func:`apply_proposal`."""
    names = tuple(groups)
    if not names or not all(isinstance(g, str) and g for g in names):
        raise ConfigError("plan needs the replica groups that may hold partitions")
    by_id = _check_loads(pmap, loads)
    out: list[Proposal] = []
    current = pmap
    for p in pmap.partitions:  # splits
        load = by_id.get(p.id)
        if load is None:
            continue
        big = policy.split_bytes and load.size_bytes > policy.split_bytes
        hot = policy.split_ops_per_s and load.ops_per_s > policy.split_ops_per_s
        if not (big or hot):
            continue
        at = _middle(pmap, p, load)
        if at is None:
            continue
        why = f"{load.size_bytes} bytes > {policy.split_bytes}" if big else \
            f"{load.ops_per_s:.0f} ops/s > {policy.split_ops_per_s:.0f}"
        out.append(Proposal("split", p.id, at, why))
        current = current.split(p.id, at)
    if policy.merge_bytes:
        parts = current.partitions
        i = 0
        while i + 1 < len(parts):
            a, b = parts[i], parts[i + 1]
            la, lb = by_id.get(a.id), by_id.get(b.id)
            if _mergeable(a, b, la, lb, out, policy):
                assert la is not None and lb is not None
                out.append(Proposal("merge", a.id, b.id,
                                    f"{la.size_bytes} + {lb.size_bytes} bytes < {policy.merge_bytes} each"))
                current = current.merge(a.id, b.id)
                parts = current.partitions
                by_id[a.id] = PartitionLoad(a.id, la.size_bytes + lb.size_bytes, la.ops_per_s + lb.ops_per_s)
                continue
            i += 1
    out += _moves(current, by_id, names, policy)
    return out


def _mergeable(a, b, la: PartitionLoad | None, lb: PartitionLoad | None, planned: list,
               policy: RebalancePolicy) -> bool:
    """Neighbours ``a`` and ``b`` of one group, both measured, untouched by this plan so far, both
    small, and not so big together that the next round would split them again."""
    if a.group != b.group or la is None or lb is None or any(o.partition in (a.id, b.id) for o in planned):
        return False
    if la.size_bytes >= policy.merge_bytes or lb.size_bytes >= policy.merge_bytes:
        return False
    return not policy.split_bytes or la.size_bytes + lb.size_bytes <= policy.split_bytes


def _middle(pmap: PartitionMap, p, load: PartitionLoad) -> bytes | None:
    if pmap.scheme == "hash":
        lo = int.from_bytes(p.start.ljust(HASH_BYTES, b"\0"), "big")
        hi = (1 << (8 * HASH_BYTES)) if p.end is None else int.from_bytes(p.end, "big")
        mid = (lo + hi) // 2
        return mid.to_bytes(HASH_BYTES, "big") if lo < mid < hi else None
    at = load.middle
    if type(at) is not bytes or not (p.start < at and (p.end is None or at < p.end)):
        return None  # unknown, or not inside (the partition changed since it was measured)
    return at


def _moves(pmap: PartitionMap, by_id: Mapping[int, PartitionLoad], groups: tuple,
           policy: RebalancePolicy) -> list[Proposal]:
    measured = any(load.ops_per_s for load in by_id.values())

    def weight(pid: int) -> float:
        load = by_id.get(pid)
        if load is None:
            return 1.0 if not measured else 0.0
        return load.ops_per_s if measured else float(max(load.size_bytes, 1))

    owned: dict[str, list[int]] = {g: [] for g in groups}
    for p in pmap.partitions:
        owned.setdefault(p.group, []).append(p.id)
    totals = {g: sum(weight(pid) for pid in pids) for g, pids in owned.items()}
    targets = [g for g in owned if g in groups]
    out: list[Proposal] = []
    mean = sum(totals.values()) / max(len(targets), 1)
    budget = policy.moves_per_round
    for g in [g for g in owned if g not in groups]:  # a group being retired: drained first
        for pid in list(owned[g]):
            if budget == 0:
                return out
            light = min(targets, key=lambda t: (totals[t], t))
            w = weight(pid)
            out.append(Proposal("move", pid, light, f"group {g!r} is being retired"))
            owned[g].remove(pid)
            owned[light].append(pid)
            totals[g] -= w
            totals[light] += w
            budget -= 1
    for _ in range(budget):
        heavy = max(targets, key=lambda g: (totals[g], g))
        light = min(targets, key=lambda g: (totals[g], g))
        gap = totals[heavy] - totals[light]
        best = None
        for pid in owned[heavy]:  # the partition whose move narrows the gap most
            w = weight(pid)
            new_gap = abs((totals[heavy] - w) - (totals[light] + w))
            if gap - new_gap > policy.tolerance * mean and (best is None or new_gap < best[1]):
                best = (pid, new_gap, w)
        if best is None or heavy == light:
            break
        pid, _, w = best
        out.append(Proposal("move", pid, light, f"group {heavy!r} carries {totals[heavy]:.0f}, "
                                                f"{light!r} {totals[light]:.0f}"))
        owned[heavy].remove(pid)
        owned[light].append(pid)
        totals[heavy] -= w
        totals[light] += w
    return out


def apply_proposal(pmap: PartitionMap, proposal: Proposal) -> PartitionMap:
    """The map after ``proposal`` (its version one higher)."""
    if proposal.action == "split":
        return pmap.split(proposal.partition, proposal.arg)  # type: ignore[arg-type]
    if proposal.action == "merge":
        return pmap.merge(proposal.partition, proposal.arg)  # type: ignore[arg-type]
    if proposal.action == "move":
        return pmap.move(proposal.partition, proposal.arg)  # type: ignore[arg-type]
    raise InvalidArgumentError(f"unknown proposal {proposal.action!r}")


@dataclasses.dataclass(frozen=True)
class PlacementMove:
    """Move replica ``replica`` of ``group`` to Ray node ``to``: ``"replace"`` when the node it ran on
    (``from_node``) has left the cluster, ``"relocate"`` to even out the replicas per node."""

    action: str
    group: str
    replica: str
    from_node: str | None
    to: str
    reason: str


def plan_placement(placement: Mapping[str, Mapping[str, str | None]], nodes: Iterable[str], *,
                   lost: Mapping[str, Mapping[str, str]] | None = None, max_moves: int = 1) -> list[PlacementMove]:
    """Replica moves when Ray nodes join or leave (DDIA 6.3): ``placement`` is ``{group: {replica:
    node}}`` for the live replicas, ``nodes`` the alive Ray nodes, ``lost`` the replicas not running
    whose last node has left (``{group: {replica: last node}}``). Replacements come first (a group
    short of a replica is closer to losing its quorum), each to the least loaded node that holds
    no replica of the group; then relocations from the most to the least loaded node while they
    differ by two or more, never putting two replicas of a group on one node. At most
    ``max_moves``."""
    alive = sorted(set(nodes))
    if not alive:
        raise ConfigError("no Ray node is alive to place replicas on")
    count = {n: 0 for n in alive}
    where = {g: dict(replicas) for g, replicas in placement.items()}  # updated by each planned move
    for replicas in where.values():
        for node in replicas.values():
            if node in count:
                count[node] += 1
    out: list[PlacementMove] = []

    def target(group: str) -> str | None:
        used = set(where.get(group, {}).values())
        free = [n for n in alive if n not in used]
        return min(free, key=lambda n: (count[n], n)) if free else None

    for group, gone in sorted((lost or {}).items()):
        for replica, last in sorted(gone.items()):
            if last in count or len(out) >= max_moves:
                continue  # its node is alive: the replica is only down (a restart brings it back)
            to = target(group)
            if to is not None:
                out.append(PlacementMove("replace", group, replica, last, to, f"its Ray node {last} left"))
                count[to] += 1
                where.setdefault(group, {})[replica] = to
    while len(out) < max_moves:
        heavy = max(alive, key=lambda n: (count[n], n))
        light = min(alive, key=lambda n: (count[n], n))
        if count[heavy] - count[light] < 2:
            break
        moved = False
        for group, replicas in sorted(where.items()):
            if light in replicas.values():
                continue  # never two replicas of one group on one node
            chosen = next((r for r, n in sorted(replicas.items()) if n == heavy), None)
            if chosen is not None:
                replica = chosen
                out.append(PlacementMove("relocate", group, replica, heavy, light,
                                         f"{heavy} runs {count[heavy]} replicas, {light} {count[light]}"))
                count[heavy] -= 1
                count[light] += 1
                replicas[replica] = light
                moved = True
                break
        if not moved:
            break
    return out
