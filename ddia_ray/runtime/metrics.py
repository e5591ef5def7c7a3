"""Metrics of every shell, exported through ``ray.util.metrics`` and returned by ``stats()``.

Theory of operation
-------------------
Every :class:`~ddia_ray.runtime.shell.NodeShell` owns one :class:`ShellMetrics`.
It records each request (a core's, named by its payload type) and each call (a
service's, named by its method) as a count, an error count and a latency
sample, and exports them as Ray metrics, which Ray's metrics agent serves to
Prometheus and the dashboard's Grafana views:

* ``ddia_ray_calls_total`` (counter): calls served;
* ``ddia_ray_call_errors_total`` (counter): calls answered with an error;
* ``ddia_ray_call_latency_seconds`` (histogram): time from arrival to answer,
  network faults excluded, sampled (below);
* ``ddia_ray_<stat>`` (gauge): each number among the component's own figures
  (a storage node's ``puts``, a cache's ``hits``, a Raft member's ``term``),
  read every :data:`EXPORT_INTERVAL_S` and whenever someone asks for ``stats()``.
  Nested figures are flattened with ``_`` (``rows_written`` under ``lsm``
  becomes ``ddia_ray_lsm_rows_written``).

Recording a Ray metric costs about 15 us inside an actor (measured on this
project's VM: a leader read's round trip went from 205-222 us without them to
243-249 us with a counter and a histogram per request). So the call counters are
summed here and added to Ray's every :data:`FLUSH_S` (and at each export), and
the latency histogram takes every request of a method while it sees fewer than
:data:`LATENCY_SAMPLES_PER_S` a second, then every k-th request, k chosen each
flush from the last second's rate: its buckets keep their proportions (the
quantiles a dashboard draws), while its ``_count`` is the number of samples,
not of calls; ``ddia_ray_calls_total`` counts every call.

Prometheus sees them with Ray's ``ray_`` prefix (``ray_ddia_ray_calls_total``);
:func:`read_exported` reads them back from Ray's metrics agents, as Prometheus
would. Ray reports application metrics every ``RAY_metrics_report_interval_ms``
(10 s by default), so a freshly counted call shows up after that.

Every metric carries the labels ``component`` (``storage``, ``cache``,
``balancer``, ``raftkv``...), ``group`` and ``node``; the call metrics also
``method``. The same figures come back from ``stats()`` (the shell's and every
handle's), so a test or a notebook reads exactly what a dashboard shows.

Ray's metric objects are created on first use and only inside a Ray worker:
the simulator never builds a shell, so pure cores never import Ray for this.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any, Callable, Mapping

__all__ = ["ShellMetrics", "EXPORT_INTERVAL_S", "FLUSH_S", "LATENCY_SAMPLES_PER_S", "LATENCY_BOUNDARIES_S",
           "metric_name", "parse_prometheus", "read_exported"]

#: How often a shell reads its component's figures into the gauges.
EXPORT_INTERVAL_S = 2.0
#: How often the counted calls are added to Ray's counters while calls come (Ray reports every 10 s).
FLUSH_S = 1.0
#: Latency samples per method and second beyond which the histogram takes every k-th call only.
LATENCY_SAMPLES_PER_S = 200
#: Histogram buckets (seconds): a cache hit is ~0.1 ms, a replicated write a few ms, a stall seconds.
LATENCY_BOUNDARIES_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0]
_TAGS = ("component", "group", "node")
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(*parts: str) -> str:
    """``ddia_ray_<parts>`` with every character Prometheus refuses replaced by ``_``."""
    return "ddia_ray_" + "_".join(_BAD.sub("_", p) for p in parts if p)


def _numbers(figures: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, float]:
    """The numeric leaves of ``figures`` (two levels deep), keyed by their flattened names."""
    out: dict[str, float] = {}
    for k, v in figures.items():
        name = f"{prefix}_{k}" if prefix else str(k)
        if isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, (int, float)):
            out[name] = float(v)
        elif isinstance(v, Mapping) and depth < 1:
            out.update(_numbers(v, name, depth + 1))
    return out


class _Call:
    __slots__ = ("count", "errors", "latency_sum_s", "latency_max_s", "tags", "pending", "pending_errors", "seen",
                 "every", "skip")

    def __init__(self, tags: dict):
        self.count = 0
        self.errors = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self.tags = tags  # the shell's labels and this method's
        self.pending = 0  # calls not yet added to Ray's counter
        self.pending_errors = 0
        self.seen = 0  # observations since the last flush
        self.every = 1  # the histogram takes every ``every``-th observation...
        self.skip = 0  # ...the next one after ``skip`` more


class ShellMetrics:
    """One shell's counters, latency histogram and gauges (see the module docstring)."""

    def __init__(self, component: str, group: str, node: str):
        self.tags = {"component": component, "group": group, "node": node}
        self._calls: dict[str, _Call] = {}
        self._ray: dict[str, Any] | None = None
        self._gauges: dict[str, Any] = {}
        self._task: asyncio.Task | None = None
        self._flushed = time.monotonic()
        self.export_errors = 0
        self.last_export_error = ""

    def _metrics(self) -> dict[str, Any] | None:
        if self._ray is None:
            try:
                from ray.util import metrics
            except ImportError:  # pragma: no cover - the shell always runs inside Ray
                return None
            keys = _TAGS + ("method",)
            self._ray = {
                "calls": metrics.Counter("ddia_ray_calls_total", "calls served by a ddia-ray actor", keys),
                "errors": metrics.Counter("ddia_ray_call_errors_total", "calls answered with an error", keys),
                "latency": metrics.Histogram("ddia_ray_call_latency_seconds", "arrival to answer, per call",
                                             LATENCY_BOUNDARIES_S, keys),
            }
        return self._ray

    def observe(self, method: str, elapsed_s: float, count: int = 1, errors: int = 0) -> None:
        """Record ``count`` calls of ``method`` that took ``elapsed_s`` together, ``errors`` of them failed."""
        c = self._calls.get(method)
        if c is None:
            c = self._calls[method] = _Call({**self.tags, "method": method})
        c.count += count
        c.errors += int(errors)
        c.latency_sum_s += elapsed_s
        if elapsed_s > c.latency_max_s:
            c.latency_max_s = elapsed_s
        m = self._metrics()
        if m is None:
            return
        c.pending += count
        c.pending_errors += int(errors)
        c.seen += 1
        c.skip -= 1
        if c.skip <= 0:
            c.skip = c.every
            m["latency"].observe(elapsed_s, c.tags)
        if time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Add the calls counted since the last flush to Ray's counters, and choose each method's
        histogram sampling for the next interval from its rate in this one."""
        now = time.monotonic()
        elapsed, self._flushed = max(now - self._flushed, 1e-3), now
        m = self._ray
        if m is None:
            return
        for c in self._calls.values():
            if c.pending:
                m["calls"].inc(c.pending, c.tags)
            if c.pending_errors:
                m["errors"].inc(c.pending_errors, c.tags)
            c.pending = c.pending_errors = 0
            c.every = max(1, math.ceil(c.seen / (LATENCY_SAMPLES_PER_S * max(elapsed, FLUSH_S))))
            c.seen = 0

    def calls(self) -> dict[str, dict[str, float]]:
        """Per method: ``count``, ``errors``, ``latency_sum_s``, ``latency_max_s`` since the start."""
        return {name: {"count": c.count, "errors": c.errors, "latency_sum_s": c.latency_sum_s,
                       "latency_max_s": c.latency_max_s} for name, c in self._calls.items()}

    def export_figures(self, figures: Mapping[str, Any]) -> dict[str, float]:
        """Set one gauge per numeric figure; returns the flattened numbers."""
        numbers = _numbers(figures)
        if self._metrics() is None:
            return numbers
        from ray.util import metrics

        for name, value in numbers.items():
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = self._gauges[name] = metrics.Gauge(metric_name(name), f"{name} of a ddia-ray component",
                                                           _TAGS)
            gauge.set(value, self.tags)
        return numbers

    def start(self, loop: asyncio.AbstractEventLoop, figures: Callable[[], Mapping[str, Any]],
              run: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        """Export ``figures()`` every :data:`EXPORT_INTERVAL_S` on ``loop`` until :meth:`stop`."""
        async def loop_forever():
            while True:
                await asyncio.sleep(EXPORT_INTERVAL_S)
                try:
                    self.flush()
                    got = await run(figures) if run is not None else figures()
                    self.export_figures(got)
                except Exception as e:  # noqa: BLE001 - figures that fail to read must not stop the shell
                    self.export_errors += 1  # ...but they are counted and the last one kept for stats()
                    self.last_export_error = f"{type(e).__name__}: {e}"

        if self._task is None:
            self._task = loop.create_task(loop_forever())

    def stop(self) -> asyncio.Task | None:
        """Stop the periodic export; returns the cancelled task, for the caller to await."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        try:
            self.flush()  # the calls counted since the last flush: Ray reports them once more on exit
        except Exception as e:  # noqa: BLE001 - a shell that stops must stop; the failure is counted
            self.export_errors += 1
            self.last_export_error = f"{type(e).__name__}: {e}"
        return task


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str, prefix: str = "") -> list[tuple[str, dict[str, str], float]]:
    """The samples ``(name, labels, value)`` of a Prometheus text exposition whose names start with ``prefix``."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or not m.group(1).startswith(prefix):
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue  # a malformed value in someone else's exposition: not ours to judge
    return out


def read_exported(prefix: str = "ray_ddia_ray_", *, timeout_s: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    """What Ray's metrics agents export right now: every node's samples named ``prefix...``.

    This is what Prometheus scrapes (Ray prefixes every application metric with ``ray_``); it
    lets a test, a notebook or a job read the exported figures without running Prometheus.
    The local node is read over loopback.
    """
    import urllib.request

    import ray

    here = ray.get_runtime_context().get_node_id()
    samples = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not port:
            continue
        host = "127.0.0.1" if node["NodeID"] == here else node["NodeManagerAddress"]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as answer:
            samples += parse_prometheus(answer.read().decode("utf-8", "replace"), prefix)
    return samples
