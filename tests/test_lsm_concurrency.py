"""The LSM-tree under concurrency: writes racing close(), the lock order, jobs racing on listings.

Deterministic scenarios first (a gated filesystem or lock decides who goes first), then a
seeded stress test. The stress run happens in a subprocess with a watchdog: a deadlock dumps
every thread's stack and fails the test, a SIGBUS fails it too, instead of killing pytest.
Replay a seed with ``python tests/test_lsm_concurrency.py stress <seed> <empty dir>``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import ddia_ray
from ddia_ray.errors import DatabaseClosedError
from ddia_ray.storage.engine import WriteBatch
from ddia_ray.storage.lsm import LSMTree
from ddia_ray.storage.lsm.locks import LOCK_CHECK_ENV

_n = itertools.count()
WAIT_S = 30  # upper bound for events that should happen almost at once
SEEDS = [11, 23, 37, 67, 71]
ROUNDS = 4  # open, hammer, close: per seed


def _eventually(condition, what: str) -> None:
    """Wait (polling) until ``condition()`` holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _closed(db) -> bool:
    try:
        db.snapshot().release()  # takes only the mutex: never waits behind a writer
    except DatabaseClosedError:
        return True
    return False


class GatedFS(MemoryFileSystem):
    """memory:// whose SSTable uploads and WAL appends can be held at a gate."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gates = {".parquet": threading.Event(), ".log": threading.Event()}
        self.entered = {suffix: threading.Event() for suffix in self.gates}
        for gate in self.gates.values():
            gate.set()

    def pipe_file(self, path, value, *args, **kwargs):
        self._pass(path)
        return super().pipe_file(path, value, *args, **kwargs)

    def _pass(self, path: str) -> None:
        for suffix, gate in self.gates.items():
            if path.endswith(suffix):
                self.entered[suffix].set()
                assert gate.wait(WAIT_S), f"{suffix} gate never opened"

    def _open(self, path, mode="rb", *args, **kwargs):
        f = super()._open(path, mode, *args, **kwargs)
        return _GatedFile(f, self, path) if path.endswith(".log") and "a" in mode else f


class _GatedFile:
    def __init__(self, f, fs, path):
        self._f, self._fs, self._path = f, fs, path

    def write(self, data):
        self._fs._pass(self._path)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


class _ContendedLock:
    """A lock that signals when a second thread starts waiting for it."""

    def __init__(self, lock):
        self._lock = lock
        self.contended = threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        if self._lock.acquire(False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def locked(self):
        return self._lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _thread(target, *args) -> tuple[threading.Thread, list]:
    """A daemon thread running ``target``; the list receives its result or its exception."""
    out: list = []

    def run():
        try:
            out.append(target(*args))
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# --- writes racing close() ----------------------------------------------------


def test_a_group_commit_in_flight_finishes_before_close_closes_the_wal():
    fs, path = GatedFS(skip_instance_cache=True), f"/lsm-close-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs, background=False)
    fs.gates[".log"].clear()
    writer, result = _thread(db.write, WriteBatch().put(b"k", b"v").put(b"l", b"w"))
    assert fs.entered[".log"].wait(WAIT_S)  # the leader is appending, outside the mutex
    closer, closed = _thread(db.close)
    _eventually(lambda: _closed(db), "close() to begin")
    fs.gates[".log"].set()
    writer.join(WAIT_S)
    closer.join(WAIT_S)
    assert not writer.is_alive() and not closer.is_alive()
    assert result == [None], f"the acknowledged-or-refused write raised {result}"
    assert closed == [None]
    db = LSMTree.open(path, filesystem=fs, background=False)
    assert db.get_many([b"k", b"l"]) == [b"v", b"w"]  # acknowledged, so replayed
    db.close()


def test_writers_queued_behind_close_are_refused_and_leave_nothing_behind():
    fs, path = GatedFS(skip_instance_cache=True), f"/lsm-close-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs, background=False)
    fs.gates[".log"].clear()
    leader, first = _thread(db.put, b"first", b"1")
    assert fs.entered[".log"].wait(WAIT_S)
    queued, second = _thread(db.write, WriteBatch().put(b"second", b"2"))
    _eventually(lambda: db.stats()["write_queue"] == 2, "the second writer to queue")
    closer, _ = _thread(db.close)
    _eventually(lambda: _closed(db), "close() to begin")
    fs.gates[".log"].set()
    for t in (leader, queued, closer):
        t.join(WAIT_S)
        assert not t.is_alive()
    assert first == [None]
    assert len(second) == 1 and isinstance(second[0], DatabaseClosedError), second
    with pytest.raises(DatabaseClosedError):
        db.put(b"third", b"3")
    db = LSMTree.open(path, filesystem=fs, background=False)
    assert db.get_many([b"first", b"second", b"third"]) == [b"1", None, None]
    db.close()


# --- the lock order -------------------------------------------------------------


def test_close_during_a_compaction_does_not_deadlock():
    """close() used to hold the commit lock while waiting for the compaction lock: an inversion."""
    fs, path = GatedFS(skip_instance_cache=True), f"/lsm-order-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs, background=False, l0_compaction_trigger=4)
    for i in range(3):
        db.put(b"k%d" % i, b"v%d" % i)
        db.flush()
    db._comp_lock = gate = _ContendedLock(db._comp_lock)
    fs.gates[".parquet"].clear()
    fs.entered[".parquet"].clear()
    compactor, compacted = _thread(db.compact)
    assert fs.entered[".parquet"].wait(WAIT_S)  # holds the compaction lock, writing its output
    closer, closed = _thread(db.close)
    assert gate.contended.wait(WAIT_S)  # close() waits for the compaction
    fs.gates[".parquet"].set()  # the compaction now needs the commit lock
    compactor.join(WAIT_S)
    closer.join(WAIT_S)
    assert not compactor.is_alive() and not closer.is_alive(), "deadlock: close() against compact()"
    assert compacted == [None] and closed == [None]
    db = LSMTree.open(path, filesystem=fs, background=False)
    assert db.stats()["level_files"][0] == 0  # the compaction committed before close() returned
    assert dict(db.scan()) == {b"k%d" % i: b"v%d" % i for i in range(3)}
    db.close()


def test_the_lock_checker_reports_an_inversion(monkeypatch, tmp_path):
    from ddia_ray._validate import InvariantViolation

    monkeypatch.setenv(LOCK_CHECK_ENV, "1")
    db = LSMTree.open(f"file://{tmp_path}", background=False)
    with db._commit_lock:  # rank 4 ...
        with pytest.raises(InvariantViolation, match="lock order"):
            db._comp_lock.acquire()  # ... then rank 2: refused before it can block
    with db._mutex:
        with pytest.raises(InvariantViolation, match="lock order"):
            db.put(b"k", b"v")  # the write path takes the mutex again: a self-deadlock, reported
    db.put(b"k", b"v")
    db.close()


# --- background jobs and directory listings --------------------------------------


class RacyListingFS(MemoryFileSystem):
    """memory:// whose listing fails as it does when another thread deletes a file meanwhile."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.racy_listings = 0  # how many of the next listings fail
        self.phantoms: list[str] = []  # names a stale listing still shows

    def ls(self, path, detail=True, **kwargs):
        if self.racy_listings:
            self.racy_listings -= 1
            raise KeyError(f"{path}/MANIFEST-000007")  # memory:// stats a file that just vanished
        out = super().ls(path, detail=detail, **kwargs)
        return out + [f"{path.rstrip('/')}/{n}" for n in self.phantoms] if not detail else out


def test_flushes_and_compactions_never_list_the_directory():
    fs, path = RacyListingFS(skip_instance_cache=True), f"/lsm-ls-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs, memtable_bytes=4096, l0_compaction_trigger=2)
    fs.racy_listings = 10**9  # from now on every listing would fail
    expected = {}
    for round_ in range(4):
        for i in range(200):
            key = b"k%04d" % i
            db.put(key, b"%d" % round_)
            expected[key] = b"%d" % round_
        db.flush()
    db.compact()
    assert dict(db.scan()) == expected
    assert db.stats()["files_deleted"] > 0  # obsolete WALs and tables were deleted by name
    db.close()
    fs.racy_listings = 0
    assert not [n for n in fs.ls(path, detail=False) if n.endswith(".log")][1:]  # flushed WALs are gone


def test_open_lists_again_when_a_file_vanishes_mid_listing():
    fs, path = RacyListingFS(skip_instance_cache=True), f"/lsm-ls-{next(_n)}"
    db = LSMTree.open(path, filesystem=fs)
    db.put(b"k", b"v")
    db.close()
    fs.racy_listings = 1
    db = LSMTree.open(path, filesystem=fs)
    assert db.get(b"k") == b"v"
    db.close()


def test_open_tolerates_garbage_that_is_already_gone():
    fs, path = RacyListingFS(skip_instance_cache=True), f"/lsm-ls-{next(_n)}"
    LSMTree.open(path, filesystem=fs).close()
    fs.phantoms = ["000099.parquet", "MANIFEST-000000"]  # a stale listing: deleted objects still shown
    db = LSMTree.open(path, filesystem=fs)
    db.put(b"k", b"v")
    db.flush()
    assert db.get(b"k") == b"v"
    db.close()


# --- the seeded stress test ---------------------------------------------------------


def _run_stress(seed: int, directory: Path) -> dict:
    root = Path(ddia_ray.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), LOCK_CHECK_ENV: "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "stress", str(seed), str(directory)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"seed {seed}: no answer in {e.timeout}s (hung past the watchdog)")
    tail = (proc.stderr or "")[-6000:]
    assert proc.returncode == 0, f"seed {seed}: exit {proc.returncode} (deadlock or crash)\n{tail}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("seed", SEEDS)
def test_stress_writes_jobs_scans_and_close_in_a_subprocess(tmp_path, seed):
    report = _run_stress(seed, tmp_path)
    assert report["errors"] == [], f"seed {seed}: {report['errors'][0]}"
    assert report["mismatches"] == [], f"seed {seed}: acknowledged writes lost or refused ones kept: " \
                                       f"{report['mismatches']}"
    assert len(report["rounds"]) == ROUNDS
    assert all(r["acked"] >= r["target"] for r in report["rounds"]), report["rounds"]


class _Workload:
    """Threads over one engine, each owning a key space, each keeping the model of its acknowledged state.

    ``engine`` is an LSMTree or a StorageClient (same method names). Every thread runs until the
    engine raises DatabaseClosedError; any other exception is recorded as an error.
    """

    def __init__(self, engine, seed: int, *, writers: int = 3, parquet_dir: str | None = None):
        self.round = 0
        self.engine = engine
        self.seed = seed
        self.writers = writers
        self.parquet_dir = parquet_dir
        self.models: dict[bytes, dict] = {}
        self.errors: list[str] = []
        self.acked = 0
        self.progress = threading.Condition()
        self.threads: list[threading.Thread] = []

    def start(self, round_: int = 0, *, writers_only: bool = False) -> None:
        """Start one thread per role against ``self.engine`` (``round_`` varies their seeds)."""
        roles = [(self._writer, i) for i in range(self.writers)]
        if not writers_only:
            roles += [(self._ingester, 0), (self._maintainer, 0), (self._reader, 0)]
        self.threads = []
        for n, (role, i) in enumerate(roles):
            rng = random.Random(self.seed * 1000 + round_ * 100 + n)
            t = threading.Thread(target=self._guard, args=(role, i, rng), daemon=True)
            t.start()
            self.threads.append(t)

    def wait_acked(self, target: int, timeout_s: float) -> None:
        with self.progress:
            self.progress.wait_for(lambda: self.acked >= target or self.errors, timeout_s)

    def _ack(self, n: int = 1) -> None:
        with self.progress:
            self.acked += n
            self.progress.notify_all()

    def _guard(self, role, i: int, rng: random.Random) -> None:
        try:
            while True:
                role(i, rng)
        except DatabaseClosedError:
            return
        except BaseException:  # noqa: BLE001 -- reported by the test
            self.errors.append(traceback.format_exc())
            with self.progress:
                self.progress.notify_all()

    def _writer(self, i: int, rng: random.Random) -> None:
        prefix = b"w%d/" % i
        model = self.models.setdefault(prefix, {})
        key = lambda j: prefix + b"%04d" % j  # noqa: E731
        r = rng.random()
        if r < 0.35:
            k, v = key(rng.randrange(300)), b"%d:%d" % (i, rng.randrange(10**9))
            self.engine.put(k, v)
            model[k] = v
        elif r < 0.45:
            k = key(rng.randrange(300))
            self.engine.delete(k)
            model.pop(k, None)
        elif r < 0.5:
            lo = rng.randrange(300)
            hi = lo + rng.randrange(1, 20)
            self.engine.delete_range(key(lo), key(hi))
            for k in [k for k in model if key(lo) <= k < key(hi)]:
                del model[k]
        elif r < 0.9:
            batch, after = WriteBatch(), dict(model)
            big = rng.random() < 0.3  # long group commits widen the window close() must respect
            for _ in range(rng.randrange(1, 300 if big else 20)):
                k = key(rng.randrange(300))
                if rng.random() < 0.85:
                    v = b"%d" % rng.randrange(10**9) + b"." * (1000 if big else 10)
                    batch.put(k, v)
                    after[k] = v
                else:
                    batch.delete(k)
                    after.pop(k, None)
            self.engine.write(batch)
            model.clear()
            model.update(after)
        else:  # read your own writes: only this thread writes this key space
            k = key(rng.randrange(300))
            got = self.engine.get_many([k])[0]
            assert got == model.get(k), f"{k!r}: read {got!r}, acknowledged {model.get(k)!r}"
            return
        self._ack()

    def _ingester(self, i: int, rng: random.Random) -> None:
        model = self.models.setdefault(b"g/", {})
        keys = sorted(rng.sample(range(5000), rng.randrange(1, 400)))
        tag = rng.randrange(10**9)
        rows = {b"g/%05d" % k: b"ingest:%d" % tag for k in keys}
        table = pa.table({"key": pa.array(list(rows), pa.binary()), "value": pa.array(list(rows.values()),
                                                                                     pa.binary())})
        if self.parquet_dir is None:
            self.engine.ingest(table)
        else:
            import pyarrow.parquet as pq

            url = f"{self.parquet_dir}/ingest-{tag}.parquet"
            pq.write_table(table, url)
            self.engine.ingest_parquet(f"file://{url}")
        model.update(rows)
        self._ack()

    def _maintainer(self, i: int, rng: random.Random) -> None:
        r = rng.random()
        if r < 0.45:
            self.engine.flush()
        elif r < 0.75:
            self.engine.compact()
        else:
            self.engine.stats()

    def _reader(self, i: int, rng: random.Random) -> None:
        reverse = rng.random() < 0.3
        lo = b"w%d/%04d" % (rng.randrange(self.writers), rng.randrange(300))
        hi = lo[:-4] + b"9999"
        keys = [k for k, _ in itertools.islice(self.engine.scan(lo, hi, reverse=reverse), 200)]
        assert keys == sorted(set(keys), reverse=reverse), "a scan returned keys out of order"
        if isinstance(self.engine, LSMTree) and rng.random() < 0.3:
            with self.engine.snapshot() as snap:
                first = dict(self.engine.scan(lo, hi, snapshot=snap))
                assert dict(self.engine.scan(lo, hi, snapshot=snap)) == first, "a snapshot moved"

    def check(self, reopened) -> list[str]:
        """Every key space after reopening equals its model: nothing acknowledged lost, nothing refused kept."""
        bad = []
        for prefix, model in self.models.items():
            found = dict(reopened.scan(prefix, prefix[:-1] + bytes([prefix[-1] + 1])))
            if found != model:
                lost = sorted(set(model) - set(found))[:3]
                extra = sorted(set(found) - set(model))[:3]
                changed = sorted(k for k in set(model) & set(found) if model[k] != found[k])[:3]
                bad.append(f"{prefix!r}: lost {lost}, unexpected {extra}, changed {changed}")
        return bad


def _stress(seed: int, directory: str) -> dict:
    """One seeded run (in the subprocess): a few rounds of open, hammer, close at a random moment.

    Each round reopens what the previous one closed and compares it with the models first, so
    every close() is checked, and a close() racing a long group commit is likely in some round.
    """
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)  # a deadlock: every stack to stderr, exit 1
    rng = random.Random(seed)
    memory = rng.random() < 0.3  # memory:// (appended WAL) or a local disk (mapped WAL)
    url = f"memory://lsm-stress-{seed}" if memory else f"file://{directory}/db"
    opts = dict(compaction=rng.choice(["leveled", "tiered"]), memtable_bytes=rng.choice([16 << 10, 64 << 10]),
                row_group_rows=64, target_file_bytes=64 << 10, level_base_bytes=256 << 10,
                l0_compaction_trigger=2, l0_slowdown_trigger=6, l0_stop_trigger=12, stall_timeout_s=50)
    work = _Workload(None, seed)
    rounds, mismatches, hung = [], [], []
    for round_ in range(ROUNDS):
        # Some rounds run writers alone on a roomy memtable: no job then holds a lock or a thread
        # that close() must wait for, so close() reaches the WAL while a group commit is in flight.
        writers_only = rng.random() < 0.4
        background = writers_only or rng.random() < 0.7
        memtable = {"memtable_bytes": 4 << 20} if writers_only else {}
        db = LSMTree.open(url, background=background, **{**opts, **memtable})
        mismatches += [f"after round {round_ - 1}: {m}" for m in work.check(db)]
        work.engine = db
        target = work.acked + rng.randrange(30, 300 if background else 120)  # inline jobs are slow
        work.start(round_, writers_only=writers_only)
        started = time.monotonic()
        work.wait_acked(target, 40)
        rounds.append({"background": background, "writers_only": writers_only, "target": target,
                       "acked": work.acked, "seconds": round(time.monotonic() - started, 2)})
        db.close(flush=rng.random() < 0.2)
        for t in work.threads:
            t.join(40)
        hung += [f"round {round_}: {t.name}" for t in work.threads if t.is_alive()]
        if work.errors or hung:
            break
    db = LSMTree.open(url, background=False, **opts)
    mismatches += [f"after round {len(rounds) - 1}: {m}" for m in work.check(db)]
    db.close()
    faulthandler.cancel_dump_traceback_later()
    errors = work.errors + ([f"threads still running after close(): {hung}"] if hung else [])
    return {"seed": seed, "url": url.split(":")[0], "opts": opts, "rounds": rounds, "errors": errors,
            "mismatches": mismatches}


# --- the same through a StorageNode actor with max_concurrency > 1 ---------------------


@pytest.mark.ray
def test_stress_through_a_storage_node_with_concurrent_calls(ray_session, tmp_path):
    from ddia_ray.storage.node import StorageNode

    seed = 5
    url = f"file://{tmp_path}/db"
    opts = dict(memtable_bytes=16 << 10, row_group_rows=64, target_file_bytes=64 << 10,
                l0_compaction_trigger=2, stall_timeout_s=50)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    node = StorageNode.launch(f"sn-stress-{os.getpid()}-{next(_n)}", url, threads=8, **opts)
    client = node.client()
    try:
        work = _Workload(client, seed, writers=3, parquet_dir=str(parquet))
        work.start()
        work.wait_acked(300, 240)  # returns at 300: the bound is for a machine busy with other work
        acked = work.acked
        ray_session.get(node.group.handle(node.node).stop.remote())  # the shell closes the engine
        for t in work.threads:
            t.join(60)
        assert not [t for t in work.threads if t.is_alive()], "calls still running after the node closed"
        assert work.errors == [], work.errors[0]
        assert acked >= 300
    finally:
        client.close()
        node.shutdown()
    with StorageNode.launch(f"sn-stress-{os.getpid()}-{next(_n)}", url, **opts) as reopened:
        client = reopened.client()
        assert work.check(client) == []
        client.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["stress"]:
        print(json.dumps(_stress(int(sys.argv[2]), sys.argv[3])))
