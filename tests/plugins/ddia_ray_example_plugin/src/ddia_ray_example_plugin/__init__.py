"""An example ddia-ray plugin (installed by the plugin tests).

It provides one extension of each kind but the codec's, and a lifecycle that
records what happened to it, so a test can see each step.
"""

from __future__ import annotations

from ddia_ray.balancing.pickers import Picker
from ddia_ray.storage.engine import MemoryEngine

__all__ = ["ExamplePlugin", "ExampleEngine", "LowestNamePicker", "longest_value", "count_events"]


class ExampleEngine(MemoryEngine):
    """The reference in-memory engine under another name: its statistics say which engine it is."""

    def stats(self):
        """The memory engine's figures, with ``engine`` naming this one."""
        return {**super().stats(), "engine": "example-memory"}


def open_example(url=None, **options):
    """The opener of ``open_engine(url, engine="example-memory")``."""
    return ExampleEngine()


class LowestNamePicker(Picker):
    """Always the candidate whose name sorts first: deterministic, easy to check from a test."""

    def _choose(self, key, candidates, exclude, load):
        return min(candidates)


def lowest_name(rng):
    """The factory of ``picker="lowest_name"``."""
    return LowestNamePicker(rng=rng)


def longest_value(key, siblings):
    """A conflict resolver: the longest live value wins (ties: the larger bytes)."""
    live = [s.value for s in siblings if s.value is not None]
    return max(live, key=lambda v: (len(v), v)) if live else None


def count_events(events):
    """An event-bus handler that only counts (a real one would write somewhere)."""
    return len(events) if isinstance(events, tuple) else 1


class ExamplePlugin:
    """The plugin object the entry point names; the manager instantiates it."""

    api_version = "1.0"

    def __init__(self):
        self.config = None
        self.steps = []

    def ddia_ray_init(self, config):
        self.config = dict(config)
        self.steps.append("init")

    def ddia_ray_start(self):
        self.steps.append("start")

    def ddia_ray_stop(self):
        self.steps.append("stop")

    def ddia_ray_health(self):
        return True

    def ddia_ray_storage_engines(self):
        return {"example-memory": open_example}

    def ddia_ray_pickers(self):
        return {"lowest_name": lowest_name}

    def ddia_ray_conflict_resolvers(self):
        return {"longest_value": longest_value}

    def ddia_ray_bus_handlers(self):
        return {"example.count": count_events}
