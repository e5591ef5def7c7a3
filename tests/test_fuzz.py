"""Fuzzing in the suite: every byte format that crosses a trust boundary, in a bounded child process.

Each campaign runs a fixed number of deterministic inputs (``DDIA_FUZZ_ITERATIONS`` scales them,
``DDIA_FUZZ_SECONDS`` turns them into a time budget per target for long local runs, ``DDIA_FUZZ_SEED``
picks another campaign). A failure message lists every failing input with its one-line replay
command. The ``selftest`` tests prove the harness can fail: a leaked TypeError, a silently short
log, a segfault, a slow input, a hang and a memory blow-up are each reported. See docs/fuzzing.md.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

import ddia_ray
from tests.fuzz.mutate import OPERATORS, apply_one, mutate
from tests.fuzz.oracle import LogShape, log_verdict
from tests.fuzz.runner import campaign
from tests.fuzz.targets import TARGET_NAMES

LIB = os.path.dirname(os.path.dirname(os.path.abspath(ddia_ray.__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get("DDIA_FUZZ_SEED", "1"))
SECONDS = float(os.environ["DDIA_FUZZ_SECONDS"]) if os.environ.get("DDIA_FUZZ_SECONDS") else None
SCALE = float(os.environ.get("DDIA_FUZZ_ITERATIONS", "1"))
#: Inputs per target in CI, sized for ~60 s in total on two loaded cores (each input is measured;
#: the slowest is printed with ``-s``).
CI_INPUTS = {"codec": 4000, "ingest": 20000, "scan_page": 20000, "versions": 20000, "durable": 2500, "wal": 500,
             "manifest": 500, "btree": 1500, "event_chunk": 5000, "group_row": 5000, "event_archive": 800,
             "crdt_state": 20000}


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_campaign(target):
    iterations = None if SECONDS else max(1, int(CI_INPUTS[target] * SCALE))
    timeout = (SECONDS or 0) + 180 + (iterations or 0) * 0.1
    result = campaign(target, SEED, iterations=iterations, seconds=SECONDS, timeout_s=timeout, pythonpath=LIB)
    print(result.report())
    assert not result.failures, "\n" + result.report()
    if iterations is not None:
        assert result.inputs == iterations, result.report()  # a campaign that ran nothing proves nothing
    assert sum(n for k, n in result.outcomes.items() if k.startswith("refused")) > 0, result.report()


# --- the harness can fail ---------------------------------------------------------------------------


def _selftest(name: str, iterations: int, **kw):
    return campaign(name, 1, iterations=iterations, timeout_s=kw.pop("timeout_s", 60), pythonpath=LIB, **kw)


def test_a_leaked_foreign_exception_is_reported_with_its_replay_command():
    result = _selftest("selftest-foreign", 30)
    assert result.failures and all(f.kind == "foreign" for f in result.failures)
    first = result.failures[0]
    assert "TypeError: leaked" in first.message
    assert first.replay == f"python -m tests.fuzz replay --target selftest-foreign --seed 1 --iteration {first.iteration}"
    assert first.replay in result.report()
    replay = subprocess.run([sys.executable, "-m", "tests.fuzz", *first.replay.split()[3:]], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join((LIB, REPO))),
                            capture_output=True, text=True, timeout=60)
    assert replay.returncode == 1 and "FAILURE foreign: TypeError: leaked" in replay.stdout, replay.stdout


def test_a_reader_that_silently_drops_a_record_is_reported():
    result = _selftest("selftest-shortlog", 20)
    assert result.failures and {f.kind for f in result.failures} == {"violation"}
    assert any("intact records" in f.message for f in result.failures), result.report()


def test_a_segfaulting_child_is_reported_and_the_campaign_goes_on():
    result = _selftest("selftest-segfault", 12)
    crashes = [f for f in result.failures if f.kind == "crash"]
    assert [f.iteration for f in crashes] == [4, 9], result.report()  # the fifth input of each child
    assert "SIGSEGV" in crashes[0].message and crashes[0].origin
    assert result.inputs == 12 and result.restarts == 2


def test_an_input_over_the_time_bound_is_reported():
    result = _selftest("selftest-slow", 3)
    assert [f.kind for f in result.failures] == ["slow"] * 3
    assert result.slowest[0] >= 0.05


def test_a_hanging_child_is_killed_and_reported():
    result = _selftest("selftest-slow", 100_000, timeout_s=6, max_restarts=0)
    assert result.failures[-1].kind == "timeout", result.report()
    assert result.failures[-1].iteration >= 0


def test_the_memory_bound_turns_a_blow_up_into_a_failure():
    result = _selftest("selftest-memory", 2)
    assert [f.kind for f in result.failures] == ["foreign"] * 2
    assert "MemoryError" in result.failures[0].message


# --- the parts --------------------------------------------------------------------------------------


def test_the_mutator_is_deterministic_and_uses_every_operator():
    data = bytes(range(256)) * 4
    a = [mutate(random.Random(f"x:{i}"), data, (0, 100)) for i in range(300)]
    b = [mutate(random.Random(f"x:{i}"), data, (0, 100)) for i in range(300)]
    assert a == b
    assert {m.op.split("-")[0] for _, ms in a for m in ms} == set(OPERATORS)
    assert sum(out != data for out, _ in a) > 250
    out, m = apply_one(random.Random(3), data, op="truncate")
    assert data.startswith(out) and m.offset == len(out)


def _toy_log():
    frames = [bytes([10 + i]) * (3 + i) for i in range(4)]  # 4 distinct "frames"
    data = b"".join(frames)
    sizes = [0]
    for f in frames:
        sizes.append(sizes[-1] + len(f))
    return LogShape.from_sizes(data, sizes, ["r0", "r1", "r2", "r3"]), frames


def test_the_log_oracle():
    shape, frames = _toy_log()
    data = shape.data
    assert log_verdict(shape, data, ["r0", "r1", "r2", "r3"], None) is None
    assert "unchanged" in log_verdict(shape, data, None, ValueError("x"))
    cut = data[:-2]  # a torn tail: the first three records, and raising is not allowed
    assert log_verdict(shape, cut, ["r0", "r1", "r2"], None) is None
    assert "torn tail" in log_verdict(shape, cut, None, ValueError("x"))
    assert log_verdict(shape, cut, ["r0", "r1"], None) is not None  # dropped an intact frame
    middle = frames[0] + b"\xff" + frames[1][1:] + frames[2] + frames[3]
    assert "must raise" in log_verdict(shape, middle, ["r0"], None)
    assert log_verdict(shape, middle, None, ValueError("x")) is None
    dup = frames[0] + frames[1] + frames[1] + frames[2] + frames[3]  # whole frames: undetectable by design
    assert log_verdict(shape, dup, ["r0", "r1", "r1", "r2", "r3"], None) is None
    last = data[:-1] + b"\x00"  # damage in the last frame, nothing after it
    assert log_verdict(shape, last, ["r0", "r1", "r2"], None) is None
