"""Lock ranks of the LSM-tree and a debug-mode checker that enforces them.

Theory of operation
-------------------
Every lock of the engine has a *rank* (the table is at the top of
:mod:`.tree`). A thread may only take a lock whose rank is higher than the
rank of every lock it already holds, so no cycle of waits, hence no deadlock,
can form. The rule is cheap to state and easy to break in a refactor, so it
is checked at run time when the environment variable :data:`LOCK_CHECK_ENV`
is ``"1"`` when a tree is opened (the test suite sets it for every test): the tree then
builds its locks as :class:`RankedLock` wrappers that remember, per thread,
which ranks are held and raise :class:`~ddia_ray._validate.InvariantViolation`
on an out-of-order acquisition, *before* blocking, so an inversion is
reported even on the runs where it would not have deadlocked. Otherwise the
tree uses plain ``threading.Lock`` objects and the hot path pays nothing.

The write queue's head (the group-commit leader) is a lock too, built from
the mutex and a condition; :meth:`LockOrderChecker.acquiring` takes a
``beneath`` argument for such a lock, acquired while its own guard is held.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ..._validate import invariant

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

__all__ = ["LOCK_CHECK_ENV", "RANK_LEADER", "RANK_COMPACTION", "RANK_FLUSH", "RANK_COMMIT", "RANK_MUTEX",
           "RANK_STATS", "LockOrderChecker", "RankedLock", "make_locks"]

#: Set to ``"1"`` before opening a tree to check the lock order at run time (a ``put`` then costs ~1.8 µs more).
LOCK_CHECK_ENV = "DDIA_LSM_LOCK_CHECK"

RANK_LEADER = 1  # the head of the write queue (logical: the mutex plus _writers_cv)
RANK_COMPACTION = 2  # _comp_lock
RANK_FLUSH = 3  # _flush_lock
RANK_COMMIT = 4  # _commit_lock
RANK_MUTEX = 5  # _mutex and its conditions
RANK_STATS = 6  # _stats_lock (the LRU caches' own locks rank above it: leaves)


class LockOrderChecker:
    """Per-thread record of held ranks; raises on an acquisition that breaks the order."""

    def __init__(self):
        self._local = threading.local()

    def held(self) -> list[tuple[int, str]]:
        """The ``(rank, name)`` pairs the calling thread holds, in acquisition order."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = []
        return held

    def acquiring(self, rank: int, name: str, *, beneath: str | None = None) -> None:
        """Record that the caller takes ``name``; ``beneath`` names a held guard that may outrank it."""
        held = self.held()
        blocking = [n for r, n in held if r >= rank and n != beneath]
        invariant(not blocking, f"lock order: {name} (rank {rank}) taken while holding {blocking}")
        held.append((rank, name))

    def released(self, rank: int, name: str) -> None:
        """Record that the caller let go of ``name`` (locks may be released in any order)."""
        held = self.held()
        for i in range(len(held) - 1, -1, -1):
            if held[i] == (rank, name):
                del held[i]
                return
        invariant(False, f"lock order: {name} released by a thread that does not hold it")

    def holds(self, rank: int, name: str) -> bool:
        """Whether the calling thread holds ``name``."""
        return (rank, name) in self.held()


class RankedLock:
    """A ``threading.Lock`` that reports every acquisition and release to a :class:`LockOrderChecker`."""

    __slots__ = ("_lock", "_rank", "_name", "_checker")

    def __init__(self, checker: LockOrderChecker, rank: int, name: str):
        self._lock = threading.Lock()
        self._rank = rank
        self._name = name
        self._checker = checker

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Check the order, then acquire like ``threading.Lock.acquire``."""
        self._checker.acquiring(self._rank, self._name)
        if self._lock.acquire(blocking, timeout):
            return True
        self._checker.released(self._rank, self._name)
        return False

    def release(self) -> None:
        """Release like ``threading.Lock.release``."""
        self._checker.released(self._rank, self._name)
        self._lock.release()

    def locked(self) -> bool:
        """Whether any thread holds the lock."""
        return self._lock.locked()

    def _is_owned(self) -> bool:  # threading.Condition asks this instead of probing with acquire(False)
        return self._checker.holds(self._rank, self._name)

    def __enter__(self) -> "RankedLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


if TYPE_CHECKING:  # threading.Lock is a factory function at run time: this alias is for type checkers only
    #: A lock of the tree: a plain ``threading.Lock``, or a :class:`RankedLock` when the order is checked.
    TreeLock: TypeAlias = "threading.Lock | RankedLock"


def make_locks() -> tuple[LockOrderChecker | None, dict]:
    """``(checker or None, {name: lock})`` for a new tree: ranked when :data:`LOCK_CHECK_ENV` is on.

    The locks are typed loosely (``Any``) on purpose: ``threading.Condition`` accepts a
    :class:`RankedLock` (it duck-types), which its type stubs cannot express.
    """
    names = {"mutex": RANK_MUTEX, "commit": RANK_COMMIT, "compaction": RANK_COMPACTION,
             "flush": RANK_FLUSH, "stats": RANK_STATS}
    if os.environ.get(LOCK_CHECK_ENV) != "1":
        return None, {name: threading.Lock() for name in names}
    checker = LockOrderChecker()
    return checker, {name: RankedLock(checker, rank, name) for name, rank in names.items()}
