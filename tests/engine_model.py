"""The rules every storage engine's model-based test shares: the same writes to the engine and to
``MemoryEngine``, and the full contents compared after every step.

:func:`engine_vs_model` builds a hypothesis state machine for given key and value strategies;
a test subclasses it, opens ``self.db`` and ``self.model``, and adds the rules particular to its
engine (snapshots, reopening, engine-specific checks).
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ddia_ray.storage.engine import WriteBatch

__all__ = ["engine_vs_model"]


def engine_vs_model(keys, values, *, batch_max: int) -> type:
    """A state machine base class whose rules write the same to ``self.db`` and ``self.model``."""

    class EngineVsModel(RuleBasedStateMachine):
        """Shared rules (see the module docstring); subclasses set ``self.db`` and ``self.model``."""

        @rule(key=keys, value=values)
        def put(self, key, value):
            self.db.put(key, value)
            self.model.put(key, value)

        @rule(key=keys)
        def delete(self, key):
            self.db.delete(key)
            self.model.delete(key)

        @rule(a=keys, b=keys)
        def delete_range(self, a, b):
            lo, hi = min(a, b), max(a, b)
            self.db.delete_range(lo, hi)
            self.model.delete_range(lo, hi)

        @rule(ops=st.lists(st.tuples(st.sampled_from(["put", "delete", "range"]), keys, values, keys),
                           max_size=batch_max))
        def write_batch(self, ops):
            batch = WriteBatch()
            for kind, key, value, other in ops:
                if kind == "put":
                    batch.put(key, value)
                elif kind == "delete":
                    batch.delete(key)
                else:
                    batch.delete_range(min(key, other), max(key, other))
            self.db.write(batch)
            self.model.write(batch)

        @rule()
        def flush(self):
            self.db.flush()

        @rule()
        def compact(self):
            self.db.compact()

        @invariant()
        def same_contents(self):
            if hasattr(self, "db"):  # machines that open in an @initialize rule have no db before it
                assert list(self.db.scan()) == list(self.model.scan())

    return EngineVsModel
