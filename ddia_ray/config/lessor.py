"""The lessor: lease deadlines, kept from the ``now`` it is given (a pure core).

Theory of operation
-------------------
A lease's keys must vanish once no keepalive came within its TTL, but a
procedure cannot read a clock (every Raft member must decide the same). So,
as in etcd (``lease/lessor.go``), deadlines live outside the replicated state,
in one lessor, and only the *decision* that a lease expired enters the log,
as a ``config.revoke`` procedure the lessor proposes. The store's rows say
which leases exist and their TTLs; the lessor says when each one ends.

:class:`Lessor` is that bookkeeping, with every time an argument:

* :meth:`sync` reconciles with the leases the store has (the service lists
  them periodically): a lease it did not know gets a full TTL from ``now``,
  one the store no longer has is forgotten;
* :meth:`renew` is a keepalive: the deadline moves to ``now + ttl``;
* :meth:`expired` hands out the leases past their deadline, once each; they
  stay *revoking* (a keepalive is refused with
  :class:`~ddia_ray.errors.LeaseExpiredError`, as etcd's ``Renew`` refuses an
  expired lease) until :meth:`revoked` or a sync confirms they are gone, and
  :meth:`retry_due` gives them again if the revoke did not get through;
* :meth:`promote` gives every lease a fresh full TTL: on a lessor restart and
  on a leader change (etcd's ``Promote``), so that time during which clients
  could not reach the store is never counted against them: a lease may live
  longer than its TTL after a failover, never shorter.

Invariant (checked by the tests): a lease is never handed out by
:meth:`expired` before ``ttl`` seconds have passed since it was granted,
synced, renewed or promoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgumentError, LeaseExpiredError, LeaseNotFoundError

__all__ = ["Lessor", "LeaseState"]


@dataclass
class LeaseState:
    """One lease the lessor keeps: its TTL, its deadline, and since when it is being revoked."""

    ttl_s: float
    deadline_s: float
    revoking_since_s: float | None = None


class Lessor:
    """Deadlines of the store's leases (see the module docstring). ``retry_s``: how long a revoke
    may be outstanding before :meth:`retry_due` hands the lease out again."""

    def __init__(self, *, retry_s: float = 1.0):
        if not isinstance(retry_s, (int, float)) or retry_s <= 0:
            raise InvalidArgumentError(f"retry_s is a number of seconds > 0, got {retry_s!r}")
        self.retry_s = float(retry_s)
        self.leases: dict[int, LeaseState] = {}

    def __len__(self) -> int:
        return len(self.leases)

    def grant(self, lease: int, ttl_s: float, now_s: float) -> None:
        """Track a lease the store just granted, with a full TTL from ``now_s``."""
        if type(lease) is not int or lease < 1 or not ttl_s > 0:
            raise InvalidArgumentError(f"a lease is an id >= 1 with a TTL > 0, got {lease!r}, {ttl_s!r}")
        self.leases.setdefault(lease, LeaseState(float(ttl_s), now_s + ttl_s))

    def sync(self, live: dict[int, float], now_s: float) -> None:
        """Reconcile with the store's leases ``{id: ttl_s}`` (all of them): new ones get a full TTL,
        gone ones are forgotten (revoked, or expired and revoked)."""
        for lease in [lease for lease in self.leases if lease not in live]:
            del self.leases[lease]
        for lease, ttl_s in live.items():
            self.grant(lease, ttl_s, now_s)

    def renew(self, lease: int, now_s: float) -> float:
        """A keepalive: the lease lives ``ttl`` more seconds from ``now_s`` (or longer, if it already
        would); returns the TTL. Raises
        :class:`LeaseExpiredError` for a lease past its deadline (or being revoked) and
        :class:`LeaseNotFoundError` for one this lessor does not know."""
        state = self.leases.get(lease)
        if state is None:
            raise LeaseNotFoundError(f"lease {lease} is not known to the lessor", lease_id=lease)
        if state.revoking_since_s is not None or now_s >= state.deadline_s:
            raise LeaseExpiredError(f"lease {lease} expired (no keepalive within {state.ttl_s} s); its keys are "
                                    f"being deleted: grant a new lease", lease_id=lease)
        # max: a keepalive timed from its arrival may be renewed after a sync or a promotion that
        # counted from a later now; a keepalive never shortens a lease.
        state.deadline_s = max(state.deadline_s, now_s + state.ttl_s)
        return state.ttl_s

    def remaining(self, lease: int, now_s: float) -> float:
        """Seconds until ``lease`` expires (0 if it has; raises for an unknown lease)."""
        state = self.leases.get(lease)
        if state is None:
            raise LeaseNotFoundError(f"lease {lease} is not known to the lessor", lease_id=lease)
        return max(0.0, state.deadline_s - now_s) if state.revoking_since_s is None else 0.0

    def expired(self, now_s: float) -> tuple[int, ...]:
        """The leases past their deadline that are not being revoked yet, in id order; from now on
        they are being revoked."""
        due = tuple(sorted(lease for lease, s in self.leases.items()
                           if s.revoking_since_s is None and now_s >= s.deadline_s))
        for lease in due:
            self.leases[lease].revoking_since_s = now_s
        return due

    def retry_due(self, now_s: float) -> tuple[int, ...]:
        """The leases whose revoke has been outstanding for ``retry_s`` (proposed again now)."""
        due = tuple(sorted(lease for lease, s in self.leases.items()
                           if s.revoking_since_s is not None and now_s - s.revoking_since_s >= self.retry_s))
        for lease in due:
            self.leases[lease].revoking_since_s = now_s
        return due

    def revoked(self, lease: int) -> None:
        """The store no longer has ``lease`` (its revoke applied, or a holder revoked it)."""
        self.leases.pop(lease, None)

    def promote(self, now_s: float) -> None:
        """Give every lease a full TTL from ``now_s`` (a lessor restart, a leader change); revokes
        already decided stay decided."""
        for state in self.leases.values():
            if state.revoking_since_s is None:
                state.deadline_s = now_s + state.ttl_s

    def next_deadline_s(self) -> float | None:
        """The earliest deadline of a lease not being revoked (None: none)."""
        return min((s.deadline_s for s in self.leases.values() if s.revoking_since_s is None), default=None)
