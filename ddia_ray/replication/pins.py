"""Pinned scans: a range read page after page from one point-in-time view of a replica's state.

Theory of operation
-------------------
A replica serves a scan a page per request, each at its own position, so a scan that spans
pages may see writes made between them. A *pinned* scan asks the replica to hold a view of its
state (an engine snapshot, or a copy of a dict state) when the first page is read, and reads
every later page from that view: the whole scan then reflects one position of the log, as an
etcd range pinned to a revision does. The pages after the first go to the replica that holds
the pin, whatever its role meanwhile (the view is a past state of the log, valid wherever it is
read).

A pin costs the replica what its view keeps alive (an LSM snapshot keeps old versions from
compaction), so pins expire after ``ttl_ticks`` without a page, and a replica holds at most
``max_pins``; a page asked of an expired or unknown pin (the replica restarted, say) is refused
with :class:`~ddia_ray.errors.ScanExpiredError`, and the caller starts a new pinned scan after
the last key it has.
"""

from __future__ import annotations

from typing import Any

from ..errors import ScanExpiredError
from .arrow_pages import arrow_page
from .records import ReplScan, ScanResult

__all__ = ["ScanPins"]


class ScanPins:
    """The pinned views one replica holds: ``id -> (view, position, last used tick)``."""

    def __init__(self, state, *, ttl_ticks: int, max_pins: int = 64):
        self.state = state
        self.ttl_ticks = max(1, ttl_ticks)
        self.max_pins = max(1, max_pins)
        self._pins: dict[int, list] = {}
        self._next = 1
        self.expired = 0

    def open(self, now: int, position: tuple[int, int]) -> int:
        """Pin the state as it is now (at log ``position``); returns the pin's id."""
        if len(self._pins) >= self.max_pins:  # the least recently used gives way
            oldest = min(self._pins, key=lambda i: self._pins[i][2])
            self.close(oldest)
            self.expired += 1
        pin, self._next = self._next, self._next + 1
        self._pins[pin] = [self.state.pin(), position, now]
        return pin

    def view(self, pin: int, now: int) -> tuple[Any, tuple[int, int]]:
        """The view and position of ``pin`` (refused if it expired or was never here)."""
        entry = self._pins.get(pin)
        if entry is None:
            raise ScanExpiredError(f"scan pin {pin} is not held here (it expired, or the replica restarted); "
                                   f"start a new scan after the last key read", pin=pin)
        entry[2] = now
        return entry[0], entry[1]

    def serve(self, req: ReplScan, limit: int, now: int, node: str, position: tuple[int, int] | None) -> ScanResult:
        """A page of ``req``: from its pin's view and position (``req.pin > 0``), from a view pinned
        now at ``position`` (``-1``), or from the state as it is at ``position`` (``0``). A pin is
        released with the page that ends its scan."""
        if req.pin > 0:
            view, position = self.view(req.pin, now)
            pin = req.pin
        elif req.pin == -1:
            assert position is not None
            pin = self.open(now, position)
            view = self._pins[pin][0]
        else:
            pin, view = 0, None
        assert position is not None
        if req.arrow:
            batch, rows = arrow_page(self.state, req.start, req.end, limit, view)
            keys, values = (), ()
        else:
            keys, values = self.state.scan(req.start, req.end, limit, view)
            batch, rows = b"", len(keys)
        more = rows >= limit
        if pin and not more:
            self.close(pin)
        return ScanResult(keys, values, more, position[0], position[1], node, pin if more else 0, batch)

    def close(self, pin: int) -> None:
        """Release ``pin`` (no-op if it is gone)."""
        entry = self._pins.pop(pin, None)
        if entry is not None:
            self.state.unpin(entry[0])

    def expire(self, now: int) -> None:
        """Release the pins not used for ``ttl_ticks``."""
        for pin in [p for p, e in self._pins.items() if now - e[2] > self.ttl_ticks]:
            self.close(pin)
            self.expired += 1

    def close_all(self) -> None:
        """Release every pin (the replica's state is being replaced or closed)."""
        for pin in list(self._pins):
            self.close(pin)

    def __len__(self) -> int:
        return len(self._pins)
