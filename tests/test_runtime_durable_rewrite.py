"""Derived rewrites of the durable log, written in the background (ddia_ray/runtime/durable.py).

A derived ``Rewrite`` promises that its records say what the log already says. On a local disk
a thread writes them to a file of its own while appends go on into the old log and into memory;
the thread then adds those appends and renames its file over the log. What must hold, whatever
the moment a crash comes:

* a reader (a restart) finds the old log with every append, or the new one with every append;
* replaying either gives the same state;
* a failed or abandoned rewrite leaves the old log as it was, and no file behind.

A test holds the thread at a record by patching ``durable._rewrite_frame``, the one function it
encodes with; it never sleeps to wait for the thread.
"""

from __future__ import annotations

import glob
import random
import threading

import pytest

from ddia_ray.runtime import durable
from ddia_ray.runtime.core import Rewrite
from ddia_ray.runtime.durable import DurableLog


def _fold(records) -> dict:
    """The state a log replays to: ``["set", key, value]`` and ``["del", key]`` records, in order."""
    state: dict = {}
    for rec in records:
        if rec[0] == "set":
            state[rec[1]] = rec[2]
        else:
            state.pop(rec[1], None)
    return state


def _summary(state: dict) -> tuple:
    """A derived rewrite of a log whose state is ``state``: one record per key."""
    return tuple(["set", k, v] for k, v in sorted(state.items()))


class _Gate:
    """Holds a background rewrite before it encodes its ``at``-th record, until opened."""

    def __init__(self, monkeypatch, at: int = 0, fail: BaseException | None = None):
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.fail = fail
        real = durable._rewrite_frame
        count = iter(range(1 << 30))

        def held(rec):
            if next(count) == at:
                self.reached.set()
                assert self.opened.wait(30), "the test never opened the gate"
                if self.fail is not None:
                    raise self.fail
            return real(rec)

        monkeypatch.setattr(durable, "_rewrite_frame", held)

    def open(self) -> None:
        self.opened.set()


def _restart(root: str, node: str = "n") -> list:
    """What a node restarted now would read (a new log object over the same files; msgpack gives
    the records back as tuples)."""
    return [list(rec) for rec in DurableLog(root, node).read_all()]


def _held_rewrite(tmp_path, monkeypatch, **gate) -> tuple:
    """A log of ``a = 1, a = 2`` whose derived rewrite (``a = 2``) is started and held at its first
    record: ``(root, log, gate)``."""
    root = f"file://{tmp_path}"
    log = DurableLog(root, "n")
    log.append([["set", "a", 1], ["set", "a", 2]])
    held = _Gate(monkeypatch, **gate)
    log.append([Rewrite((["set", "a", 2],), derived=True)])
    assert held.reached.wait(30)
    return root, log, held


def _leftovers(tmp_path) -> list:
    return glob.glob(str(tmp_path / "n" / "records.log.rewrite*"))


def test_appends_made_during_a_background_rewrite_reach_the_old_log_and_then_the_new_one(tmp_path, monkeypatch):
    root = f"file://{tmp_path}"
    log = DurableLog(root, "n")
    history = [["set", f"k{i % 5}", i] for i in range(40)]
    log.append(history)
    gate = _Gate(monkeypatch, at=2)
    log.append([Rewrite(_summary(_fold(history)), derived=True)])
    assert gate.reached.wait(30)
    later = [["set", "k1", 100], ["del", "k2"], ["set", "new", 7]]
    log.append(later[:2])
    log.append(later[2:])
    # A crash now: the old log holds every record of it, and the appends after it.
    assert _peek(tmp_path) == history + later
    gate.open()
    log.wait_rewrite()
    # Swapped in: the summary, then the appends made meanwhile, in order.
    assert _restart(root) == list(_summary(_fold(history))) + later
    assert _fold(_restart(root)) == _fold(history + later)
    assert log.counters["rewrites_in_background"] == 1 and log.counters["rewrite_failures"] == 0
    assert _leftovers(tmp_path) == []
    log.append([["set", "after", 1]])  # into the new file, not the old file's unlinked inode
    assert _restart(root)[-1] == ["set", "after", 1]
    log.close()


def test_an_append_after_the_thread_swapped_goes_to_the_new_file_without_waiting(tmp_path, monkeypatch):
    root, log, gate = _held_rewrite(tmp_path, monkeypatch)
    gate.open()
    log._job.thread.join(30)  # the thread has swapped; nobody called wait_rewrite
    assert log._job.finished
    log.append([["set", "b", 3]])
    assert _restart(root) == [["set", "a", 2], ["set", "b", 3]]
    log.close()


def test_a_rewrite_that_fails_leaves_the_old_log_whole_and_is_counted(tmp_path, monkeypatch):
    root, log, gate = _held_rewrite(tmp_path, monkeypatch, fail=OSError(28, "No space left on device"))
    log.append([["set", "b", 1]])
    gate.open()
    log.wait_rewrite()
    assert _restart(root) == [["set", "a", 1], ["set", "a", 2], ["set", "b", 1]]
    assert log.counters["rewrite_failures"] == 1
    assert "No space left on device" in log.counters["last_rewrite_error"]
    assert _leftovers(tmp_path) == []
    # The next compaction tries again, and succeeds.
    monkeypatch.undo()
    log.append([Rewrite((["set", "a", 2], ["set", "b", 1]), derived=True)])
    log.wait_rewrite()
    assert _restart(root) == [["set", "a", 2], ["set", "b", 1]]
    log.close()


def test_a_halted_node_s_rewrite_gives_up_before_its_rename(tmp_path, monkeypatch):
    root, log, gate = _held_rewrite(tmp_path, monkeypatch)
    log.abandon_rewrite()  # the shell's halt: a new process is about to read and append to this log
    gate.open()
    log.wait_rewrite()
    # The thread wrote its file but did not rename it over the log, and removed it.
    assert _peek(tmp_path) == [["set", "a", 1], ["set", "a", 2]]
    assert _leftovers(tmp_path) == []
    assert log.counters["rewrite_failures"] == 0  # abandoned on purpose, not failed
    successor = DurableLog(root, "n")
    successor.append([["set", "a", 3]])
    assert _restart(root) == [["set", "a", 1], ["set", "a", 2], ["set", "a", 3]]
    successor.close()


def test_a_rewrite_file_left_by_a_crash_is_removed_on_recovery(tmp_path):
    root = f"file://{tmp_path}"
    log = DurableLog(root, "n")
    log.append([["set", "a", 1]])
    log.close()
    junk = tmp_path / "n" / "records.log.rewrite-123-1"
    junk.write_bytes(durable.MAGIC + b"half a rewrite")
    assert _restart(root) == [["set", "a", 1]]
    assert _leftovers(tmp_path) == []


def test_appends_wait_once_the_rewrite_holds_too_many_of_them_in_memory(tmp_path, monkeypatch):
    root = f"file://{tmp_path}"
    monkeypatch.setattr(durable, "MAX_REWRITE_TAIL_BYTES", 100)
    log = DurableLog(root, "n")
    log.append([["set", "a", 1]])
    gate = _Gate(monkeypatch)
    log.append([Rewrite((["set", "a", 1],), derived=True)])
    assert gate.reached.wait(30)
    done = threading.Event()

    def big_append():
        log.append([["set", "b", b"x" * 200]])
        done.set()

    appender = threading.Thread(target=big_append)
    appender.start()
    assert not done.wait(0.3)  # held: the tail passed its bound while the rewrite is stuck
    gate.open()
    assert done.wait(30)
    appender.join()
    assert _restart(root) == [["set", "a", 1], ["set", "b", b"x" * 200]]
    log.close()


def test_a_second_rewrite_waits_for_the_first_and_wins(tmp_path, monkeypatch):
    root = f"file://{tmp_path}"
    log = DurableLog(root, "n")
    log.append([["set", "a", 1], ["set", "b", 2]])
    log.append([Rewrite((["set", "a", 1], ["set", "b", 2]), derived=True)])
    log.append([["del", "a"]])
    log.append([Rewrite((["set", "b", 2],), derived=True), ["set", "c", 3]])
    log.wait_rewrite()
    assert _restart(root) == [["set", "b", 2], ["set", "c", 3]]
    assert log.counters["rewrites"] == 2
    log.close()


def test_on_memory_a_derived_rewrite_is_written_at_once():
    root = "memory://dlog-derived"
    log = DurableLog(root, "n")
    log.append([["set", "a", 1], ["set", "a", 2], Rewrite((["set", "a", 2],), derived=True), ["set", "b", 1]])
    assert log.counters["rewrites_in_background"] == 0
    assert _restart(root) == [["set", "a", 2], ["set", "b", 1]]
    log.destroy()


@pytest.mark.parametrize("seed", range(12))
def test_any_crash_point_replays_to_the_state_of_every_append(tmp_path, seed):
    """Random appends and derived rewrites with the thread running free; a restart at random
    moments (with the thread possibly mid-way) must replay to the state of everything appended,
    and at the end the log is the last summary plus what followed it."""
    rng = random.Random(seed)
    root = f"file://{tmp_path}"
    log = DurableLog(root, "n")
    appended: list = []
    for _ in range(60):
        roll = rng.random()
        if roll < 0.15:
            log.append([Rewrite(_summary(_fold(appended)), derived=True)])
        elif roll < 0.25:
            assert _fold(_peek(tmp_path)) == _fold(appended), \
                f"replay with: pytest tests/test_runtime_durable_rewrite.py -k 'crash_point and {seed}'"
        else:
            batch = [["set", f"k{rng.randrange(8)}", rng.randrange(1000)] if rng.random() < 0.8
                     else ["del", f"k{rng.randrange(8)}"] for _ in range(rng.randrange(1, 4))]
            log.append(batch)
            appended += batch
    log.wait_rewrite()
    assert _fold(_restart(root)) == _fold(appended)
    log.close()


def _peek(tmp_path) -> list:
    """The records of ``records.log`` as it stands, read without recovering anything (a live
    rewrite's file must not be removed from under it, as a real restart would)."""
    path = tmp_path / "n" / "records.log"
    if not path.exists():
        return []
    data = path.read_bytes()
    return [list(rec) for rec in durable.decode_frames(data[len(durable.MAGIC):])]


def test_a_version_1_rewrite_decodes_as_one_that_is_not_derived():
    """Rewrite gained ``derived`` in version 2; a version-1 record (as an older node encoded it)
    reads as a rewrite without the promise, written inside the append as before."""
    import msgpack

    from ddia_ray import codec

    old = msgpack.packb(msgpack.ExtType(codec.FORMAT_1, msgpack.packb(
        {"t": "runtime.rewrite", "v": 1, "f": {"records": [["set", "a", 1]]}}, use_bin_type=True)), use_bin_type=True)
    rewrite = codec.decode(old)
    assert isinstance(rewrite, Rewrite) and rewrite.derived is False
    assert [list(r) for r in rewrite.records] == [["set", "a", 1]]
    assert codec.decode(codec.encode(Rewrite((), derived=True))).derived is True
