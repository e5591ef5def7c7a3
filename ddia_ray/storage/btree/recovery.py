"""Opening a B-tree page file: which commit to open, and when the other meta page may be ignored.

Theory of operation
-------------------
This is the pure decision core of :class:`~ddia_ray.storage.btree.pagefile.PageFile`'s open.
The page file reads both meta pages and describes each as a :class:`SlotReport`:

* *intact*: the record verifies and so does every page its commit wrote;
* *incomplete*: the record verifies (so its txn id and sync flag are known) but the file is
  shorter than its ``page_count`` or a page it wrote fails;
* *damaged*: the record itself fails (checksum, magic, format): its txn id is unknown.

:func:`choose` opens the intact commit with the highest txn id and judges the other meta page.
Two facts decide what a crash can legitimately leave behind:

1. The meta record is one 512-byte sector written by one aligned write, with a checksum over
   the whole sector. A crash during that write leaves the old or the new record, and both
   verify. So with ``sync=True`` (pages fsynced before the meta write, the meta fsynced before
   the commit is acknowledged) *no* crash leaves a failing meta record or a failing page of
   the newest commit: any failure there is damage to an acknowledged commit.
2. Without fsync (``sync=False``) the file system promises nothing about recently written
   blocks after a power loss: they may be missing, stale, zeroed or reordered (the meta may
   reach the disk before the pages it names). There, losing the newest commits is the
   documented contract, and any failure of them is a legitimate crash outcome.

Decision table (``opener`` is the ``sync`` the file is opened with; ``flag`` is the commit's
recorded sync flag, and for a damaged record, whose flag is unreadable, the chosen commit's)::

    other meta page                        outcome
    -------------------------------------  ---------------------------------------------------
    intact, or any state with a lower txn  open the chosen commit (the other one is older)
    incomplete or damaged, and             fall back to the chosen commit, logged and counted
      not flag and not opener
    incomplete or damaged, otherwise       CorruptionError naming the file and the damage,
                                           unless recover="previous_commit": then fall back,
                                           logged and counted
    no intact commit at all                CorruptionError, always

A damaged record is judged like a newer commit although it may be the older one: its txn id
is unknown, and guessing wrong would silently lose an acknowledged commit. The fallback note
says so. Nothing here writes: a refused open leaves the file exactly as it was, so the damage
can still be examined or repaired.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, CorruptionError

__all__ = ["SlotReport", "choose", "check_recover", "RECOVER_MODES"]

#: Values of the ``recover`` option: None (refuse to lose a commit) or an explicit fallback.
RECOVER_MODES = (None, "previous_commit")


@dataclass(frozen=True)
class SlotReport:
    """What one meta page holds: ``problem`` is None for an intact commit."""

    slot: int
    txn: int | None              # None: the record is damaged, its txn id unknown
    synced: bool                 # the commit's recorded sync flag (False when unknown)
    problem: str | None          # why the commit is not intact
    claimed_txn: int | None = None  # a damaged record's unverified txn id, for messages only


def check_recover(recover) -> None:
    """ConfigError unless ``recover`` is one of :data:`RECOVER_MODES`."""
    if recover not in RECOVER_MODES:
        raise ConfigError(f"recover must be one of {RECOVER_MODES}, got {recover!r}")


def choose(reports, *, path: str, sync: bool, recover: str | None) -> tuple[int, str | None]:
    """``(index of the report to open, fallback note or None)``; CorruptionError when refused."""
    check_recover(recover)
    intact = [r for r in reports if r.problem is None]
    if not intact:
        detail = "; ".join(f"meta page {r.slot} {r.problem}" for r in reports)
        raise CorruptionError(f"neither meta page describes an intact committed tree ({detail})", path)
    best = max(intact, key=lambda r: r.txn)
    others = [r for r in reports if r is not best]
    other = others[0] if others else None
    if other is None or other.problem is None or (other.txn is not None and other.txn <= best.txn):
        return reports.index(best), None  # the other page is the older commit (or the same one)
    if other.txn is not None:
        lost = f"commit {other.txn} (meta page {other.slot}) {other.problem}"
        flag = other.synced
    else:
        hint = f", it claims txn {other.claimed_txn}" if other.claimed_txn is not None else ""
        lost = (f"meta page {other.slot} {other.problem} (its txn id is unknown{hint}; if it held "
                f"a commit newer than {best.txn}, that commit is lost)")
        flag = best.synced
    if not flag and not sync:
        return reports.index(best), (f"{lost}; written without fsync, so a power loss may have "
                                     f"lost it: opened commit {best.txn} instead")
    if recover == "previous_commit":
        return reports.index(best), f"{lost}; recover='previous_commit': opened commit {best.txn} instead"
    why = ("it was written with sync=True, so its pages and meta were durable before it was "
           "acknowledged: this is damage, not a crash" if flag else
           "the opener runs with sync=True and refuses to drop it silently")
    raise CorruptionError(f"{lost}; {why}. The file is unchanged. Restore it from a backup, or open "
                          f"it with recover='previous_commit' to continue from commit {best.txn} "
                          f"(the newer commit is then overwritten by the next write)", path)
