"""Opening a damaged B-tree page file, snapshot lifetime, and forged pages.

One named test per case, as in ``test_lsm_corruption.py``. The rules under test are in
``ddia_ray/storage/btree/recovery.py``: an acknowledged commit is never rolled back without a
word. With ``sync=True`` any damage to the newest commit (its meta page or a page it wrote) is a
CorruptionError that leaves the file untouched, unless the caller asks for
``recover="previous_commit"``; with ``sync=False`` a power loss may legitimately lose the newest
commit, and falling back is logged and counted. Forged pages (valid checksum, hostile contents)
run in a subprocess with a memory limit and a timeout, so an endless loop or a runaway
allocation is a test failure, not a dead test run.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from ddia_ray.errors import CorruptionError, DdiaRayError, NotADatabaseError
from ddia_ray.storage import WriteBatch
from ddia_ray.storage.btree import BTreeEngine

PAGE = 1024
HEADER = struct.Struct("<IBBHQQI")  # crc format kind 0 page_no txn length (pagefile.py's grammar)


def _open(tmp_path, **options):
    return BTreeEngine.open(f"file://{tmp_path}/db", page_size=PAGE, **options)


def _data(tmp_path) -> str:
    return os.path.join(tmp_path, "db", "data.btree")


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _damage(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _flip_bit(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def _pages_of_txn(path, txn: int) -> list[int]:
    with open(path, "rb") as f:
        raw = f.read()
    return [n for n in range(2, len(raw) // PAGE) if HEADER.unpack_from(raw, n * PAGE)[5] == txn]


def _committed(tmp_path, sync: bool) -> tuple[int, list]:
    """A database with a few commits; returns the last txn id and the contents before the last commit."""
    db = _open(tmp_path, sync=sync)
    for round_no in range(5):
        batch = WriteBatch()
        for i in range(200):
            batch.put(b"key%04d" % i, b"round-%d-" % round_no + b"v" * (i % 50))
        db.write(batch)
    before = list(db.scan())
    db.put(b"key0007", b"the last, acknowledged write")
    seq = db.stats()["seq"]
    db.close()
    return seq, before


# --- the newest commit is damaged ------------------------------------------------------------


def test_a_bit_flip_in_the_newest_meta_page_is_a_corruption_error_and_the_file_is_unchanged(tmp_path):
    seq, _ = _committed(tmp_path, sync=True)
    path = _data(tmp_path)
    _flip_bit(path, (seq % 2) * PAGE + HEADER.size + 30)  # inside the meta fields: page_count
    before = _digest(path)
    with pytest.raises(CorruptionError, match=f"meta page {seq % 2}") as err:
        _open(tmp_path, sync=True)
    assert err.value.path == path
    assert _digest(path) == before  # the evidence is still there for a repair tool or a backup restore


def test_damage_to_a_page_the_last_commit_wrote_is_a_corruption_error(tmp_path):
    seq, _ = _committed(tmp_path, sync=True)
    path = _data(tmp_path)
    mine = _pages_of_txn(path, seq)
    assert mine  # the last commit rewrote at least the path to key0007
    _damage(path, mine[-1] * PAGE + HEADER.size + 5, b"\xde\xad")
    before = _digest(path)
    with pytest.raises(CorruptionError, match=f"commit {seq}.*wrote page {mine[-1]}"):
        _open(tmp_path, sync=True)
    assert _digest(path) == before


def test_a_truncated_tail_under_a_synced_commit_is_a_corruption_error(tmp_path):
    db = _open(tmp_path, sync=True)
    db.put(b"small", b"1")
    db.put(b"large", os.urandom(30_000))  # appends overflow pages at the end of the file
    db.close()
    path = _data(tmp_path)
    os.truncate(path, os.path.getsize(path) - PAGE // 2)
    with pytest.raises(CorruptionError, match="needs .* pages"):
        _open(tmp_path, sync=True)


def test_recover_previous_commit_falls_back_explicitly_logged_and_counted(tmp_path, caplog):
    seq, before = _committed(tmp_path, sync=True)
    path = _data(tmp_path)
    _flip_bit(path, (seq % 2) * PAGE + HEADER.size + 30)
    with caplog.at_level(logging.WARNING, logger="ddia_ray.storage.btree"):
        db = _open(tmp_path, sync=True, recover="previous_commit")
    assert db.stats()["seq"] == seq - 1 and db.stats()["open_recoveries"] == 1
    assert list(db.scan()) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(path in w and f"opened commit {seq - 1}" in w for w in warnings), warnings
    db.put(b"after", b"recovery")  # the recovered file keeps working, and now opens normally
    db.close()
    db = _open(tmp_path, sync=True)
    assert db.get(b"after") == b"recovery" and db.stats()["open_recoveries"] == 0
    db.close()


def test_an_unknown_recover_mode_is_refused(tmp_path):
    with pytest.raises(DdiaRayError, match="recover"):
        _open(tmp_path, recover="whatever")


def test_without_sync_a_lost_newest_commit_falls_back_with_a_warning(tmp_path, caplog):
    seq, before = _committed(tmp_path, sync=False)
    path = _data(tmp_path)
    mine = _pages_of_txn(path, seq)
    _damage(path, mine[0] * PAGE + HEADER.size + 5, b"\xde\xad")  # the OS never wrote that page
    with caplog.at_level(logging.WARNING, logger="ddia_ray.storage.btree"):
        db = _open(tmp_path, sync=False)
    assert db.stats()["seq"] == seq - 1 and db.stats()["open_recoveries"] == 1
    assert list(db.scan()) == before
    assert any("without fsync" in r.getMessage() for r in caplog.records), caplog.records
    db.close()


def test_an_unsynced_file_opened_with_sync_refuses_to_drop_its_newest_commit(tmp_path):
    seq, _ = _committed(tmp_path, sync=False)
    _flip_bit(_data(tmp_path), (seq % 2) * PAGE + HEADER.size + 30)
    with pytest.raises(CorruptionError, match="opener runs with sync=True"):
        _open(tmp_path, sync=True)


def test_a_crash_before_the_meta_write_is_not_a_loss_and_opens_silently(tmp_path, caplog):
    seq, _ = _committed(tmp_path, sync=True)
    db = _open(tmp_path, sync=True)
    backend = db._gen.pf.backend
    real_write = backend.write

    def crash_at_the_meta_write(offset, data):
        if offset < 2 * PAGE:
            raise OSError("power lost before the meta write")
        real_write(offset, data)

    backend.write = crash_at_the_meta_write
    with pytest.raises(OSError):
        db.write(WriteBatch().put(b"key0001", b"never acknowledged").put(b"new", b"x" * 5000))
    db.close()
    with caplog.at_level(logging.WARNING, logger="ddia_ray.storage.btree"):
        db = _open(tmp_path, sync=True)
    assert db.stats()["seq"] == seq and db.stats()["open_recoveries"] == 0 and not caplog.records
    assert db.get(b"key0007") == b"the last, acknowledged write" and db.get(b"new") is None
    db.close()


# --- an empty file, and creation ---------------------------------------------------------------


def test_a_data_file_truncated_to_zero_bytes_is_not_opened_as_a_new_database(tmp_path):
    seq, _ = _committed(tmp_path, sync=True)
    path = _data(tmp_path)
    os.truncate(path, 0)
    with pytest.raises(CorruptionError, match="empty"):
        _open(tmp_path, sync=True)
    assert os.path.getsize(path) == 0  # not silently re-created over: the loss stays visible
    named = tmp_path / "named.btree"
    named.write_bytes(b"")
    with pytest.raises(CorruptionError, match="empty"):
        BTreeEngine.open(f"file://{named}")


def test_a_crash_during_creation_leaves_no_data_file(tmp_path, monkeypatch):
    from ddia_ray.storage.btree import _backend

    def power_loss(self):
        raise OSError("power lost during creation")

    monkeypatch.setattr(_backend._LocalBackend, "sync", power_loss)
    with pytest.raises(OSError):
        _open(tmp_path)
    assert not os.path.exists(_data(tmp_path))  # never an empty or half-written data file
    monkeypatch.undo()
    db = _open(tmp_path)  # the next open creates the database from scratch (the stale temp file is reused)
    db.put(b"a", b"1")
    db.close()
    assert sorted(os.listdir(tmp_path / "db")) == ["data.btree"]


# --- snapshot lifetime -------------------------------------------------------------------------


def test_a_snapshot_dropped_without_release_is_freed_when_collected(tmp_path):
    db = _open(tmp_path, sync=False)
    keys = [b"key%04d" % i for i in range(300)]
    batch = WriteBatch()
    for k in keys:
        batch.put(k, b"old")
    db.write(batch)
    snap = db.snapshot()
    assert db.get(keys[0], snapshot=snap) == b"old"
    for k in keys[::3]:
        db.put(k, b"new")
    assert db.stats()["snapshots"] == 1 and db.stats()["pages_pending"] > 0
    del snap
    gc.collect()
    stats = db.stats()
    assert stats["snapshots"] == 0 and stats["pages_pending"] == 0  # every page it pinned is reusable
    size = os.path.getsize(_data(tmp_path))
    for k in keys[::3]:  # ... and reused: the file does not grow
        db.put(k, b"newer")
    assert os.path.getsize(_data(tmp_path)) == size
    db.close()


def test_a_dropped_snapshot_inside_a_cycle_is_freed_and_released_ones_stay_released(tmp_path):
    db = _open(tmp_path, sync=False)
    db.put(b"a", b"1")
    kept = db.snapshot()
    holder = {"snap": db.snapshot()}
    holder["self"] = holder  # only the cycle collector can free it
    del holder
    with db.snapshot() as released:
        pass
    gc.collect()
    assert db.stats()["snapshots"] == 1 and released.released and not kept.released
    kept.release()
    kept.release()  # idempotent
    assert db.stats()["snapshots"] == 0
    abandoned = db.scan()  # a scan pins its own snapshot; abandoning the iterator lets it go
    next(abandoned)
    assert db.stats()["snapshots"] == 1
    del abandoned
    gc.collect()
    assert db.stats()["snapshots"] == 0
    db.close()


def test_a_file_of_the_previous_format_is_refused_by_name(tmp_path):
    import zlib

    _committed(tmp_path, sync=True)
    path = _data(tmp_path)
    with open(path, "r+b") as f:
        for slot in (0, 1):  # the same metas, re-checksummed, claiming format 1
            f.seek(slot * PAGE)
            raw = bytearray(f.read(PAGE))
            raw[4] = 1
            length = HEADER.unpack_from(raw)[6]
            raw[:4] = struct.pack("<I", zlib.crc32(bytes(raw[4:HEADER.size + length])))
            f.seek(slot * PAGE)
            f.write(raw)
    with pytest.raises(NotADatabaseError, match="another format"):
        _open(tmp_path)


# --- forged pages: a valid checksum over hostile contents ------------------------------------

# Runs in a child process under a 2 GiB address-space limit: prints one JSON line per case,
# ``[case, exception class name or null, is a DdiaRayError]``. The page to forge is chosen from
# the leftmost root-to-leaf path, which the last commit (touching only the rightmost one) did
# not write, so the forgery is met by the reads, not by the open.
_FORGE = textwrap.dedent(r'''
    import json, resource, struct, sys, zlib
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    import msgpack
    from ddia_ray.errors import DdiaRayError
    from ddia_ray.storage import WriteBatch
    from ddia_ray.storage.btree import BTreeEngine

    PAGE, HEADER = 1024, struct.Struct("<IBBHQQI")
    root_dir, case = sys.argv[1], sys.argv[2]
    url = f"file://{root_dir}/db"
    db = BTreeEngine.open(url, page_size=PAGE, sync=False)
    batch = WriteBatch()
    for i in range(3000):
        batch.put(b"key%05d" % i, b"value-%d" % i)
    db.write(batch)
    db.put(b"key99999", b"last")  # the last commit: the rightmost path only
    store, root = db._gen.store, db._gen.pf.meta.root
    path = [root]
    while not store.load(path[-1]).leaf:
        path.append(store.load(path[-1]).vals[0])
    leaf, branch, other_leaf = path[-1], path[1], store.load(path[-2]).vals[1]
    first_key = store.load(leaf).keys[0]
    data_path = db._gen.pf.path
    db.close()

    def forge(page, kind, payload):
        with open(data_path, "r+b") as f:
            f.seek(page * PAGE)
            raw = bytearray(f.read(PAGE))
            _, fmt, _, _, pno, txn, _ = HEADER.unpack_from(raw)
            body = HEADER.pack(0, fmt, kind, 0, pno, txn, len(payload))[4:] + payload
            raw[:] = struct.pack("<I", zlib.crc32(body)) + body + bytes(PAGE - HEADER.size - len(payload))
            f.seek(page * PAGE)
            f.write(raw)

    LEAF, BRANCH, OVERFLOW = 2, 3, 4
    if case == "int_keys":
        forge(leaf, LEAF, msgpack.packb([[1, 2], [b"a", b"b"]]))
    elif case == "map_values":
        forge(leaf, LEAF, msgpack.packb([[first_key], [{"a": 1}]]))
    elif case == "not_a_pair":
        forge(leaf, LEAF, msgpack.packb({"keys": []}))
    elif case == "unsorted_keys":
        forge(leaf, LEAF, msgpack.packb([[b"z", first_key], [b"1", b"2"]], use_bin_type=True))
    elif case == "branch_cycle":
        node = store.load(branch)
        forge(branch, BRANCH, msgpack.packb([node.keys, [branch] * len(node.vals)], use_bin_type=True))
    elif case == "looping_overflow":
        forge(other_leaf, OVERFLOW, struct.pack("<Q", other_leaf) + b"x" * 100)
        forge(leaf, LEAF, msgpack.packb([[first_key], [[other_leaf, 1 << 40]]], use_bin_type=True))
    elif case == "garbage":
        forge(leaf, LEAF, b"\xc1\xff\x00")
    elif case == "deep_nesting":
        forge(leaf, LEAF, b"\x91" * 900)
    elif case == "tiny_file_with_magic":
        with open(data_path, "wb") as f:
            f.write(bytes(28) + b"DDIABTRE" + b"\x00\x04")
    try:
        db = BTreeEngine.open(url, page_size=PAGE, sync=False)
        db.get(first_key)
        list(db.scan())
        list(db.scan(reverse=True))
        db.put(first_key, b"overwrite")
        print(json.dumps([case, None, False]))
    except BaseException as exc:
        print(json.dumps([case, f"{type(exc).__module__}.{type(exc).__qualname__}", isinstance(exc, DdiaRayError)]))
''')

FORGERIES = ["int_keys", "map_values", "not_a_pair", "unsorted_keys", "branch_cycle", "looping_overflow",
             "garbage", "deep_nesting", "tiny_file_with_magic"]


def _run_child(script: str, *args, timeout_s: float = 60.0) -> list:
    try:
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args}: no answer within {timeout_s} s (an endless loop on crafted pages?)")
    assert done.returncode == 0, f"{args}: the child died ({done.returncode}): {done.stderr[-2000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_page_raises_a_ddia_ray_error(tmp_path, case):
    [(name, error, ours)] = _run_child(_FORGE, str(tmp_path), case, timeout_s=30.0)
    assert error is not None and ours, f"{name}: {error or 'no error'} instead of a ddia_ray error"


# Seeded mutator over a whole page file: bit flips, zeroed and truncated ranges, pages copied over
# other pages, and forged payloads (random msgpack-ish bytes, huge length prefixes) under a valid
# checksum. Every open/get/scan/put must return or raise a DdiaRayError; prints the foreign ones.
_FUZZ = textwrap.dedent(r'''
    import logging, os, random, resource, shutil, struct, sys, zlib
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    logging.disable(logging.WARNING)  # fallbacks are expected here; their warnings are tested above
    from ddia_ray.errors import DdiaRayError
    from ddia_ray.storage import WriteBatch
    from ddia_ray.storage.btree import BTreeEngine

    PAGE, HEADER = 512, struct.Struct("<IBBHQQI")
    root_dir, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    db = BTreeEngine.open(f"file://{root_dir}/pristine", page_size=PAGE, sync=False, inline_value_max=20)
    for n in range(6):
        batch = WriteBatch()
        for i in rng.sample(range(400), 80):
            batch.put(b"k%04d" % i, rng.randbytes(rng.choice([4, 16, 300])))
        db.write(batch)
    db.close()
    pristine = open(f"{root_dir}/pristine/data.btree", "rb").read()
    pieces = [b"\x91" * 50, b"\xdb\xff\xff\xff\xff", b"\xc6\x7f\xff\xff\xff", b"\x92\x90\x90",
              b"\x92\x91\xc4\x01a\x91\x92\x02\xce\xff\xff\xff\xff"]  # deep, huge lengths, odd shapes
    ROOM = PAGE - HEADER.size

    def forge(raw, page):
        """Splice a hostile piece into the page's payload, maybe change its kind; keep the checksum valid."""
        at = page * PAGE
        _, fmt, kind, _, pno, txn, length = HEADER.unpack_from(raw, at)
        payload = bytes(raw[at + HEADER.size:at + HEADER.size + min(length, ROOM)])
        cut = rng.randrange(len(payload) + 1)
        payload = (payload[:cut] + rng.choice(pieces) + payload[cut + rng.randint(0, 8):])[:ROOM]
        body = HEADER.pack(0, fmt, rng.choice([kind, kind, 2, 3, 4]), 0, pno, txn, len(payload))[4:] + payload
        raw[at:at + PAGE] = struct.pack("<I", zlib.crc32(body)) + body + bytes(ROOM - len(payload))

    def mutate(raw):
        raw = bytearray(raw)
        for _ in range(rng.choice([1, 1, 2])):
            op, n_pages = rng.choice([0, 0, 1, 2, 3, 4, 4, 4, 4, 4]), len(raw) // PAGE
            at = rng.randrange(len(raw))
            if op == 0:  # a bit flip
                raw[at] ^= 1 << rng.randrange(8)
            elif op == 1:  # a zeroed range
                end = min(len(raw), at + rng.randint(1, 600))
                raw[at:end] = bytes(end - at)
            elif op == 2:  # a truncation
                del raw[at:]
            elif op == 3 and n_pages > 2:  # a page copied over another
                a, b = rng.randrange(n_pages), rng.randrange(n_pages)
                raw[a * PAGE:(a + 1) * PAGE] = raw[b * PAGE:(b + 1) * PAGE]
            elif n_pages > 2:
                forge(raw, rng.randrange(2, n_pages))
        return bytes(raw)

    for r in range(rounds):
        shutil.rmtree(f"{root_dir}/victim", ignore_errors=True)
        os.makedirs(f"{root_dir}/victim")
        with open(f"{root_dir}/victim/data.btree", "wb") as f:
            f.write(mutate(pristine))
        try:
            db = BTreeEngine.open(f"file://{root_dir}/victim", page_size=PAGE, sync=rng.random() < 0.5,
                                  inline_value_max=20)
            try:
                for i in range(0, 400, 7):
                    db.get(b"k%04d" % i)
                list(db.scan())
                list(db.scan(b"k0100", b"k0300", reverse=True))
                db.write(WriteBatch().put(b"k0001", b"x" * 100).delete(b"k0002").delete_range(b"k0100", b"k0150"))
                db.check()
            finally:
                db.close()
        except DdiaRayError:
            pass
        except BaseException as exc:
            print(f"FOREIGN round {r}: {type(exc).__name__}: {exc}"[:300])
    print("DONE")
''')


@pytest.mark.parametrize("seed", [2, 3])
def test_a_mutated_page_file_gives_data_or_a_ddia_ray_error(tmp_path, seed):
    try:
        done = subprocess.run([sys.executable, "-c", _FUZZ, str(tmp_path), str(seed), "200"],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"seed {seed}: the fuzzer did not finish within 120 s (an endless loop?)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1:] == ["DONE"] and "FOREIGN" not in done.stdout, done.stdout[-3000:]
