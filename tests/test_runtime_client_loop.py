"""The batching clients' loop thread stops on close, even when a task swallows a cancellation (as
asyncio.wait_for can before Python 3.12 when the cancellation meets its inner wait completing)."""

from __future__ import annotations

import asyncio

from ddia_ray.runtime.client_loop import LoopClient


class _Stubborn(LoopClient):
    """A pump that ignores the first two cancellations, then stops."""

    timeout_s = 1.0

    def __init__(self):
        self.ignored = 0
        self._start_loop("stubborn")

    async def _pump(self) -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.ignored >= 2:
                    raise
                self.ignored += 1  # swallowed: the loop goes on, as a racing wait_for lets it

    def close(self) -> None:
        self._stop_loop_thread()


def test_close_stops_the_loop_thread_through_swallowed_cancellations():
    client = _Stubborn()
    client.close()
    assert client.ignored == 2 and not client._thread.is_alive()
    assert client._loop.is_closed()
