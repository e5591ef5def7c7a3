"""The breaker under real concurrency: many threads, and many asyncio tasks in half-open."""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time

from ddia_ray.errors import CallNotPermittedError
from ddia_ray.resilience import CircuitBreaker, CircuitBreakerConfig, State


class TickingClock:
    """Every reading moves time forward by ``step_s``: transitions happen without any sleep."""

    def __init__(self, step_s: float = 0.001):
        self._lock = threading.Lock()
        self._now = 0.0
        self._step = step_s

    def __call__(self) -> float:
        with self._lock:
            self._now += self._step
            return self._now


class Ignored(Exception):
    pass


def test_threads_hammering_keep_counts_exact_and_half_open_bounded():
    n_probes = 3
    cfg = CircuitBreakerConfig(window_size=20, minimum_calls=10, failure_rate_threshold=40.0,
                               permitted_calls_in_half_open=n_probes, wait_in_open_s=0.05,
                               ignore_exceptions=(Ignored,))
    b = CircuitBreaker("hammer", cfg, clock=TickingClock())
    transitions = []
    b.add_listener(transitions.append)
    lock = threading.Lock()
    inflight = collections.Counter()      # half-open generation -> calls running now
    admitted = collections.Counter()      # half-open generation -> probes admitted, minus released
    totals = collections.Counter()
    problems = []

    def worker(seed: int):
        rng = random.Random(seed)
        mine = collections.Counter()
        try:
            for _ in range(400):
                try:
                    permit = b.acquire()
                except CallNotPermittedError:
                    mine["rejected"] += 1
                    continue
                probe = permit.state is State.HALF_OPEN
                if probe:
                    with lock:
                        inflight[permit.generation] += 1
                        admitted[permit.generation] += 1
                        if inflight[permit.generation] > n_probes or admitted[permit.generation] > n_probes:
                            problems.append(f"half-open over-admitted in generation {permit.generation}")
                time.sleep(0)  # let other threads interleave here, mid-call
                roll = rng.random()
                if probe:
                    with lock:
                        inflight[permit.generation] -= 1
                        if roll >= 0.9:  # ignored and released permits give their slot back
                            admitted[permit.generation] -= 1
                if roll < 0.5:
                    b.on_error(0.001, RuntimeError("down"), permit)
                    mine["failure"] += 1
                elif roll < 0.8:
                    b.on_success(0.001, permit)
                    mine["success"] += 1
                elif roll < 0.9:
                    b.on_result(0.001, "ok", permit)
                    mine["success"] += 1
                elif roll < 0.95:
                    b.on_error(0.001, Ignored(), permit)
                    mine["ignored"] += 1
                else:
                    b.release(permit)
        except BaseException as e:  # anything but a refusal is a bug; report it from the main thread
            problems.append(repr(e))
        with lock:
            totals.update(mine)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert problems == []
    m = b.metrics()
    assert m.successful_calls_total == totals["success"]
    assert m.failed_calls_total == totals["failure"]
    assert m.ignored_calls_total == totals["ignored"]
    assert m.not_permitted_calls == totals["rejected"]
    # With a 50% failure rate the breaker must have cycled, and listeners saw every transition.
    assert {t.to_state for t in transitions} >= {"open", "half_open"}
    assert len(transitions) == m.transitions
    for a, b_ in zip(transitions, transitions[1:]):
        assert a.to_state == b_.from_state  # delivered in order, none lost


def test_asyncio_tasks_cannot_exceed_half_open_permits():
    clock_now = [0.0]
    n_probes, n_tasks = 3, 20
    b = CircuitBreaker("aio", CircuitBreakerConfig(window_size=2, minimum_calls=2, wait_in_open_s=5.0,
                                                   permitted_calls_in_half_open=n_probes),
                       clock=lambda: clock_now[0])
    for _ in range(2):
        p = b.acquire()
        b.on_error(0.0, RuntimeError(), p)
    assert b.state is State.OPEN
    clock_now[0] = 5.0

    async def scenario():
        gate, all_tried = asyncio.Event(), asyncio.Event()
        inside = {"now": 0, "max": 0, "tried": 0, "rejected": 0}

        def tried():
            inside["tried"] += 1
            if inside["tried"] == n_tasks:
                all_tried.set()

        async def probe():
            inside["now"] += 1
            inside["max"] = max(inside["max"], inside["now"])
            tried()
            await gate.wait()
            inside["now"] -= 1
            return "ok"

        async def worker():
            try:
                return await b.call_async(probe)
            except CallNotPermittedError:
                inside["rejected"] += 1
                tried()
                return "rejected"

        tasks = [asyncio.create_task(worker()) for _ in range(n_tasks)]
        await all_tried.wait()
        assert inside["max"] == n_probes
        assert inside["rejected"] == n_tasks - n_probes
        assert b.state is State.HALF_OPEN
        gate.set()
        results = await asyncio.gather(*tasks)
        return results

    results = asyncio.run(scenario())
    assert results.count("ok") == n_probes
    assert b.state is State.CLOSED
