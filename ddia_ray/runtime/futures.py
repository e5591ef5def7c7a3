"""Futures for batching clients: :class:`concurrent.futures.Future` objects that share one condition.

Theory of operation
-------------------
A batching client (:mod:`.client_loop`) answers each operation with its own future, and keeps
thousands in flight: a put does little more than make one. A standard future makes a condition
of its own, and the condition an RLock and five bound methods: about ten objects the cycle
collector tracks per operation. Thousands of them in flight outlive the young generations, and
their promotion sets off full collections of the caller's whole process (the Ray driver's modules
included). In a driver writing to a leaderless store at 30,000 puts a second, 40% of its samples
were in making futures and the collections they set off (py-spy, 2026-12-06,
docs/conflicts.md).

The futures of one :class:`FutureFamily` share one condition. To a caller they are
:class:`concurrent.futures.Future` in every way: ``result`` and ``exception`` with timeouts,
``cancel``, done callbacks, :func:`concurrent.futures.wait` and ``as_completed``,
:func:`asyncio.wrap_future`. Inside, waiting differs: finishing one future wakes every thread that
waits on any future of the family, so ``result`` and ``exception`` wait in a loop until their own
future is done or their time is up, where the standard methods wait once (a notification there is
always theirs). The condition's lock is re-entrant, so :func:`concurrent.futures.wait`, which
takes the lock of each future it watches, takes the family's several times over.

The standard fields (``_condition``, ``_state``, ``_result``, ``_exception``, ``_waiters``,
``_done_callbacks``) are set as :class:`concurrent.futures.Future` sets them, a private layout
CPython has kept since 3.2; the tests hold it to the public behaviour.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from concurrent.futures import _base
from typing import Any

from ..errors import InvalidArgumentError

__all__ = ["FutureFamily", "FamilyFuture", "settle"]

_DONE = frozenset({_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED})


class FamilyFuture(concurrent.futures.Future):
    """A future of a :class:`FutureFamily` (see the module docstring). Make them with
    :meth:`FutureFamily.new`."""

    def __init__(self, condition: threading.Condition):  # noqa: D107 - the family's, see FutureFamily.new
        # concurrent.futures.Future.__init__'s fields, with the family's condition for its own
        self._condition = condition
        self._state = _base.PENDING
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []

    def _await_done(self, timeout: float | None) -> None:
        """Wait (holding the condition) until this future is done or ``timeout`` passes."""
        if timeout is None:
            while self._state not in _DONE:
                self._condition.wait()
            return
        deadline = time.monotonic() + timeout
        while self._state not in _DONE:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._condition.wait(left)

    def done(self) -> bool:
        """Whether the future is done (cancelled or finished). Read without the lock: the state is one
        attribute, and once done it stays done (a pump asks this of every future it drains)."""
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> Any:
        """The result, waiting up to ``timeout`` seconds (see :meth:`concurrent.futures.Future.result`)."""
        if self._state == _base.FINISHED and self._exception is None:
            # Finished for good (a future's state never leaves FINISHED, and finish() sets the result
            # before the state): no lock to take. A caller draining thousands of answered futures took
            # the family's lock once each, in turn with the loop thread finishing the next batch.
            return self._result
        with self._condition:
            self._await_done(timeout)
            return super().result(0)  # the standard answer for the state reached: TimeoutError if none

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception, waiting up to ``timeout`` seconds (see
        :meth:`concurrent.futures.Future.exception`)."""
        with self._condition:
            self._await_done(timeout)
            return super().exception(0)


class FutureFamily:
    """Makes futures that share one condition (see the module docstring): one family per client."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.RLock())

    def new(self) -> FamilyFuture:
        """A pending future of this family."""
        return FamilyFuture(self._condition)

    def finish(self, outcomes) -> None:
        """Finish many futures of this family at once: ``outcomes`` of ``(future, result, exception)``,
        each set to its exception when that is not None, else to its result. Futures already done
        (cancelled, or failed by a timeout meanwhile) are left as they are. What ``set_result`` and
        ``set_exception`` do for each, with the lock taken and the waiters woken once for all (a
        reply finishes a batch of a thousand)."""
        finished = []
        with self._condition:
            for fut, result, exc in outcomes:
                if fut._condition is not self._condition:
                    raise InvalidArgumentError("finish() takes futures of its own family")
                if fut._state in _DONE:
                    continue
                if exc is None:
                    fut._result, fut._state = result, _base.FINISHED
                    for waiter in fut._waiters:
                        waiter.add_result(fut)
                else:
                    fut._exception, fut._state = exc, _base.FINISHED
                    for waiter in fut._waiters:
                        waiter.add_exception(fut)
                if fut._done_callbacks:
                    finished.append(fut)
            self._condition.notify_all()
        for fut in finished:
            fut._invoke_callbacks()


def settle(fut: concurrent.futures.Future, result: Any = None, exc: BaseException | None = None) -> bool:
    """Finish ``fut`` with ``exc`` (when not None) or ``result``, unless it is done already; whether
    this call finished it. A client's futures are finished from its loop thread (a reply, a timeout)
    and from the caller's (``close``), so a check of ``done()`` followed by a set can lose the race
    between them, and the standard set then raises ``InvalidStateError`` into whoever came second:
    once, in a loaded CI run, into a user's ``with`` block, hiding the timeout it was leaving with.
    The set itself checks under the future's lock, so this asks it and takes no for an answer."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except concurrent.futures.InvalidStateError:
        return False
    return True
