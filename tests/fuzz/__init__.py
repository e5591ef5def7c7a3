"""Seeded mutation fuzzing of every byte format that crosses a trust boundary.

Theory of operation
-------------------
Targets (:mod:`.targets`, :mod:`.storage_targets`): the codec, the runtime
durable log, the LSM WAL, the LSM manifest and ``.sstmeta`` sidecars, and the
B-tree page file. Each builds real seeds through the public APIs, mutates them
with :mod:`.mutate` and judges the outcome with an oracle (:mod:`.oracle` for
logs): the right data, or a ``ddia_ray.errors`` exception. The runner
(:mod:`.runner`) executes inputs in a child process bounded in memory and time,
so a crash is a reported failure with a replay command, not a dead test run.
See ``docs/fuzzing.md``.
"""
