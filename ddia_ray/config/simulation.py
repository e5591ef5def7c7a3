"""Seeded, single-process runs of the configuration store's Raft group under faults: watches checked.

Theory of operation
-------------------
:func:`simulate` runs the replicated store's Raft members (the same
:class:`~ddia_ray.replication.raft_replica.RaftReplica` and the same
procedures as on Ray) on a :class:`~ddia_ray.runtime.SimNetwork` under the
Raft simulation's fault schedule (:func:`ddia_ray.replication.simulation.simulate_raft`:
dropped, delayed, duplicated and reordered messages, partitions, pauses,
crashes of the leader and the others), whose own Raft checks run too. Its
clients speak the configuration store. Each one writes (puts, deletes,
transactions over two keys, leases granted, used and revoked) and follows a
watch the way :mod:`.watch` does: it asks ``config.changes`` for what lies
after its revision, from a random replica in a random read mode (``follower``
included, sometimes as a blocking query), keeping nothing but its revision;
now and then it "reconnects" (starts over from ``revision + 1`` with a new
page size), and a call that fails or times out is asked again elsewhere (a
failover of its serving replica). Leases expire as on Ray: one pure
:class:`~.lessor.Lessor` on the simulation's clock times them (clients keep
their leases alive now and then, or stop), and the first client also plays the
lessor service: it syncs the lessor with the store's leases (read at the
leader; a new Raft term promotes every lease) and proposes ``config.revoke``
for the expired ones, which watchers then see as deletes. After healing, every
watcher drains to the store's final revision, and the run checks:

* **each watcher saw every revision of its keys exactly once, in order**: its
  deliveries equal, event for event (kind, key, revision, value, versions),
  the final history read back from the revision log, filtered by its keys;
* **the history follows etcd's rules**: revisions ``1..n`` each change at least
  one key; per key, a put after a delete (or first) starts a generation with
  ``create_revision`` = its revision and version 1, a later put keeps the
  creation and adds one to the version, a delete ends it;
* **no acknowledged write lost**: the row of each acknowledged put, delete and
  transaction is in the history at the revision its answer named;
* **leases and keys agree**: every live key with a lease is listed by that
  lease's row, every key a lease lists is live with that lease, and no live key
  names a lease that is gone.

Any violation raises :class:`ConfigViolation` naming the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import codec
from ..error_record import ErrorRecord
from ..replication.procedures import call_op
from ..replication.records import QueryResult, ReplQuery, WriteAck
from ..replication.service_simulation import (READ_MODES, ServiceSimClient, ServiceSimReport, ServiceViolation,
                                               run_service)
from . import keys
from . import procedures as _procedures  # registers the procedures the members run
from ..errors import LeaseNotFoundError
from .keys import DELETE, unpack
from .lessor import Lessor
from .mvcc import Live, history_row, read_meta

__all__ = ["simulate", "ConfigViolation", "ConfigSimReport"]

assert _procedures
_KEYS = ("app/a", "app/b", "app/c", "other/x")
#: What the watchers follow, in turn: a prefix, one key, everything.
_FILTERS = ((("app/", True),), (("other/x", False),), None)


class ConfigViolation(ServiceViolation):
    """A run broke one of the configuration store's guarantees (see the module docstring)."""


@dataclass
class ConfigSimReport(ServiceSimReport):
    """What one run did: the Raft run's report, and the configuration store's figures."""

    revisions: int = 0
    writes_acked: int = 0
    reconnects: int = 0
    failed_rounds: int = 0
    leases_expired: int = 0


class _Shared:
    """What the run's clients share: the writes acknowledged, and the clients."""

    def __init__(self) -> None:
        self.acked: list[tuple] = []  # (kind, key, revision[, value])
        self.clients: list = []
        self.lessor = Lessor(retry_s=0.3)  # the lessor service's core, on the simulation's clock
        self.term = -1
        self.expired = 0


def _client_class(shared: _Shared):
    class ConfigSimClient(ServiceSimClient):
        """A simulated configuration-store client: a writer and a watcher (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.revision = 0            # the watch's only state: the last revision delivered
            self.page = self.rng.randint(1, 6)
            self.delivered: list = []    # (kind, key, revision, value, create, version) in delivery order
            self.filter = _FILTERS[len(shared.clients) % len(_FILTERS)]
            self.leases: list[int] = []
            self.reconnects = self.failed_rounds = 0
            shared.clients.append(self)

        def _next_op(self, now_s: float) -> tuple:
            self._keep_alive(now_s)
            r = self.rng.random()
            if self is shared.clients[0] and r < 0.25 and not self.draining:
                op: tuple = self._lessor_op(now_s)
            elif (r < 0.45 or self.draining) and self.name != "final":  # the final client proves a write commits
                if self.rng.random() < 0.05 and not self.draining:
                    self.reconnects += 1  # a new process that knows only the revision it reached
                    self.page = self.rng.randint(1, 6)
                mode = self.rng.choice(READ_MODES)
                wait_s = 0.05 if self.rng.random() < 0.3 else 0.0
                args = (self.revision + 1, self.filter, self.page)
                op = ("watch", ReplQuery("config.changes", codec.encode(args), mode, wait_s=wait_s))
            else:
                op = self._write_op(now_s)
            return op

        def _keep_alive(self, now_s: float) -> None:
            """Renew each of this client's leases, now and then (a client that stops lets them expire)."""
            for lease in list(self.leases):
                if self.rng.random() < 0.3:
                    try:
                        shared.lessor.renew(lease, now_s)
                    except LeaseNotFoundError:
                        self.leases.remove(lease)  # expired (or revoked): its keys are gone

        def _lessor_op(self, now_s: float) -> tuple:
            """The lessor service's pass: revoke an expired lease, else sync with the store's leases."""
            due = shared.lessor.expired(now_s) + shared.lessor.retry_due(now_s)
            if due:
                shared.expired += len(due)
                return ("expire", call_op("config.revoke", (due[0],)), due[0])
            return ("sync", ReplQuery("config.leases", codec.encode((0, 1000)), "leader"))

        def _write_op(self, now_s: float) -> tuple:
            key = self.rng.choice(_KEYS)
            r = self.rng.random()
            value = codec.encode(f"{self.name}-{self.seq}")
            if r < 0.45:
                lease = self.rng.choice(self.leases) if self.leases and self.rng.random() < 0.3 else 0
                return ("put", call_op("config.put", (key, value, lease)), key, value)
            if r < 0.6:
                return ("delete", call_op("config.delete", (key,)), key)
            if r < 0.8:
                other = self.rng.choice([k for k in _KEYS if k != key])
                compare = ((key, "version", self.rng.choice(("==", ">")), self.rng.randint(0, 2)),)
                ops = (("put", key, value, 0), ("delete", other, b"", 0))
                return ("txn", call_op("config.txn", (compare, ops, (("get", key, b"", 0),))), key, value, other)
            if r < 0.9 or not self.leases:
                return ("grant", call_op("config.grant", (500,)))
            lease = self.leases.pop(self.rng.randrange(len(self.leases)))
            return ("revoke", call_op("config.revoke", (lease,)), lease)

        def _query_target(self, op: tuple) -> str:
            # Any replica may serve a watch: a retry goes wherever (a failover). A sync asks the leader.
            return self.rng.choice(self.members) if op[0] == "watch" else self.leader

        def _answered(self, op: tuple, res: Any) -> tuple[bool, Any, str]:
            if op[0] == "watch":
                if not isinstance(res, QueryResult) or type(res.result) is ErrorRecord:
                    self.failed_rounds += 1
                    return False, None, ""
                if res.result != ():
                    rows, nxt = res.result
                    for kind, kv, _ in rows:
                        if kv[3] <= self.revision:
                            raise ConfigViolation(f"{self.name} was given revision {kv[3]} again (at {self.revision})")
                        self.delivered.append((kind, kv[0], kv[3], kv[1], kv[2], kv[4]))
                    self.revision = max(self.revision, nxt - 1)
                return True, None, ""
            if op[0] == "sync":
                if not isinstance(res, QueryResult) or type(res.result) is ErrorRecord:
                    return False, None, ""
                now_s = self.sim.now_s
                shared.lessor.sync({lease: ttl_ms / 1000 for lease, ttl_ms, _ in res.result}, now_s)
                if res.epoch != shared.term:
                    if shared.term != -1:
                        shared.lessor.promote(now_s)  # a new leader: no lease loses the failover's time
                    shared.term = res.epoch
                return True, None, ""
            if not isinstance(res, WriteAck):
                return False, None, ""
            result = res.results[0]
            if op[0] == "expire":
                shared.lessor.revoked(op[2])  # revoked now, or gone before (its holder revoked it)
                return True, None, ""
            if type(result) is not ErrorRecord:
                self._acked(op, result)
            return True, None, ""

        def _acked(self, op: tuple, result: Any) -> None:
            kind = op[0]
            if kind == "put":
                shared.acked.append(("put", op[2], result, op[3]))
            elif kind == "delete" and result[1]:
                shared.acked.append(("delete", op[2], result[0]))
            elif kind == "txn" and result[0]:
                shared.acked.append(("put", op[2], result[1], op[3]))
            elif kind == "grant":
                self.leases.append(result[0])
                shared.lessor.grant(result[0], result[1] / 1000, self.sim.now_s)
            elif kind == "revoke":
                shared.lessor.revoked(op[2])

    return ConfigSimClient


def simulate(seed: int, *, duration_s: float = 2.0, **options: Any) -> ConfigSimReport:
    """One seeded run (see the module docstring); raises :class:`ConfigViolation` on a violation."""
    shared = _Shared()
    raft, clients, state = run_service(seed, _client_class(shared), shared.clients, caught_up=_caught_up,
                                       violation=ConfigViolation, lagging="the watchers did not catch up",
                                       duration_s=duration_s, **options)
    report = ConfigSimReport(seed, raft)
    _check(state, clients, shared, report)
    return report


def _caught_up(state, clients: list) -> bool:
    """Whether every watcher reached the store's final revision (the drain's end)."""
    end = read_meta(state.get).revision
    return all(c.revision >= end for c in clients)


def final_history(state) -> list[tuple]:
    """Every change in the store's history: ``(kind, key, revision, value, create, version)`` in
    revision order (in write order within a revision), read from the revision log and the rows."""
    meta = read_meta(state.get)
    out = []
    for r in range(1, meta.revision + 1):
        row = state.get(keys.rev_key(r))
        if row is None:
            raise ConfigViolation(f"revision {r} has no row in the revision log")
        changed = unpack(row, 1, "revision log")[0]
        if not changed:
            raise ConfigViolation(f"revision {r} changed no key")
        for name in changed:
            raw = state.get(keys.row_key(name, r))
            if raw is None:
                raise ConfigViolation(f"revision {r} names {name!r}, which has no row at {r}")
            kind, kv, _ = history_row(name, r, raw)
            out.append(("put" if kind != DELETE else "delete", name, r, kv[1], kv[2], kv[4]))
    return out


def check_etcd_rules(history: list[tuple]) -> None:
    """Per key: generations start with create = revision and version 1, puts add one to the version,
    deletes end a generation (see the module docstring); revisions never go back."""
    live: dict[str, tuple[int, int]] = {}
    last = 0
    for kind, name, r, _, create, version in history:
        if r < last:
            raise ConfigViolation(f"revision {r} after {last}")
        last = r
        if kind == "delete":
            if name not in live:
                raise ConfigViolation(f"{name!r} deleted at {r} while absent")
            del live[name]
            continue
        expected = (r, 1) if name not in live else (live[name][0], live[name][1] + 1)
        if (create, version) != expected:
            raise ConfigViolation(f"{name!r} at {r}: create/version {(create, version)}, expected {expected}")
        live[name] = expected


def _matches(name: str, ranges: tuple | None) -> bool:
    return ranges is None or any(name == k or (p and name.startswith(k)) for k, p in ranges)


def _check(state, clients: list, shared: _Shared, report: ConfigSimReport) -> None:
    history = final_history(state)
    check_etcd_rules(history)
    at = {(name, r): (kind, value) for kind, name, r, value, _, _ in history}
    for acked in shared.acked:
        got = at.get((acked[1], acked[2]))
        if got is None or got[0] != acked[0] or (acked[0] == "put" and got[1] != acked[3]):
            raise ConfigViolation(f"seed {report.seed}: acknowledged {acked[0]} of {acked[1]!r} at revision "
                                  f"{acked[2]} is not in the history (found {got})")
    _check_leases(state, report.seed)
    for c in clients:
        expected = [h for h in history if _matches(h[1], c.filter)]
        if c.delivered != expected:
            first = next((i for i, (a, b) in enumerate(zip(c.delivered, expected)) if a != b),
                         min(len(c.delivered), len(expected)))
            raise ConfigViolation(f"seed {report.seed}: watcher {c.name} ({c.filter}) got {len(c.delivered)} events, "
                                  f"the history has {len(expected)} for it; first difference at #{first}: "
                                  f"{c.delivered[first:first + 1]} vs {expected[first:first + 1]}")
        report.delivered[c.name] = len(c.delivered)
    report.revisions = read_meta(state.get).revision
    report.writes_acked = len(shared.acked)
    report.reconnects = sum(c.reconnects for c in clients)
    report.failed_rounds = sum(c.failed_rounds for c in clients)
    report.leases_expired = shared.expired


def _check_leases(state, seed: int) -> None:
    """Live keys and lease rows agree (see the module docstring)."""
    found, values = state.scan(*keys.current_range(""), 10_000)
    attached: dict[int, set] = {}
    for k, v in zip(found, values):
        live = Live(*unpack(v, 4, "current key"))
        if live.lease:
            attached.setdefault(live.lease, set()).add(k[1:].decode())
    found, values = state.scan(*keys.lease_range(0), 10_000)
    listed = {keys.lease_of(k): set(unpack(v, 2, "lease")[1]) for k, v in zip(found, values)}
    for lease, names in attached.items():
        if listed.get(lease) != names:
            raise ConfigViolation(f"seed {seed}: live keys {sorted(names)} name lease {lease}, whose row lists "
                                  f"{sorted(listed[lease]) if lease in listed else 'nothing (it is gone)'}")
    for lease, names in listed.items():
        if names and attached.get(lease) != names:
            raise ConfigViolation(f"seed {seed}: lease {lease} lists {sorted(names)}, live with it: "
                                  f"{sorted(attached.get(lease, ()))}")
