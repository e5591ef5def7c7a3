"""Fuzz targets of the storage engines: the LSM WAL, the LSM manifest and sidecars, the B-tree page file.

Theory of operation
-------------------
Each target builds one small database through the public API on
``memory://`` (no disk I/O, so hundreds of opens fit the CI budget), keeps the
model of what was acknowledged, and copies the database into a fresh
directory per input with one file replaced by its mutation. Opening it must
give exactly the acknowledged contents (checked with a full scan and point
gets) or raise ``CorruptionError``/``NotADatabaseError``. A database that
opened must also survive a restart: one more write, close, reopen, and the
contents are the old ones plus that write.

* WAL: the LSM may lose only a torn tail (the honest parse of :mod:`.oracle`
  decides which batches are intact); damage followed by intact batches must
  raise.
* Manifest and ``.sstmeta``: no loss at all is allowed; damage must raise.
* B-tree: the last commit's contents, or raise. The contents of an *older*
  commit is a silent rollback and is reported as such.
"""

from __future__ import annotations

import fsspec

from ddia_ray.errors import CorruptionError, DdiaRayError, NotADatabaseError
from ddia_ray.framing import HEADER_BYTES, frame, frame_object

from .mutate import mutate
from .oracle import LogShape, parse, runs_past_the_end
from .targets import Seed, SetupError, Target, Violation, drop_scratch

__all__ = ["WalTarget", "ManifestTarget", "BTreeTarget"]

_LSM_OPTS = dict(background=False, row_group_rows=16, l0_compaction_trigger=8, l0_slowdown_trigger=12,
                 l0_stop_trigger=20)
_SENTINEL = (b"zz-sentinel", b"after the restart")




def _apply(state: dict, batch) -> dict:
    for op in batch:
        if op[0] == "put":
            state[op[1]] = op[2]
        elif op[0] == "delete":
            state.pop(op[1], None)
        else:
            for k in [k for k in state if op[1] <= k < op[2]]:
                del state[k]
    return state


def _write(db, batch) -> None:
    from ddia_ray.storage.engine import WriteBatch

    wb = WriteBatch()
    for op in batch:
        getattr(wb, op[0].replace("-", "_"))(*op[1:])
    db.write(wb)


# The flushed part: three SSTables (a plain one, one with updates, deletes and a range tombstone, a small one).
_FLUSHED = [
    [("put", b"k%03d" % i, b"v%03d-" % i + b"x" * (i % 17)) for i in range(120)],
    [("put", b"k%03d" % i, b"u%03d" % i) for i in range(0, 40)] + [("delete", b"k%03d" % i) for i in range(50, 55)]
    + [("delete_range", b"k060", b"k070")],
    [("put", b"m%03d" % i, b"w%03d" % i) for i in range(10)],
]
# The unflushed part: one WAL frame per batch; batches touch disjoint keys, so any subset applies
# in any order to the same state (the oracle needs no sequence-number model).
_UNFLUSHED = [
    [("put", b"w000", b"x0")],
    [("put", b"w001", b"x1"), ("put", b"w002", b"x2")],
    [("delete", b"k001")],
    [("delete_range", b"k080", b"k090")],
    [("put", b"w003", b"big" * 100)],
] + [[("put", b"w%03d" % i, b"x%d" % i)] for i in range(4, 10)]


class _LsmCorpus:
    """The LSM database every LSM target mutates: its files, the WAL's frames and the models."""

    def __init__(self, url: str):
        from ddia_ray.storage.lsm import LSMTree

        fs, path = fsspec.core.url_to_fs(url)
        db = LSMTree.open(url, **_LSM_OPTS)
        base: dict = {}
        for batch in _FLUSHED:
            for op in batch:  # one write per op: each its own sequence number
                _write(db, [op])
            _apply(base, batch)
            db.flush()
        wals = [p for p in fs.ls(path, detail=False) if p.endswith(".log")]
        if len(wals) != 1:
            raise SetupError(f"expected one live WAL after the flushes, found {wals}")
        wal = wals[0]
        sizes = [fs.size(wal) if fs.exists(wal) else 0]
        for batch in _UNFLUSHED:
            _write(db, batch)
            sizes.append(fs.size(wal))
        db.close()
        self.base = base
        self.files = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls(path, detail=False)}
        self.wal_name = wal.rsplit("/", 1)[-1]
        self.shape = LogShape.from_sizes(self.files[self.wal_name], sizes, list(range(len(_UNFLUSHED))),
                                         frame_header_bytes=HEADER_BYTES)
        self.full = self.expected(range(len(_UNFLUSHED)))
        got = _contents(url)
        if got != self.full:
            raise SetupError("the seed LSM database does not read back what was written")
        drop_scratch(url)

    def expected(self, batches) -> dict:
        """The acknowledged contents with only ``batches`` of the WAL applied."""
        state = dict(self.base)
        for i in batches:
            _apply(state, _UNFLUSHED[i])
        return state


def _contents(url: str, restart: bool = False, consistent: bool = True) -> dict:
    """Open, read everything (a scan, and point gets that must agree with it if ``consistent``),
    optionally write the sentinel, close."""
    from ddia_ray.storage.lsm import LSMTree

    db = LSMTree.open(url, **_LSM_OPTS)
    try:
        got = dict(db.scan())
        probe = sorted(got)[::7] + [b"k001", b"k055", b"k065", b"k085", b"w009", b"absent"]
        for k in probe:
            if db.get(k) != got.get(k) and consistent:
                raise Violation(f"get({k!r}) = {db.get(k)!r} disagrees with the scan's {got.get(k)!r}")
        if restart:
            db.put(*_SENTINEL)
    finally:
        db.close()
    return got


class _LsmTarget(Target):
    """Shared: copy the seed database with one file mutated, open it, judge the contents."""

    allowed = (CorruptionError, NotADatabaseError)
    _corpus: _LsmCorpus | None = None

    def corpus(self) -> _LsmCorpus:
        if self._corpus is None:
            self._corpus = _LsmCorpus(self.scratch("seed-lsm"))
        return self._corpus

    def generate(self, rng):
        if rng.random() < 0.2:
            return self.reframed(rng)
        return super().generate(rng)

    def reframed(self, rng):
        """A frame whose body is mutated and re-framed with valid checksums: a buggy or hostile writer."""
        raise NotImplementedError

    def expected_for(self, seed: Seed, data: bytes) -> tuple[dict | None, str]:
        """``(contents that must be read, why)``; None when the database must refuse to open."""
        raise NotImplementedError

    def execute(self, seed: Seed, data: bytes) -> None:
        corpus = self.corpus()
        url = self.scratch(self.name)
        fs, path = fsspec.core.url_to_fs(url)
        target = seed.context[0] if seed.name.startswith("gen:") else seed.name
        try:
            for name, blob in corpus.files.items():
                fs.pipe_file(f"{path}/{name}", data if name == target else blob)
            if seed.name.startswith("gen:"):
                # Valid checksums over a crafted body: any contents may be right (a crafted Bloom filter may
                # even make point gets disagree with scans), but nothing foreign may escape.
                _contents(url, restart=True, consistent=False)
                return
            want, why = self.expected_for(seed, data)
            try:
                got = _contents(url, restart=True)
            except DdiaRayError as e:
                if data == seed.data:
                    raise Violation(f"the unchanged database raised {type(e).__name__}: {e}") from e
                if want is not None and why == "truncation":
                    raise Violation(f"a torn tail (truncation) of {seed.name} made open raise "
                                    f"{type(e).__name__}: {e}") from e
                raise
            if want is None:
                raise Violation(f"opened with {len(got)} keys although {seed.name} is damaged in the middle "
                                f"({why}): must raise, never drop acknowledged writes silently")
            if got != want:
                raise Violation(self._describe(got, want, why))
            try:
                again = _contents(url)
            except DdiaRayError as e:
                raise Violation(f"opened fine, then raised {type(e).__name__} after one more write and a "
                                f"restart: {e}") from e
            if again != {**want, _SENTINEL[0]: _SENTINEL[1]}:
                raise Violation(f"after one more write and a restart the contents changed ({len(again)} keys, "
                                f"expected {len(want) + 1})")
        finally:
            drop_scratch(url)

    def _describe(self, got: dict, want: dict, why: str) -> str:
        corpus = self.corpus()
        n = len(_UNFLUSHED)
        for m in range(n, -1, -1):
            if got == corpus.expected(range(m)):
                return f"opened with only the first {m} of the WAL's {n} batches although {why}"
        missing = sorted(set(want) - set(got))[:3]
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
        extra = sorted(set(got) - set(want))[:3]
        return f"opened with wrong contents ({why}): missing {missing}, wrong {wrong}, extra {extra}"


class WalTarget(_LsmTarget):
    """Opening an LSM whose unflushed WAL is mutated."""

    name = "wal"

    def build(self) -> list:
        corpus = self.corpus()
        hints = tuple(o + d for o in corpus.shape.offsets() for d in (0, 4, 8, 12, 13))
        return [Seed(corpus.wal_name, corpus.files[corpus.wal_name], hints, corpus.shape)]

    def reframed(self, rng):
        corpus = self.corpus()
        frames = corpus.shape.frames
        i = rng.randrange(len(frames))
        body, mutations = mutate(rng, frames[i][HEADER_BYTES:], (0, 1, 2, 3))
        data = b"".join(frames[:i]) + frame(body) + b"".join(frames[i + 1:])
        return (Seed("gen:reframed-wal", b"", (), (corpus.wal_name,)), data,
                (f"frame {i} body:",) + tuple(m.describe() for m in mutations))

    def expected_for(self, seed, data):
        hp = parse(seed.context, data)
        if hp.truncation:
            return self.corpus().expected(hp.indices), "truncation"
        if hp.whole:
            return self.corpus().expected(hp.indices), "the WAL is whole frames"
        if hp.tail_only:
            return self.corpus().expected(hp.indices), f"a torn tail at byte {hp.stop}"
        if runs_past_the_end(seed.context, data, hp):
            return self.corpus().expected(hp.indices), f"the frame at byte {hp.stop} runs past the end of the file"
        return None, f"WAL byte {hp.stop} is damaged and intact batches follow it"


class ManifestTarget(_LsmTarget):
    """Opening an LSM whose manifest or one ``.sstmeta`` sidecar is mutated."""

    name = "manifest"

    def build(self) -> list:
        corpus = self.corpus()
        names = sorted(n for n in corpus.files if n.startswith("MANIFEST-") or n.endswith(".sstmeta"))
        if not any(n.startswith("MANIFEST-") for n in names):
            raise SetupError(f"no manifest among the seed database's files {sorted(corpus.files)}")
        hints = (0, 7, 8, 12, 16, 20, 21, 24)
        return [Seed(n, corpus.files[n], hints) for n in names]

    def reframed(self, rng):
        seed = rng.choice(self.seeds())
        body, mutations = mutate(rng, seed.data[8 + HEADER_BYTES:], (0, 1, 2, 3))
        data = frame_object(seed.data[:8], body)
        return (Seed(f"gen:reframed-{seed.name.split('-')[0].split('.')[-1]}", b"", (), (seed.name,)), data,
                (f"{seed.name} body:",) + tuple(m.describe() for m in mutations))

    def expected_for(self, seed, data):
        # A manifest or sidecar is written whole before anything depends on it: no damage may lose data.
        return self.corpus().full, f"{seed.name} was mutated"


# --- B-tree ------------------------------------------------------------------------------------------

_PAGE = 512
_BTREE_COMMITS = [
    [("put", b"b%04d" % i, b"val%d-" % i + b"y" * (i % 40)) for i in range(150)],
    [("put", b"big", bytes(range(256)) * 12)],                     # overflow pages
    [("put", b"b%04d" % i, b"new%d" % i) for i in range(0, 150, 5)] + [("delete", b"b%04d" % i) for i in range(1, 30, 3)],
    [("delete_range", b"b0100", b"b0120")],
    [("put", b"c%02d" % i, b"c") for i in range(5)],
    [("put", b"big", b"second" * 500), ("delete", b"b0003")],
]


class BTreeTarget(Target):
    """Opening and reading a B-tree page file after mutation: the last commit's contents, or raise."""

    name = "btree"
    allowed = (CorruptionError, NotADatabaseError)

    def build(self) -> list:
        from ddia_ray.storage.btree import BTreeEngine

        url = self.scratch("seed-btree")
        db = BTreeEngine.open(url, page_size=_PAGE)
        states, state = [], {}
        for batch in _BTREE_COMMITS:
            _write(db, batch)
            states.append(dict(_apply(state, batch)))
        db.close()
        fs, path = fsspec.core.url_to_fs(url)
        (name,) = [p for p in fs.ls(path, detail=False)]
        data = fs.cat_file(name)
        if self._read(url)[0] != states[-1]:
            raise SetupError("the seed B-tree does not read back its last commit")
        drop_scratch(url)
        hints = tuple(p * _PAGE + d for p in range(len(data) // _PAGE) for d in (0, 4, 5, 8, 16, 24, 28, 36, 40))
        return [Seed(name.rsplit("/", 1)[-1], data, hints, states)]

    @staticmethod
    def _read(url: str, restart: bool = False) -> tuple[dict, int]:
        from ddia_ray.storage.btree import BTreeEngine

        db = BTreeEngine.open(url, page_size=_PAGE)
        try:
            got = dict(db.scan())
            for k in sorted(got)[::9] + [b"big", b"absent"]:
                if db.get(k) != got.get(k):
                    raise Violation(f"get({k!r}) disagrees with the scan")
            seq = db.stats()["seq"]
            if restart:
                db.put(*_SENTINEL)
        finally:
            db.close()
        return got, seq

    def execute(self, seed: Seed, data: bytes) -> None:
        states = seed.context
        url = self.scratch("btree")
        fs, path = fsspec.core.url_to_fs(url)
        try:
            fs.pipe_file(f"{path}/{seed.name}", data)
            try:
                got, _ = self._read(url, restart=True)
            except DdiaRayError:
                if data == seed.data:
                    raise Violation("the unchanged B-tree file raised") from None
                raise
            if got != states[-1]:
                older = [i + 1 for i, s in enumerate(states[:-1]) if s == got]
                if older:
                    raise Violation(f"opened at commit {older[-1]} of {len(states)}: a silent rollback of "
                                    f"acknowledged commits (len {len(data)} of {len(seed.data)} bytes)")
                if not got:
                    raise Violation(f"opened as an empty database ({len(data)} bytes)")
                raise Violation(f"opened with contents of no commit ({len(got)} keys, expected {len(states[-1])})")
            try:
                again, _ = self._read(url)
            except DdiaRayError as e:
                raise Violation(f"opened fine, then raised {type(e).__name__} after one more commit: {e}") from e
            if again != {**states[-1], _SENTINEL[0]: _SENTINEL[1]}:
                raise Violation("after one more commit and a restart the contents changed")
        finally:
            drop_scratch(url)
