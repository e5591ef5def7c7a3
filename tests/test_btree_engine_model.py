"""Model-based test: ``BTreeEngine`` behaves exactly like ``MemoryEngine`` under any operation sequence.

Small pages (512 bytes) and a tiny inline-value limit make a few dozen keys build a multi-level
tree with overflow values, so splits, merges, root growth/shrink, page reuse and compaction all
happen within short runs. The whole tree is verified after every step.
"""

from __future__ import annotations

import itertools

from hypothesis import settings, strategies as st
from hypothesis.stateful import Bundle, consumes, invariant, precondition, rule

from ddia_ray.storage import MemoryEngine, StorageEngine, WriteBatch
from ddia_ray.storage.btree import BTreeEngine
from engine_model import engine_vs_model

_RUN = itertools.count()
PAD = b"." * 36  # long keys: few entries per 512-byte page, so a few hundred keys make three levels


def _key(i: int) -> bytes:
    return b"k%03d" % i + PAD


KEYS = st.one_of(st.integers(min_value=0, max_value=399).map(_key), st.binary(max_size=2))
VALUES = st.one_of(st.binary(max_size=12), st.binary(min_size=13, max_size=700))  # inline or overflow
OPTIONS = {"page_size": 512, "inline_value_max": 12, "cache_pages": 16, "sync": False}


class BTreeVsModel(engine_vs_model(KEYS, VALUES, batch_max=25)):
    """BTreeEngine against MemoryEngine: the shared rules of :mod:`engine_model`, plus bulk fills,
    snapshots, reopening and a full tree check after every step."""

    snapshots = Bundle("snapshots")

    def __init__(self):
        super().__init__()
        self.url = f"memory://btree-model/{next(_RUN)}"
        self.db = BTreeEngine.open(self.url, **OPTIONS)
        self.model = MemoryEngine()
        self.live = []

    @rule(first=st.integers(min_value=0, max_value=399), count=st.integers(min_value=1, max_value=200),
          value=st.binary(max_size=12))
    def fill(self, first, count, value):
        batch = WriteBatch()
        for i in range(first, min(400, first + count)):
            batch.put(_key(i), value + b"%d" % i)
        self.db.write(batch)
        self.model.write(batch)

    @rule(target=snapshots)
    def take_snapshot(self):
        pair = (self.db.snapshot(), self.model.snapshot())
        self.live.append(pair)
        return pair

    @rule(pair=snapshots, key=KEYS, start=KEYS, reverse=st.booleans())
    def read_at_snapshot(self, pair, key, start, reverse):
        ours, theirs = pair
        if ours.released:
            return
        assert self.db.get(key, snapshot=ours) == self.model.get(key, snapshot=theirs)
        assert list(self.db.scan(start, None, reverse=reverse, snapshot=ours)) == \
            list(self.model.scan(start, None, reverse=reverse, snapshot=theirs))

    @rule(pair=consumes(snapshots))
    def release(self, pair):
        pair[0].release()
        pair[1].release()

    @rule()
    def reopen(self):
        self.db.close()
        for ours, theirs in self.live:  # a restart ends every snapshot
            theirs.release()
        self.live.clear()
        self.db = BTreeEngine.open(self.url, **OPTIONS)

    @rule(a=KEYS, b=KEYS, reverse=st.booleans())
    def scan_range(self, a, b, reverse):
        a, b = min(a, b), max(a, b)
        assert list(self.db.scan(a, b, reverse=reverse)) == list(self.model.scan(a, b, reverse=reverse))

    @invariant()
    def a_valid_tree(self):  # the contents themselves are compared by the shared invariant
        assert self.db.check() == self.db.stats()["keys"] == sum(1 for _ in self.model.scan())

    @precondition(lambda self: True)
    @invariant()
    def stats_are_consistent(self):
        s = self.db.stats()
        assert s["pages_live"] + s["pages_free"] + s["pages_pending"] == s["pages_total"]
        assert s["data_bytes"] == sum(len(k) + len(v) for k, v in self.model.scan())

    def teardown(self):
        self.db.close()


BTreeVsModel.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestBTreeVsModel = BTreeVsModel.TestCase


def test_engine_satisfies_the_protocol():
    db = BTreeEngine.open(None)
    try:
        assert isinstance(db, StorageEngine)
    finally:
        db.close()
