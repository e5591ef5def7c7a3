"""The configuration store's procedures against a model: a list of every change, folded into the
state at any revision.

The store runs in one process (:class:`ddia_ray.config.local.LocalBackend`: the replicas' own state,
procedures and queries, and the pure lessor on a fake clock). A hypothesis state machine puts,
deletes, runs transactions, grants, keeps alive and revokes leases, lets time pass (leases expire),
compacts and rolls back, and after each step compares every read (now, at each past revision, by
prefix, history) with the model, which follows etcd's rules as plain Python. One watch from
revision 1 must deliver the whole history, each revision once, in order, with previous values.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ddia_ray.config import Compare, LocalConfig, Op
from ddia_ray.errors import (CompactedError, FutureRevisionError, InvalidArgumentError, LeaseExpiredError,
                             LeaseNotFoundError)

KEYS = ("a", "a/x", "a/y", "b")
PREFIXES = ("", "a", "a/", "b", "c")
_keys = st.sampled_from(KEYS)
_values = st.integers(0, 3)


class Model:
    """Every change as ``(revision, key, kind, value, create, version, lease, prev value)``; leases
    with their TTLs and deadlines; the compaction revision."""

    def __init__(self):
        self.changes: list[tuple] = []
        self.revision = 0
        self.compacted = 0
        self.leases: dict[int, list] = {}  # id -> [ttl_s, deadline_s]
        self.next_lease = 1

    def state_at(self, revision: int) -> dict:
        live: dict = {}
        for rev, key, kind, value, create, version, lease, _ in self.changes:
            if rev > revision:
                break
            if kind == "put":
                live[key] = (key, value, create, rev, version, lease)
            else:
                live.pop(key, None)
        return live

    def live(self) -> dict:
        return self.state_at(self.revision)

    def write(self, ops: list[tuple]) -> int:
        """Apply ``(kind, key, value, lease)`` writes at one new revision (if any changes)."""
        live = self.live()
        rev = self.revision + 1
        changed = False
        for kind, key, value, lease in ops:
            old = live.get(key)
            if kind == "put":
                create, version = (old[2], old[4] + 1) if old else (rev, 1)
                self.changes.append((rev, key, "put", value, create, version, lease, old[1] if old else None))
                live[key] = (key, value, create, rev, version, lease)
                changed = True
            elif old is not None:
                self.changes.append((rev, key, "delete", None, 0, 0, 0, old[1]))
                del live[key]
                changed = True
        if changed:
            self.revision = rev
        return self.revision

    def lease_error(self, lease: int):
        return LeaseExpiredError if 0 < lease < self.next_lease else LeaseNotFoundError

    def expire(self, now: float) -> None:
        """What the backend's lessor does at the start of each call: revoke leases past their deadline."""
        for lease in sorted(self.leases):
            if now >= self.leases[lease][1]:
                self.revoke(lease)

    def revoke(self, lease: int) -> int:
        del self.leases[lease]
        keys = sorted(k for k, kv in self.live().items() if kv[5] == lease)
        return self.write([("delete", k, None, 0) for k in keys])

    def kept_history(self, key: str) -> list[tuple]:
        rows = [(rev, kind, value, create, version, lease) for rev, k, kind, value, create, version, lease, _
                in self.changes if k == key]
        older = [r for r in rows if r[0] < self.compacted]
        kept = [r for r in rows if r[0] >= self.compacted]
        if older and older[-1][1] == "put":
            kept.insert(0, older[-1])
        return kept


def _kv(kv):
    return None if kv is None else (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class ConfigMachine(RuleBasedStateMachine):
    """The store and the model side by side (see the module docstring)."""

    @initialize()
    def start(self):
        self.now = 0.0
        self.client = LocalConfig(clock=lambda: self.now, watch_wait_s=0.2)
        self.model = Model()
        self.events: list = []
        self.watch = self.client.watch("", self.events.extend, prefix=True, start_revision=1)

    def teardown(self):
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _sync(self):
        self.model.expire(self.now)

    def _lease_arg(self, data):
        if not self.model.leases or data.draw(st.booleans()):
            return data.draw(st.sampled_from([0, 0, self.model.next_lease + 3]))
        return data.draw(st.sampled_from(sorted(self.model.leases) + [self.model.next_lease - 1]))

    @rule(key=_keys, value=_values, data=st.data())
    def put(self, key, value, data):
        lease = self._lease_arg(data)
        self._sync()
        if lease and lease not in self.model.leases:
            with pytest.raises(self.model.lease_error(lease)):
                self.client.put(key, value, lease=lease)
            return
        assert self.client.put(key, value, lease=lease) == self.model.write([("put", key, value, lease)])

    @rule(key=_keys)
    def delete(self, key):
        self._sync()
        assert self.client.delete(key) == self.model.write([("delete", key, None, 0)])

    @rule(prefix=st.sampled_from(PREFIXES))
    def delete_prefix(self, prefix):
        self._sync()
        doomed = sorted(k for k in self.model.live() if k.startswith(prefix))
        assert self.client.delete_prefix(prefix) == self.model.write([("delete", k, None, 0) for k in doomed])

    @rule(key=_keys, what=st.sampled_from(["mod_revision", "create_revision", "version", "value", "lease"]),
          result=st.sampled_from(["==", "!=", "<", ">"]), number=st.integers(0, 6),
          success=st.lists(st.tuples(st.sampled_from(["put", "delete", "get"]), _keys, _values), max_size=3),
          failure=st.lists(st.tuples(st.sampled_from(["put", "delete", "get"]), _keys, _values), max_size=2))
    def txn(self, key, what, result, number, success, failure):
        target = what
        self._sync()
        live = self.model.live()
        kv = live.get(key)
        if target == "value":
            have = None if kv is None else kv[1]
        else:
            have = 0 if kv is None else {"mod_revision": kv[3], "create_revision": kv[2], "version": kv[4],
                                         "lease": kv[5]}[target]
        if target == "value" and have is None:
            ok = False
        else:
            ok = {"==": have == number, "!=": have != number, "<": have < number, ">": have > number}[result]
        ops = [Op.put(k, v) if kind == "put" else Op.delete(k) if kind == "delete" else Op.get(k)
               for kind, k, v in success]
        fails = [Op.put(k, v) if kind == "put" else Op.delete(k) if kind == "delete" else Op.get(k)
                 for kind, k, v in failure]
        branch = success if ok else failure
        dup = any(len([1 for kind, k, _ in b if kind != "get" and k == key_]) > 1
                  for b in (success, failure) for key_ in KEYS)
        if dup:
            with pytest.raises(InvalidArgumentError):
                self.client.txn([Compare(key, target, result, number)], ops, fails)
            return
        got = self.client.txn([Compare(key, target, result, number)], ops, fails)
        assert got.succeeded == ok
        expected_responses = []
        writes = []
        rev = self.model.revision + 1
        state = dict(live)
        for kind, k, v in branch:
            if kind == "get":
                expected_responses.append(state.get(k))
            elif kind == "put":
                old = state.get(k)
                state[k] = (k, v, old[2] if old else rev, rev, old[4] + 1 if old else 1, 0)
                writes.append(("put", k, v, 0))
                expected_responses.append(rev)
            else:
                expected_responses.append(1 if k in state else 0)
                state.pop(k, None)
                writes.append(("delete", k, None, 0))
        revision = self.model.write(writes)
        assert got.revision == revision
        assert [(_kv(r) if kind == "get" else r) for (kind, _, _), r in zip(branch, got.responses)] == \
            expected_responses

    @rule(ttl=st.sampled_from([0.5, 1.0, 2.0]))
    def grant(self, ttl):
        self._sync()
        lease = self.client.grant(ttl)
        assert lease.id == self.model.next_lease and lease.ttl_s == ttl
        self.model.leases[lease.id] = [ttl, self.now + ttl]
        self.model.next_lease += 1

    @rule(data=st.data())
    def keepalive(self, data):
        lease = data.draw(st.sampled_from(sorted(self.model.leases) + [self.model.next_lease - 1,
                                                                          self.model.next_lease + 5]))
        self._sync()
        if lease in self.model.leases:
            assert self.client.keepalive(lease) == self.model.leases[lease][0]
            self.model.leases[lease][1] = self.now + self.model.leases[lease][0]
        elif lease > 0:
            with pytest.raises(self.model.lease_error(lease)):
                self.client.keepalive(lease)

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def revoke(self, data):
        lease = data.draw(st.sampled_from(sorted(self.model.leases)))
        self._sync()
        if lease not in self.model.leases:  # expired just now
            with pytest.raises(LeaseExpiredError):
                self.client.revoke(lease)
            return
        assert self.client.revoke(lease) == self.model.revoke(lease)

    @rule(dt=st.sampled_from([0.1, 0.4, 0.8, 1.5]))
    def time_passes(self, dt):
        self.now += dt

    @rule(data=st.data())
    def compact(self, data):
        self._sync()
        assert self.watch.wait_revision(self.model.revision, 10.0)  # the watch must not lag into compaction
        target = data.draw(st.integers(1, self.model.revision + 1))
        if target > self.model.revision:
            with pytest.raises(FutureRevisionError):
                self.client.compact(target)
            return
        self.client.compact(target)
        self.model.compacted = max(self.model.compacted, target)

    @precondition(lambda self: self.model.revision > 0)
    @rule(data=st.data())
    def rollback(self, data):
        self._sync()
        target = data.draw(st.integers(1, self.model.revision))
        if target < self.model.compacted:
            with pytest.raises(CompactedError) as e:
                self.client.rollback(target)
            assert e.value.oldest_kept == self.model.compacted
            return
        old, now = self.model.state_at(target), self.model.live()
        changed = sorted({c[1] for c in self.model.changes if c[0] > target})
        writes = []
        for k in changed:
            if k in old:
                writes.append(("put", k, old[k][1], 0))
            elif k in now:
                writes.append(("delete", k, None, 0))
        assert self.client.rollback(target) == self.model.write(writes)

    @invariant()
    def reads_match_the_model(self):
        if not hasattr(self, "client"):
            return
        self._sync()
        m = self.model
        assert self.client.revision() == m.revision
        for key in KEYS:
            assert _kv(self.client.get(key)) == m.live().get(key)
            assert [(kv.mod_revision, "put" if kv.version else "delete", kv.value, kv.create_revision, kv.version,
                     kv.lease) for kv in self.client.history(key)] == m.kept_history(key)
        for prefix in PREFIXES:
            assert [_kv(kv) for kv in self.client.get_prefix(prefix)] == \
                [kv for k, kv in sorted(m.live().items()) if k.startswith(prefix)]
        for rev in range(1, m.revision + 1):
            if rev < m.compacted:
                with pytest.raises(CompactedError):
                    self.client.get("a", revision=rev)
                continue
            state = m.state_at(rev)
            for key in ("a", "a/x"):
                assert _kv(self.client.get(key, revision=rev)) == state.get(key)
            assert [_kv(kv) for kv in self.client.get_prefix("a", revision=rev)] == \
                [kv for k, kv in sorted(state.items()) if k.startswith("a")]
        with pytest.raises(FutureRevisionError):
            self.client.get("a", revision=m.revision + 1)

    @invariant()
    def the_watch_sees_every_revision_once_in_order(self):
        if not hasattr(self, "client"):
            return
        assert self.watch.wait_revision(self.model.revision, 10.0)
        got = [(e.revision, e.kv.key, e.kind, e.kv.value if e.kind == "put" else None,
                e.prev.value if e.prev else None) for e in self.events]
        want = [(rev, key, kind, value, prev) for rev, key, kind, value, _, _, _, prev in self.model.changes]
        assert got == want


ConfigMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestConfigModel = ConfigMachine.TestCase


def test_a_long_prefix_is_read_in_pages_at_one_revision(monkeypatch):
    from ddia_ray.config import queries

    monkeypatch.setattr(queries, "MAX_PAGE", 3)  # pages of 3 rows, looking at 2 keys per call in the past
    monkeypatch.setattr(queries, "MAX_SCAN", 2)
    c = LocalConfig()
    try:
        for i in range(10):
            c.put(f"p/{i}", i)
        rev = c.revision()
        for i in range(0, 10, 2):
            c.delete(f"p/{i}")
        c.put("p/x", "late")
        assert [kv.value for kv in c.get_prefix("p/", revision=rev)] == list(range(10))
        assert [kv.key for kv in c.get_prefix("p/")] == [f"p/{i}" for i in range(1, 10, 2)] + ["p/x"]
        assert [kv.value for kv in c.get_prefix("p/", revision=rev, limit=4)] == [0, 1, 2, 3]
        assert [kv.value for kv in c.get_prefix("p/", limit=2)] == [1, 3]
        assert c.delete_prefix("p/") == c.revision() and c.get_prefix("") == []
    finally:
        c.close()
