"""Storage engines (LSM-tree, B+tree) behind one interface, and the storage-node actor.

See :mod:`ddia_ray.storage.engine` for the interface every engine implements.
"""

from .engine import (ENGINES, MemoryEngine, Op, OpColumns, Snapshot, StorageEngine, WriteBatch, check_range,
                     open_engine, register_engine, to_key, to_value)

__all__ = ["ENGINES", "MemoryEngine", "Op", "OpColumns", "Snapshot", "StorageEngine", "WriteBatch", "check_range",
           "open_engine", "register_engine", "to_key", "to_value"]
