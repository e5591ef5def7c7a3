"""The background asyncio loop behind every batching client (RaftKV's, the replicated store's).

Theory of operation: a client answers its caller's thread with
:class:`concurrent.futures.Future` s and does its actor calls from one asyncio
loop in a daemon thread of its own, where ``_pump`` (the subclass's coroutine)
drains the queued operations into batches. :class:`LoopClient` owns that loop:
it starts the thread and waits until ``_pump`` is scheduled, stops it by
cancelling every task and letting them finish cancelling (so asyncio never
reports a task "destroyed but pending"), and turns a caller's wait that runs
out into :class:`~ddia_ray.errors.CallTimeoutError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from ..errors import CallTimeoutError, MessageDroppedError
from .calls import await_result
from .futures import FutureFamily
from .links import ClientLinks, ReplyTooLarge

__all__ = ["LoopClient", "run_pump", "wait_doorbell", "await_within"]


async def wait_doorbell(bell: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``bell`` is set or ``timeout_s`` passes, whichever is first (the caller clears it).

    What ``asyncio.wait_for(bell.wait(), timeout_s)`` does, without the task, the waiter future and
    the callbacks ``wait_for`` makes per call (a pump waits once per wake-up). Measured on this
    project's VM it did not move a blocking query's client-side CPU, whose cost lay elsewhere (see
    :mod:`.direct_links`); it is simply the cheaper of two equal waits. A timeout rings the bell
    itself, which to a pump means the same: look at the queues again.
    """
    if bell.is_set():
        return
    timer = asyncio.get_running_loop().call_later(timeout_s, bell.set)
    try:
        await bell.wait()
    finally:
        timer.cancel()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


async def await_within(fut: asyncio.Future, timeout_s: float) -> Any:
    """The result of ``fut``, or :class:`asyncio.TimeoutError` (``fut`` then fails with it) after
    ``timeout_s``: ``asyncio.wait_for`` for a plain future, with one timer instead of its waiter
    future and callbacks (see :func:`wait_doorbell`)."""
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


def run_pump(loop: asyncio.AbstractEventLoop, pump, started: threading.Event) -> None:
    """Run ``pump()`` on ``loop`` in this thread until the loop is stopped, then cancel what is left
    and close the loop: the body of a thread that owns an asyncio loop (clients, services)."""
    asyncio.set_event_loop(loop)
    loop.create_task(pump())
    started.set()
    loop.run_forever()
    # Let the cancelled tasks finish cancelling, then release the loop (no "Task was destroyed").
    # Cancel again while any is left: before Python 3.12, asyncio.wait_for can swallow a
    # cancellation that arrives as its inner wait completes, and a pump loop waiting with it
    # then runs on (a close took the join's full 5 s, and the thread lived on).
    for _ in range(100):
        pending = {t for t in asyncio.all_tasks(loop) if not t.done()}
        if not pending:
            break
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.wait(pending, timeout=0.05))
    loop.close()


class LoopClient:
    """Base of the batching clients: the loop thread, its stop, ``with`` support and blocking waits.

    A subclass sets ``timeout_s``, defines ``async def _pump(self)``, calls :meth:`_start_loop`
    at the end of its constructor and :meth:`_stop_loop_thread` from its ``close``. ``self._wake``
    (an :class:`asyncio.Event`) is the pump's doorbell.
    """

    timeout_s: float

    _links: ClientLinks | None = None
    _family: FutureFamily | None = None

    def _new_future(self) -> concurrent.futures.Future:
        """A pending future for one operation: of the client's :class:`~.futures.FutureFamily`, which
        makes thousands in flight cheap (see :mod:`.futures`)."""
        family = self._family
        if family is None:
            family = self._family = FutureFamily()
        return family.new()

    def _finish(self, outcomes) -> None:
        """Finish futures from :meth:`_new_future`: ``(future, result, exception)`` each (see
        :meth:`~.futures.FutureFamily.finish`; those done already are left as they are)."""
        if self._family is not None:  # none made yet: nothing to finish
            self._family.finish(outcomes)

    async def _request(self, node: str, handle: Any, src: str, data: bytes, timeout_s: float, what: str) -> bytes:
        """One request (encoded) to a core's shell, ``handle``, as ``src``; the encoded reply.

        It goes on the client's direct link to the shell when one is up (see
        :mod:`~ddia_ray.runtime.links`), else as a Ray call while a link opens. Raises
        :class:`CallTimeoutError` after ``timeout_s``, and :class:`MessageDroppedError` when the
        link broke with the request unanswered (its outcome is unknown either way).
        """
        links = self._links
        if links is None:
            import ray

            links = self._links = ClientLinks(src, ray.get_runtime_context().get_node_id())
        fut = links.request(node, handle, data)
        if fut is not None:
            try:
                return await await_within(fut, timeout_s)
            except ReplyTooLarge:
                pass  # a read's bulk answer: again through Ray (a write's retry is made safe by its session)
            except asyncio.TimeoutError:
                raise CallTimeoutError(f"{what} did not answer within {timeout_s}s") from None
            except ConnectionError as e:
                raise MessageDroppedError(f"{what}: {e}") from None
        return await await_result(handle.request.remote(src, data), timeout_s, what)

    def _start_loop(self, thread_name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=thread_name, daemon=True)
        self._thread.start()
        started.wait()

    async def _pump(self) -> None:  # pragma: no cover - every client defines it
        raise NotImplementedError

    def _run(self, started: threading.Event) -> None:
        run_pump(self._loop, self._pump, started)

    def _stop_loop_thread(self) -> None:
        """Cancel every task of the loop, stop it and wait (up to 5 s) for its thread."""
        self._loop.call_soon_threadsafe(self._stop_loop)
        self._thread.join(5)

    def _stop_loop(self) -> None:
        if self._links is not None:
            self._links.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.stop()

    def _wait(self, fut: concurrent.futures.Future, timeout_s: float | None) -> Any:
        """The result of ``fut``, waiting ``timeout_s`` (default: the client's) plus a second of slack."""
        try:
            return fut.result(timeout=(timeout_s or self.timeout_s) + 1.0)
        except concurrent.futures.TimeoutError:
            if fut.done():  # the operation's own error, itself a TimeoutError (a quorum not reached): as it is
                raise
            raise CallTimeoutError("the operation did not complete in time; its outcome is unknown") from None

    def close(self) -> None:  # pragma: no cover - every client defines it
        """Fail what is pending and stop the loop."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
