"""Snapshots: a pinned sequence number (and version) that reads can name.

Theory of operation: ``LSMTree.snapshot()`` records the current ``last_seq``
and pins the current version. Reads given the snapshot ignore every version
with a higher sequence number; compaction keeps, per key, the newest version
at or below every live snapshot (see :mod:`.merge`). A snapshot that is
garbage-collected without ``release()`` is released by its finaliser, which
only queues the release (the tree applies it the next time it holds its lock).
"""

from __future__ import annotations

from .manifest import Version

__all__ = ["LSMSnapshot"]


class LSMSnapshot:
    """A read view at ``seq``; ``release()`` it (or use ``with``) so compaction may drop old versions."""

    __slots__ = ("seq", "_tree", "_version", "released", "__weakref__")

    def __init__(self, tree, seq: int, version: Version):
        self.seq = seq
        self._tree = tree
        self._version = version
        self.released = False

    def release(self) -> None:
        """Let go of the snapshot (idempotent)."""
        if not self.released:
            self.released = True
            self._tree._release_snapshot(self, deferred=False)

    def __enter__(self) -> "LSMSnapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if not getattr(self, "released", True):
            self.released = True
            self._tree._release_snapshot(self, deferred=True)

