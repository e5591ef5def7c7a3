"""Kill a writer process with SIGKILL at random moments; the reopened database must be consistent.

In sync mode every acknowledged write survives. Without sync, what survives is a prefix of the
writes (batches are atomic: never a later batch without an earlier one, never half a batch); the
LSM's ``sync="none"`` still hands every write to the OS before acknowledging it (its WAL is a
memory map of the file), so a killed process loses nothing acknowledged there either.
Tiny memtables and row groups make flushes, compactions and manifest switches happen constantly,
so the random kill moments land inside all of them.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from ddia_ray.storage import open_engine

from crash_writer import key, value

WRITER = pathlib.Path(__file__).with_name("crash_writer.py")
KILLS = int(os.environ.get("DDIA_CRASH_KILLS", "6"))

ENGINES = {
    "lsm": {"sync": {"sync": "batch", "memtable_bytes": 16 * 1024},
            "nosync": {"sync": "none", "memtable_bytes": 16 * 1024}},
    "btree": {"sync": {"sync": True}, "nosync": {"sync": False}},
}


def _run_and_kill(engine: str, url: str, mode: str, options: dict, delay_s: float) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WRITER.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(WRITER), engine, url, mode, json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    acked = 0
    deadline = time.monotonic() + delay_s
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.read() or b""
        buf += chunk
        if not chunk:
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read() or b""
    err = proc.stderr.read().decode()
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in buf.decode().splitlines() if ln.startswith("ack ")]
    if lines:
        acked = int(lines[-1].split()[1])
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("mode", ["sync", "nosync"])
def test_sigkill_at_random_moments_loses_nothing_acknowledged(engine, mode, tmp_path):
    rng = random.Random(hash((engine, mode)) & 0xFFFF)
    url = f"file://{tmp_path}/db"
    options = ENGINES[engine][mode]
    highest_seen = 0
    for round_no in range(KILLS):
        acked = _run_and_kill(engine, url, mode, options, rng.uniform(0.3, 1.5))
        db = open_engine(url, engine, **options)
        try:
            present = [db.get(key(i)) for i in range(max(acked, highest_seen) + 50)]
        finally:
            db.close()
        survived = sum(v is not None for v in present)
        # Whatever survived is exactly a prefix of the writes, with the right values.
        assert all(present[i] == value(i) for i in range(survived)), f"round {round_no}: wrong or missing value"
        assert all(v is None for v in present[survived:]), f"round {round_no}: a hole before a later write"
        if mode == "sync" or engine == "lsm":  # a process crash, not a power cut: the OS has the LSM's WAL
            assert survived >= acked, f"round {round_no}: {acked} acknowledged, only {survived} survived"
        highest_seen = max(highest_seen, survived)
        # The next writer starts from 0 again: it overwrites with the same values, so the prefix
        # property still holds across rounds.


@pytest.mark.slow
def test_sigkill_of_an_lsm_without_wal_leaves_a_prefix_of_the_writes(tmp_path):
    """``wal=False`` (a replica's engine: its log of record is the replica's): a crash loses the
    writes not yet flushed, never a middle part, and never half a batch."""
    rng = random.Random(7)
    url = f"file://{tmp_path}/db"
    options = {"wal": False, "memtable_bytes": 16 * 1024}
    lost_some = False
    for round_no in range(KILLS):
        acked = _run_and_kill("lsm", url, "nowal", options, rng.uniform(0.3, 1.5))
        db = open_engine(url, "lsm", **options)
        try:
            present = [db.get(key(i)) for i in range(acked + 50)]
        finally:
            db.close()
        survived = sum(v is not None for v in present)
        assert all(present[i] == value(i) for i in range(survived)), f"round {round_no}: wrong or missing value"
        assert all(v is None for v in present[survived:]), f"round {round_no}: a hole before a later write"
        lost_some |= survived < acked
        assert not list(tmp_path.glob("db/*.log")), "a tree without a WAL wrote one"
    assert lost_some  # the memtable's writes did die with the process: there really was no WAL
