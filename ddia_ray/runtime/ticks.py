"""How many ticks a shell owes its core, so that the core's time keeps pace with the clock.

A core measures time in ticks (:attr:`~ddia_ray.runtime.core.BaseCore.now_s`). A shell that
ticks once per ``asyncio.sleep(tick_s)`` counts slower than the clock by every delay of its event
loop: under CPU load the loop wakes late, and a core's "second" stretches. For most cores that
is harmless, or even the safe direction (a slow follower suspects its leader later). For a lease
holder it is not: a leader whose ticks run slow believes its lease holds after every other replica
has seen it lapse, which breaks the clock-drift bound the lease rests on (Gray and Cheriton's
leases; DDIA 8.3, "Process Pauses"). A core that says so (``BaseCore.clock_ticks``) is therefore
ticked by a :class:`TickPacer`: after a late wake-up it gets every tick it missed, in one burst,
and its tick count stays within one tick of the time elapsed since it started. Time spent paused
by the nemesis counts too, as it would for a process that was stopped and continued.
"""

from __future__ import annotations

from .._validate import positive

__all__ = ["TickPacer"]


class TickPacer:
    """The ticks due at a time, from a start time and a period (pure: the caller reads the clock)."""

    def __init__(self, tick_s: float, start: float):
        self.tick_s = positive("tick_s", tick_s)
        self.start = start
        self.ticks = 0  # delivered so far; tick k falls due at start + k * tick_s

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until the next tick is due (0 when one is due already)."""
        return max(0.0, self.start + (self.ticks + 1) * self.tick_s - now)

    def due(self, now: float) -> int:
        """How many ticks fell due up to ``now`` since the last call; the caller delivers them all."""
        # Counted from the start, not summed step by step, so float error never accumulates; the
        # epsilon keeps a tick whose due time is ``now`` up to rounding from waiting one more period.
        elapsed = int((now - self.start) / self.tick_s + 1e-9)
        n = max(0, elapsed - self.ticks)
        self.ticks += n
        return n
