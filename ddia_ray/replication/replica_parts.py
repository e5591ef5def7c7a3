"""What the parts of a leader-follower replica use of it, declared once for the type checker.

:class:`~.leader_follower.LeaderFollowerReplica` is built of parts, one concept each
(:mod:`.membership`, :mod:`.failover`, :mod:`.leadership`, :mod:`.divergence`,
:mod:`.replica_reads`), which read and write the core's attributes and call its methods.
:class:`ReplicaPart` is their common base: at run time it is empty, and to the type checker it
declares those attributes and methods, so each part is checked against one description of the
core instead of a copy of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import NotLeaderError

__all__ = ["ReplicaPart"]


class ReplicaPart:
    """The base of a leader-follower replica's parts (see the module docstring)."""

    if TYPE_CHECKING:  # provided by the core, LeaderFollowerReplica
        base_epoch: int
        base_lsn: int
        coord: Any
        counters: dict
        default_acks: int
        defer_ticks: int
        drift: float
        epoch: int
        epochs: list
        group: str
        incarnation: int
        last_checkpoint_error: str
        leader: str
        lease_key: bytes
        lease_ticks: int
        log: Any
        lost: Any
        lost_writes: int
        max_append_bytes: int
        max_append_entries: int
        max_scan_rows: int
        members: tuple
        mode: str
        node_id: str
        observer: Any
        partition_load: Any
        pins: Any
        probe_quorum: int
        probe_ticks: int
        renew_ticks: int
        role: str
        state: Any
        sync_replicas: int
        tick_s: float
        ticks: int
        valid_until: int
        _caught_up_at: int
        _change: dict | None
        _deferred_since: int
        _lease_raw: bytes | None
        _lease_seen_at: int
        _lost_index: tuple | None
        _match: dict[str, int]
        _needs_checkpoint: bool
        _next: dict[str, int]
        _next_heartbeat: int
        _next_watch: int
        _pins: dict[str, list[int]]
        _probe: dict | None
        _probe_seq: int
        _renewal: int
        _resync_asked_at: int
        _resyncing: bool
        _transfer: dict | None
        _waiting: dict[int, list]
        _watch_sent: int

        def epoch_at(self, lsn: int) -> int: ...

        @property
        def last_epoch(self) -> int: ...

        @property
        def last_lsn(self) -> int: ...

        def persist(self, rec: Any) -> None: ...

        def reply(self, request_id: int, payload: Any = None, *, error: BaseException | None = None) -> None: ...

        def send(self, dst: str, payload: Any) -> None: ...

        def _append_system_entry(self, ops: tuple) -> None: ...

        def _adopt_epoch(self, epoch: int, leader: str, *, probing: bool = False) -> None: ...

        def _append_entry(self, e: tuple, *, replaying: bool = False) -> None: ...

        def _become_leader(self, epoch: int, raw: bytes, sent: int) -> None: ...

        def _leading(self) -> bool: ...

        def _lease_bytes(self, members: tuple) -> bytes: ...

        def _not_leader(self) -> NotLeaderError: ...

        def _on_change(self, rid: int, action: str, target: str, timeout_ticks: int) -> None: ...

        def _outcome_unknown(self, rid: int, why: str) -> None: ...

        def _ownership(self) -> Any: ...

        def _persist_entries(self, entries: tuple) -> None: ...

        def _release_waiting(self) -> None: ...

        def _replicate(self, heartbeat: bool = False) -> None: ...

        def _set_members(self, members: tuple) -> None: ...

        def _step_down(self, why: str) -> None: ...

        def _stop_changing(self, why: str) -> None: ...
