"""Futures that share one condition (ddia_ray/runtime/futures.py) behave as concurrent.futures.Future."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from ddia_ray.errors import InvalidArgumentError
from ddia_ray.runtime.futures import FamilyFuture, FutureFamily, settle


def test_a_family_future_is_a_standard_future_to_its_caller():
    family = FutureFamily()
    f = family.new()
    assert isinstance(f, concurrent.futures.Future) and not f.done()
    with pytest.raises(concurrent.futures.TimeoutError):
        f.result(timeout=0.01)
    with pytest.raises(concurrent.futures.TimeoutError):
        f.exception(timeout=0)
    seen = []
    f.add_done_callback(lambda x: seen.append(x.result()))
    f.set_result(7)
    assert f.result() == 7 and f.result(0) == 7 and f.exception() is None and seen == [7]
    late = []
    f.add_done_callback(lambda x: late.append(x))  # after completion: called at once
    assert late == [f]
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_result(8)

    g = family.new()
    g.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        g.result()
    assert isinstance(g.exception(), KeyError)

    h = family.new()
    assert h.cancel() and h.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        h.result(0)
    assert "FamilyFuture" in repr(h)


def test_finishing_one_future_does_not_end_anothers_wait_early():
    # Every waiter of a family wakes when any of its futures finishes; each must wait on for its own.
    family = FutureFamily()
    slow, fast = family.new(), family.new()
    outcome: dict = {}

    def wait_slow():
        started = time.monotonic()
        try:
            outcome["slow"] = slow.result(timeout=5)
        except concurrent.futures.TimeoutError:
            outcome["slow"] = "timed out"
        outcome["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_slow)
    waiter.start()
    deadline = time.monotonic() + 10
    while not family._condition._waiters and time.monotonic() < deadline:  # until it waits on the condition
        time.sleep(0.001)
    fast.set_result("fast")  # wakes the waiter of `slow` too
    assert fast.result() == "fast"
    assert waiter.is_alive()
    slow.set_result("slow")
    waiter.join(10)
    assert outcome["slow"] == "slow"


def test_a_timeout_is_kept_across_wakeups_for_other_futures():
    family = FutureFamily()
    mine, others = family.new(), [family.new() for _ in range(20)]
    stop = threading.Event()

    def finish_others():
        for f in others:
            if stop.is_set():
                return
            f.set_result(None)
            time.sleep(0.005)

    t = threading.Thread(target=finish_others)
    t.start()
    started = time.monotonic()
    with pytest.raises(concurrent.futures.TimeoutError):
        mine.result(timeout=0.06)
    assert 0.05 <= time.monotonic() - started < 2.0
    stop.set()
    t.join(5)


def test_wait_as_completed_and_asyncio_take_family_futures():
    family = FutureFamily()
    fs = [family.new() for _ in range(5)]
    plain = concurrent.futures.Future()

    def finish():
        time.sleep(0.02)
        for i, f in enumerate(fs):
            f.set_result(i)
        plain.set_result("plain")

    threading.Thread(target=finish).start()
    done, not_done = concurrent.futures.wait(fs + [plain], timeout=5)
    assert not not_done and {f.result() for f in fs} == set(range(5))
    assert sorted(f.result() for f in concurrent.futures.as_completed(fs, timeout=5)) == list(range(5))

    async def through_asyncio():
        f = family.new()
        asyncio.get_running_loop().call_later(0.01, f.set_result, "via asyncio")
        return await asyncio.wrap_future(f)

    assert asyncio.run(through_asyncio()) == "via asyncio"


def test_many_threads_each_get_their_own_result():
    family = FutureFamily()
    fs = [family.new() for _ in range(200)]
    got = [None] * len(fs)

    def wait(i):
        got[i] = fs[i].result(timeout=10)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(fs))]
    for t in threads:
        t.start()
    for i in reversed(range(len(fs))):
        fs[i].set_result(i)
    for t in threads:
        t.join(10)
    assert got == list(range(len(fs)))
    assert all(type(f) is FamilyFuture for f in fs)


def test_finish_sets_many_at_once_and_leaves_done_ones_alone():
    family = FutureFamily()
    a, b, c = family.new(), family.new(), family.new()
    assert c.cancel()
    calls = []
    a.add_done_callback(lambda f: calls.append(("a", f.result())))
    b.add_done_callback(lambda f: calls.append(("b", type(f.exception()).__name__)))
    waiter = threading.Thread(target=lambda: calls.append(("waited", b.exception(timeout=5) is not None)))
    waiter.start()
    family.finish([(a, 1, None), (b, None, ValueError("no")), (c, 3, None)])
    waiter.join(5)
    assert a.result() == 1 and isinstance(b.exception(), ValueError) and c.cancelled()
    assert ("a", 1) in calls and ("b", "ValueError") in calls and ("waited", True) in calls
    done, _ = concurrent.futures.wait([a, b], timeout=0)
    assert done == {a, b}
    with pytest.raises(InvalidArgumentError):
        family.finish([(FutureFamily().new(), 1, None)])  # another family's future


def test_settle_finishes_a_pending_future_once_and_takes_no_for_an_answer_after():
    family = FutureFamily()
    for fut in (family.new(), concurrent.futures.Future()):
        assert settle(fut, exc=TimeoutError("late")) is True
        assert settle(fut, exc=ValueError("closed")) is False  # a close after the timeout: no InvalidStateError
        assert settle(fut, 7) is False
        assert isinstance(fut.exception(0), TimeoutError)
    cancelled = family.new()
    cancelled.cancel()
    assert settle(cancelled, 1) is False and cancelled.cancelled()


def test_two_threads_settling_the_same_futures_finish_each_exactly_once():
    # A client's loop thread (a reply, a timeout) and its caller's thread (close) finish the same
    # futures; with a check of done() before the set, the second one could raise InvalidStateError.
    family = FutureFamily()
    futures = [family.new() for _ in range(20_000)]
    won = [0, 0]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        start.wait()
        for fut in futures if k == 0 else reversed(futures):
            won[k] += settle(fut, k) if k == 0 else settle(fut, exc=RuntimeError("closed"))

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won[0] + won[1] == len(futures)
    assert all(f.done() for f in futures)
