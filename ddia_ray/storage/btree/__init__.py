"""The B-tree storage engine: an in-memory B+tree, a copy-on-write page file, and the engine on top.

Modules: ``bplustree`` (in-memory B+tree), ``pagefile`` (page format, commits, free space),
``recovery`` (which commit an open may use), ``cowtree`` (the copy-on-write tree over pages),
``_backend`` (local and ``memory://`` files, atomic creation), ``checkpoint`` (a consistent copy
of the page file while writes go on), ``engine`` (``BTreeEngine``).
See ``docs/btree.md``.

Importing this package registers the engine as ``"btree"`` with
:func:`ddia_ray.storage.engine.open_engine`.
"""

from .bplustree import BPlusTree
from .engine import BTreeEngine, BTreeSnapshot
from .pagefile import PageFile

__all__ = ["BPlusTree", "BTreeEngine", "BTreeSnapshot", "PageFile"]
