"""A lease kept alive in the background, as etcd's client ``KeepAlive`` does.

Theory of operation
-------------------
A service that registers itself under a lease (``services/api/10.0.0.7``)
must renew the lease for as long as it lives, whatever else it is doing: a
renewal that waits behind the service's own slow calls is a renewal that
comes late, and a lease that ends while its holder is fine removes a healthy
service from discovery. So :meth:`~.client.ConfigClient.keep_alive` starts a
:class:`LeaseKeeper`: one thread that renews the lease every ``every_s``
(etcd's client sends every TTL/3) and does nothing else.

A renewal that fails because the lessor is away (restarting, unreachable) is
already retried by the client until its ``timeout_s``; the keeper then tries
again at its next beat, since a lessor's restart gives every lease a full TTL.
A lease that *expired* or was revoked cannot come back: the keeper stops,
keeps the error in :attr:`LeaseKeeper.error` and reports it to ``on_lost`` so
the holder can register again under a new lease (etcd closes its keepalive
channel for the same reason).

Lock order: the keeper holds no lock while it calls the store; ``_stop`` is
an event, and the figures are plain attributes written by its one thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..errors import DdiaRayError, LeaseNotFoundError

__all__ = ["LeaseKeeper"]

_log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews lease ``lease_id`` through ``client`` every ``every_s`` seconds on its own thread, until
    :meth:`cancel` or until the lease is lost (see the module docstring). A context manager."""

    def __init__(self, client: Any, lease_id: int, every_s: float,
                 on_lost: Callable[[BaseException], Any] | None = None) -> None:
        self.client, self.lease_id, self.every_s, self.on_lost = client, lease_id, every_s, on_lost
        #: Renewals that succeeded, and when the last one was sent (``time.monotonic()``; 0: none yet):
        #: the lessor renewed no earlier, so the lease lives at least its TTL from then.
        self.renewals = 0
        self.last_renewed_s = 0.0
        #: Renewals that failed and were tried again (the lessor away, a timeout).
        self.retries = 0
        #: Why the keeper stopped on its own: the lease expired or was revoked (None while it runs).
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{lease_id}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the keeper is still renewing (not cancelled, lease not lost)."""
        return self._thread.is_alive()

    def cancel(self, timeout_s: float = 5.0) -> None:
        """Stop renewing (the lease then lives one more TTL from its last renewal, unless revoked)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def __enter__(self) -> "LeaseKeeper":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                self.client.keepalive(self.lease_id)
            except LeaseNotFoundError as e:  # expired (LeaseExpiredError) or revoked: gone for good
                self._lost(e)
                return
            except DdiaRayError:  # the lessor away or slow: the client retried until its timeout; beat again
                self.retries += 1
            except Exception as e:  # noqa: BLE001 - not the store's answer (a closed client, a bug): stop, say why
                _log.exception("the keeper of lease %d stopped", self.lease_id)
                self._lost(e)
                return
            else:
                self.renewals += 1
                self.last_renewed_s = sent
            self._stop.wait(self.every_s)

    def _lost(self, e: BaseException) -> None:
        self.error = e
        if self.on_lost is not None:
            try:
                self.on_lost(e)
            except Exception:  # noqa: BLE001 - the holder's callback must not hide why the keeper stopped
                _log.exception("on_lost of lease %d raised", self.lease_id)

    def __repr__(self) -> str:
        state = "lost" if self.error is not None else ("running" if self.alive else "cancelled")
        return f"LeaseKeeper(lease={self.lease_id}, every_s={self.every_s}, {state}, renewals={self.renewals})"
