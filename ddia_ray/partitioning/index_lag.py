"""Measuring a global index's lag on a running store: what the indexer reports, and what a reader sees.

Theory of operation
-------------------
A global index (:mod:`.global_index`) is updated asynchronously, so a write shows in queries some
time after it is acknowledged: the index *lag*. :func:`measure_index_lag` measures it two ways
while a writer changes indexed values at a steady rate:

* **from the indexer**: every ``sample_s`` it reads the indexer's figures, ``pending`` (changes
  seen and not yet indexed) and ``lag_s`` (the age of the oldest of them since the indexer saw it);
* **from a reader**: every ``probe_every_s`` a probe writes a key under a term of its own and
  queries that term until the key shows; the time from the write's acknowledgement to the first
  query that returns it is what an application waiting for its own write would see.

``outage=(start_s, length_s)`` kills the indexer at ``start_s`` and restarts it ``length_s``
later: changes pile up in the groups' outboxes meanwhile (nothing is lost) and drain after the
restart, which the figures show as a ramp and a fall.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import codec

if TYPE_CHECKING:
    from .store import PartitionedStore

__all__ = ["IndexLagReport", "measure_index_lag"]


@dataclass
class IndexLagReport:
    """The figures of one :func:`measure_index_lag` run (times in seconds from its start)."""

    samples: list = field(default_factory=list)  # (t, pending, lag_s) from the indexer
    probes: list = field(default_factory=list)  # (t written, seconds until a query showed it)
    writes: int = 0
    outage: tuple | None = None
    errors: list = field(default_factory=list)

    def probe_lags(self) -> list[float]:
        """The reader-side lags, in probe order."""
        return [lag for _, lag in self.probes]


def measure_index_lag(store: "PartitionedStore", index: str, *, field_name: str, seconds: float = 8.0,
                      writes_per_s: float = 200.0, keys: int = 500, sample_s: float = 0.1,
                      probe_every_s: float = 0.5, outage: tuple | None = None, seed: int = 0) -> IndexLagReport:
    """Run a writer of ``writes_per_s`` changes over ``keys`` keys (values are codec maps whose
    ``field_name`` the index reads) for ``seconds``, and measure the lag of global index ``index``
    (see the module docstring)."""
    report = IndexLagReport(outage=outage)
    stop = threading.Event()
    t0 = time.monotonic()
    rng = random.Random(seed)

    def writer() -> None:
        with store.client() as c:
            period, n = 1.0 / writes_per_s, 0
            while not stop.is_set():
                due = t0 + n * period
                if due > time.monotonic():
                    stop.wait(due - time.monotonic())
                try:
                    c.put(b"lag-%05d" % rng.randrange(keys), codec.encode({field_name: f"t{rng.randrange(8)}"}))
                    report.writes += 1
                except Exception as e:  # noqa: BLE001 - recorded; the caller decides
                    report.errors.append(repr(e))
                n += 1

    def prober() -> None:
        with store.client() as c:
            i = 0
            while not stop.wait(probe_every_s):
                key, term = b"probe-%05d" % i, f"probe{i}"
                c.put(key, codec.encode({field_name: term}))
                written = time.monotonic()
                # A probe still waiting when the run ends is waited for (up to _PROBE_DRAIN_S more):
                # on a slow machine the one written during the outage may be, and its lag is the
                # longest of the run, the one to report rather than drop.
                while not (stop.is_set() and time.monotonic() > t0 + seconds + _PROBE_DRAIN_S):
                    if any(k == key for k, _ in c.query(index, term)):
                        report.probes.append((round(written - t0, 3), round(time.monotonic() - written, 4)))
                        break
                    time.sleep(0.01)
                i += 1

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=prober, daemon=True)]
    for t in threads:
        t.start()
    group = store.indexer(index)
    killed = False
    try:
        while (now := time.monotonic() - t0) < seconds:
            if outage and not killed and now >= outage[0]:
                group.kill("indexer")
                killed = True
            if outage and killed and now >= outage[0] + outage[1] and not group.alive():
                group.restart("indexer")
            if group.alive():
                st = store.index_stats(index)
                report.samples.append((round(now, 3), st["pending"], st["lag_s"]))
            else:  # no indexer: nobody counts; the outboxes only grow
                report.samples.append((round(now, 3), None, None))
            time.sleep(sample_s)
    finally:
        stop.set()
        if not group.alive():  # before the joins: the prober may be waiting for its last probe
            group.restart("indexer")
        for t in threads:
            t.join(seconds + _PROBE_DRAIN_S + 30)
    return report


#: How long past a run's end a probe written during it is still waited for.
_PROBE_DRAIN_S = 30.0
