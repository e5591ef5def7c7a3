"""Model-based test: the LSM-tree behaves like MemoryEngine under random operations, for both policies."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import initialize, precondition, rule

from ddia_ray.errors import DatabaseClosedError
from ddia_ray.storage.engine import MemoryEngine
from ddia_ray.storage.lsm import LSMTree
from engine_model import engine_vs_model

_urls = itertools.count()
KEYS = st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"ca", b"d", b"e", b"f", b"g", b"h", b"zz"])
VALUES = st.binary(max_size=6)
TINY = dict(memtable_bytes=400, row_group_rows=3, target_file_bytes=120, l0_compaction_trigger=2,
            l0_slowdown_trigger=3, l0_stop_trigger=4, level_base_bytes=300, level_fanout=2, num_levels=4,
            max_immutable_memtables=1, background=False, tiered_size_ratio=1.5)


class LSMMachine(engine_vs_model(KEYS, VALUES, batch_max=5)):
    """Drives an LSMTree and MemoryEngine with the same operations (shared rules in
    :mod:`engine_model`) and compares every read, at snapshots too."""

    policy = "leveled"

    @initialize()
    def open_db(self):
        self.url = f"memory://lsm-model-{self.policy}-{next(_urls)}"
        self.db = LSMTree.open(self.url, compaction=self.policy, **TINY)
        self.model = MemoryEngine()
        self.snaps: list[tuple] = []

    def teardown(self):
        if hasattr(self, "db"):
            for _, s in self.snaps:
                s.release()
            self.db.close()

    @precondition(lambda self: len(self.snaps) < 4)
    @rule()
    def take_snapshot(self):
        self.snaps.append((self.model.snapshot(), self.db.snapshot()))

    @precondition(lambda self: self.snaps)
    @rule(i=st.integers(0, 3))
    def release_snapshot(self, i):
        ms, ds = self.snaps.pop(i % len(self.snaps))
        ms.release()
        ds.release()

    def _pick(self, i):
        if i is None or not self.snaps:
            return None, None
        return self.snaps[i % len(self.snaps)]

    @rule(key=KEYS, i=st.none() | st.integers(0, 3))
    def get(self, key, i):
        ms, ds = self._pick(i)
        assert self.db.get(key, snapshot=ds) == self.model.get(key, snapshot=ms)

    @rule(keys=st.lists(KEYS, max_size=4), i=st.none() | st.integers(0, 3))
    def get_many(self, keys, i):
        ms, ds = self._pick(i)
        assert self.db.get_many(keys, snapshot=ds) == [self.model.get(k, snapshot=ms) for k in keys]

    @rule(a=st.none() | KEYS, b=st.none() | KEYS, reverse=st.booleans(), i=st.none() | st.integers(0, 3))
    def scan(self, a, b, reverse, i):
        if a is not None and b is not None and a > b:
            a, b = b, a
        ms, ds = self._pick(i)
        got = list(self.db.scan(a, b, reverse=reverse, snapshot=ds))
        assert got == list(self.model.scan(a, b, reverse=reverse, snapshot=ms))

    @rule()
    def reopen(self):
        for ms, ds in self.snaps:
            ms.release()
            ds.release()
        self.snaps.clear()
        self.db.close()
        with pytest.raises(DatabaseClosedError):
            self.db.get(b"a")
        self.db = LSMTree.open(self.url, compaction=self.policy, **TINY)


class TieredMachine(LSMMachine):
    policy = "tiered"


_SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestLeveledModel = LSMMachine.TestCase
TestLeveledModel.settings = _SETTINGS
TestTieredModel = TieredMachine.TestCase
TestTieredModel.settings = _SETTINGS
