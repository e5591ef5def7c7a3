"""Storage engines (LSM-tree, B+tree) behind one interface, and the storage node on Ray.

See :mod:`ddia_ray.storage.engine` for the interface every engine implements,
:mod:`ddia_ray.storage.lsm` and :mod:`ddia_ray.storage.btree` for the engines,
:mod:`ddia_ray.storage.checkpoints` for consistent copies of an engine's files
(:func:`checkpoint`, :func:`copy_checkpoint`), and :mod:`ddia_ray.storage.node` for
:class:`StorageNode` (launch, connect) and its batching :class:`StorageClient`.
"""

from .engine import (ENGINES, MemoryEngine, Op, OpColumns, Snapshot, StorageEngine, WriteBatch, check_range,
                     open_engine, register_engine, to_key, to_value)
from .checkpoints import CheckpointInfo, checkpoint, copy_checkpoint, read_checkpoint

from .node import StorageClient, StorageNode, StorageService

__all__ = ["StorageNode", "StorageClient", "StorageService", "ENGINES", "MemoryEngine", "Op", "OpColumns",
           "Snapshot", "StorageEngine", "WriteBatch", "check_range", "open_engine", "register_engine", "to_key",
           "to_value", "CheckpointInfo", "checkpoint", "copy_checkpoint", "read_checkpoint"]
