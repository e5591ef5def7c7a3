"""Single flight: one load per key in flight, shared results and errors, forgotten on completion."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ddia_ray.caching import AsyncSingleFlight, SingleFlight
from ddia_ray.errors import InvalidArgumentError
from raywait import wait_for

N_THREADS = 8


class CountingLoader:
    """Counts loads per key and the most loads of one key ever running at once; blocks until released."""

    def __init__(self, result=None, error: BaseException | None = None):
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: dict = {}
        self.running: dict = {}
        self.max_running = 0
        self.result, self.error = result, error

    def load_many(self, keys):
        with self.lock:
            for k in keys:
                self.calls[k] = self.calls.get(k, 0) + 1
                self.running[k] = self.running.get(k, 0) + 1
                self.max_running = max(self.max_running, self.running[k])
        self.started.set()
        try:
            assert self.release.wait(10), "the test never released the loader"
            if self.error is not None:
                raise self.error
            return [(self.result, k) for k in keys]
        finally:
            with self.lock:
                for k in keys:
                    self.running[k] -= 1


def _run_concurrently(fn, n=N_THREADS):
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        return fn(i)

    pool = ThreadPoolExecutor(n)
    return pool, [pool.submit(one, i) for i in range(n)]


def test_concurrent_callers_share_one_load_and_its_result():
    sf, loader = SingleFlight(), CountingLoader(result="v")
    pool, futures = _run_concurrently(lambda i: sf.do("k", lambda: loader.load_many(("k",))[0]))
    # every caller but the leader must have joined before the load may finish
    wait_for(lambda: sf.waiters("k") == N_THREADS - 1, 10, what="all callers joined the load")
    loader.release.set()
    results = [f.result(10) for f in futures]
    pool.shutdown()
    assert results == [("v", "k")] * N_THREADS
    assert loader.calls == {"k": 1} and loader.max_running == 1
    assert sf.loads == 1 and sf.shared == N_THREADS - 1
    assert not sf.in_flight("k")


def test_the_leaders_exception_reaches_every_waiter_and_the_key_is_forgotten():
    sf, loader = SingleFlight(), CountingLoader(error=KeyError("boom"))
    pool, futures = _run_concurrently(lambda i: sf.do("k", lambda: loader.load_many(("k",))[0]))
    wait_for(lambda: sf.waiters("k") == N_THREADS - 1, 10, what="all callers joined the load")
    loader.release.set()
    for f in futures:
        with pytest.raises(KeyError, match="boom"):
            f.result(10)
    pool.shutdown()
    assert loader.calls == {"k": 1} and not sf.in_flight("k")
    # forgotten: the next call loads again (and may succeed)
    assert sf.do("k", lambda: 42) == 42 and sf.loads == 2


def test_do_many_loads_only_the_keys_nobody_is_loading_in_one_call():
    sf = SingleFlight()
    first = CountingLoader(result=1)
    calls = []
    t = threading.Thread(target=lambda: calls.append(sf.do_many(["a", "b"], first.load_many)))
    t.start()
    assert first.started.wait(10)
    second_keys = []

    def second_loader(keys):
        second_keys.append(keys)
        return [2 for _ in keys]

    box = []
    t2 = threading.Thread(target=lambda: box.append(sf.do_many(["b", "c", "c"], second_loader)))
    t2.start()
    wait_for(lambda: sf.waiters("b") == 1 and second_keys, 10, what="second caller joined b, loaded c")
    assert t2.is_alive() and not box  # still waiting on b, whose load is not released
    assert second_keys == [("c",)]  # c loaded at once, b joined, duplicate c ignored
    first.release.set()
    t.join(10)
    t2.join(10)
    assert calls == [{"a": (1, "a"), "b": (1, "b")}]
    assert box == [{"b": (1, "b"), "c": 2}]


def test_distinct_keys_load_in_parallel():
    sf, loader = SingleFlight(), CountingLoader(result=0)
    pool, futures = _run_concurrently(lambda i: sf.do(i, lambda: loader.load_many((i,))[0]), n=4)
    wait_for(lambda: all(sf.in_flight(i) for i in range(4)), 10, what="four loads in flight")
    loader.release.set()
    assert sorted(f.result(10)[1] for f in futures) == [0, 1, 2, 3]
    pool.shutdown()


def test_resolving_a_key_twice_is_refused():
    sf = SingleFlight()
    owned, joined = sf.claim(["x"])
    assert owned == ["x"] and joined == {}
    sf.resolve({"x": 1})
    with pytest.raises(InvalidArgumentError):
        sf.resolve({"x": 1})


def test_asyncio_single_flight_shares_one_load():
    async def main():
        sf = AsyncSingleFlight()
        gate = asyncio.Event()
        calls = []

        async def load():
            calls.append(1)
            await gate.wait()
            return "value"

        tasks = [asyncio.create_task(sf.do("k", load)) for _ in range(10)]
        while not sf.in_flight("k") or sf.shared < 9:
            await asyncio.sleep(0)  # yield to the event loop until every task joined
        gate.set()
        results = await asyncio.gather(*tasks)
        return sf, calls, results

    sf, calls, results = asyncio.run(main())
    assert calls == [1] and results == ["value"] * 10
    assert sf.loads == 1 and not sf.in_flight("k")


def test_asyncio_single_flight_propagates_the_error_and_forgets():
    async def main():
        sf = AsyncSingleFlight()
        gate = asyncio.Event()

        async def load():
            await gate.wait()
            raise ValueError("nope")

        tasks = [asyncio.create_task(sf.do("k", load)) for _ in range(5)]
        while sf.shared < 4:
            await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

        async def ok():
            return 7

        return outcomes, await sf.do("k", ok), sf

    outcomes, again, sf = asyncio.run(main())
    assert all(isinstance(o, ValueError) for o in outcomes) and len(outcomes) == 5
    assert again == 7 and sf.loads == 2
