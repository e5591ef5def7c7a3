"""The WAL prefaulter: it faults pages in without changing them, stops before its mapping
closes, and a platform without the call leaves the WAL working as before."""

from __future__ import annotations

import mmap
import os
import random
import sys

import fsspec
import pytest

from ddia_ray.storage.lsm import prefault
from ddia_ray.storage.lsm.prefault import STEP_BYTES, Prefaulter
from ddia_ray.storage.lsm.wal import WalWriter, read_wal, wal_name

def _read_back(fs, directory, number):
    return [tuple(op) for _seq, batch, _skipped in read_wal(fs, directory, number, [wal_name(number)], skip=False)
            for op in batch]


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_WRITE is Linux's")


def _mapping(tmp_path, size):
    fd = os.open(tmp_path / "m", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


def _resident_pages(mapping: mmap.mmap, start: int, end: int) -> int:
    """Pages of ``mapping[start:end]`` in this process's page tables, read from /proc/self/pagemap."""
    import ctypes

    view = ctypes.c_char.from_buffer(mapping)
    base = ctypes.addressof(view)
    del view
    page = mmap.PAGESIZE
    present = 0
    with open("/proc/self/pagemap", "rb") as f:
        for addr in range(base + start, base + end, page):
            f.seek(addr // page * 8)
            present += int.from_bytes(f.read(8), "little") >> 63
    return present


@linux_only
def test_populating_faults_pages_in_and_keeps_their_bytes(tmp_path):
    if not prefault.prefault_supported():
        pytest.skip("this kernel has no MADV_POPULATE_WRITE")
    size = 4 * STEP_BYTES + 12345
    fd, m = _mapping(tmp_path, size)
    try:
        data = random.Random(7).randbytes(size)
        m[:] = data
        m.close()
        m = mmap.mmap(fd, size)  # a fresh mapping: nothing faulted in yet
        assert _resident_pages(m, 0, size) < size // mmap.PAGESIZE
        p = Prefaulter(m, 0, size)
        assert p._thread is not None
        p._thread.join()
        assert p.populated == size
        assert _resident_pages(m, 0, size) == -(-size // mmap.PAGESIZE)
        assert m[:] == data  # populating never changes a byte
        p.stop()
    finally:
        m.close()
        os.close(fd)


def test_stop_leaves_the_mapping_closable_and_no_call_running(tmp_path):
    size = 64 * STEP_BYTES
    fd, m = _mapping(tmp_path, size)
    p = Prefaulter(m, 0, size)
    p.stop()
    done = p.populated
    m.close()  # no buffer export is left behind: closing must not raise BufferError
    os.close(fd)
    assert p._thread is None or not p._thread.is_alive()
    assert p.populated == done  # nothing ran after stop() returned


def test_a_failing_call_switches_prefaulting_off_and_the_wal_still_works(tmp_path, monkeypatch):
    calls = []

    def refuse(addr, length, advice):
        calls.append((length, advice))
        return -1

    monkeypatch.setattr(prefault, "_madvise", refuse)
    monkeypatch.setattr(prefault, "_enabled", True)
    fs = fsspec.filesystem("file")
    w = WalWriter(fs, str(tmp_path), 1, sync="none")
    if w._prefaulter is not None and w._prefaulter._thread is not None:
        w._prefaulter._thread.join()
    assert calls and not prefault.prefault_supported()
    ops = [(0, b"k%06d" % i, b"v" * (i % 300)) for i in range(20_000)]  # grows the mapping several times
    for i, op in enumerate(ops):
        w.append_one_mapped(i + 1, *op)
    w.close(sync=False)
    assert _read_back(fs, str(tmp_path), 1) == ops


def test_a_growing_mapped_wal_reads_back_exactly_with_prefaulting(tmp_path):
    fs = fsspec.filesystem("file")
    w = WalWriter(fs, str(tmp_path), 2, sync="none")
    rng = random.Random(3)
    ops = [(0, rng.randbytes(16), rng.randbytes(rng.randint(50, 3000))) for _ in range(30_000)]
    for i, op in enumerate(ops):
        w.append_one_mapped(i + 1, *op)
    w.close(sync=False)
    assert os.path.getsize(tmp_path / "000002.log") == w.bytes_written
    assert _read_back(fs, str(tmp_path), 2) == ops
