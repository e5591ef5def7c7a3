"""Watches: one long poll per client feeds every watch of that client, each at its own revision.

Theory of operation
-------------------
etcd multiplexes every watch of a client over one gRPC stream. Here the
equivalent is one thread per :class:`~.client.ConfigClient` (started with
its first watch) that loops on the ``config.changes`` query
(:mod:`.queries`) as a *blocking query*: the replica answers at once if a
revision at or after ``start`` exists, and otherwise holds the request until
a write makes one exist, or ``wait_s`` passes (Consul's blocking queries,
Kubernetes' watch by ``resourceVersion``). So a change reaches a watcher in
one round trip, and an idle watcher costs one parked request per ``wait_s``.

Each round asks for the revisions from ``start = min(watch.revision + 1)``
over the client's watches, filtered by the union of their keys and
prefixes, in a page of at most ``page`` events; the answer says where the next
round starts. Then each watch that was part of the round gets the events of
its keys above its own revision, in one callback, and its revision moves to
the end of the page: a new watch that starts behind the others reads history
the others skip, and catches up with them.

Why this cannot miss or repeat a revision: a watch's state is one number,
the last revision it has been given (``Watch.revision``), and every round
asks the store for what lies *above* it, whatever replica answers. A replica
that lags answers less (or waits); a failover, a new client, or a restarted
process continues from ``revision + 1`` (pass ``start_revision=w.revision +
1``): the store's revision log is the same on every replica, so what comes
after a revision is the same wherever it is read (DDIA 11, "log-based message
brokers": a consumer's offset is all it needs).

A watch whose next revision was compacted while it lagged cannot continue
without a gap: it stops with :class:`~ddia_ray.errors.CompactedError`. A
callback that raises stops its watch too. Both reach ``on_error`` and stay in
``Watch.error``; the other watches go on. Errors of the round itself (a
timeout during a failover, an unreachable replica) are retried with a short
backoff: the next round asks for the same revisions again.

Lock order: one lock, the hub's ``_lock``, guards the list of watches and
each watch's revision; it is never held while calling the store or a callback.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable

from ..errors import CompactedError, DdiaRayError
from .records import event_from_row

__all__ = ["Watch", "WatchHub", "changes_nowait"]

_log = logging.getLogger(__name__)
#: How long the watch thread waits before asking again after a failed round (doubling up to the max).
_BACKOFF_S, _BACKOFF_MAX_S = 0.01, 0.5


def changes_nowait(backend: Any, start: int, ranges: tuple | None, page: int,
                   wait_s: float) -> concurrent.futures.Future:
    """One round of the watch feed from revision ``start``: a blocking query held up to ``wait_s``
    by the replica while there is nothing at or after ``start``."""
    return backend.query_nowait("config.changes", (start, ranges, page), wait_s=wait_s)


class Watch:
    """One watch of a key or a prefix (see the module docstring). ``revision`` is the last revision
    delivered (the watch resumes after it); ``cancel()`` stops it."""

    def __init__(self, hub: "WatchHub", key: str, prefix: bool, callback: Callable[[list], Any],
                 start_revision: int, on_error: Callable[[BaseException], Any] | None):
        self._hub = hub
        self.key, self.prefix = key, prefix
        self.callback, self.on_error = callback, on_error
        #: The last revision given to this watch (every change of its keys up to it was delivered).
        self.revision = start_revision - 1
        #: Why the watch stopped on its own (None while it runs, or after :meth:`cancel`).
        self.error: BaseException | None = None
        self.cancelled = False
        self._progress = threading.Condition(hub._lock)

    def matches(self, key: str) -> bool:
        """Whether a change of ``key`` belongs to this watch."""
        return key.startswith(self.key) if self.prefix else key == self.key

    def cancel(self) -> None:
        """Stop the watch: no callback after this returns (except one already running)."""
        self._hub.remove(self)

    def wait_revision(self, revision: int, timeout_s: float = 10.0) -> bool:
        """Wait until every change up to ``revision`` has been delivered; False if the watch stopped
        or ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self.revision < revision and not self.cancelled:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(left)
            return self.revision >= revision

    def __repr__(self) -> str:
        kind = "prefix" if self.prefix else "key"
        return f"Watch({kind}={self.key!r}, revision={self.revision}, cancelled={self.cancelled})"


class WatchHub:
    """The watches of one client and the thread that feeds them (see the module docstring)."""

    def __init__(self, client: Any, *, wait_s: float, page: int):
        self.client = client
        self.wait_s, self.page = wait_s, page
        self._lock = threading.Lock()
        self._watches: list[Watch] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def add(self, key: str, prefix: bool, callback: Callable[[list], Any], start: int,
            on_error: Callable[[BaseException], Any] | None) -> Watch:
        """A new watch from revision ``start``; starts the watch thread with the first one."""
        w = Watch(self, key, prefix, callback, start, on_error)
        with self._lock:
            if self._closed:
                from ..errors import ConfigError

                raise ConfigError("the client is closed")
            self._watches.append(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
                self._thread.start()
        self._wake.set()  # a round in flight does not ask for this watch's keys: start a new one
        return w

    def remove(self, w: Watch) -> None:
        """Stop ``w``."""
        with self._lock:
            w.cancelled = True
            if w in self._watches:
                self._watches.remove(w)
            w._progress.notify_all()

    def active(self) -> list[Watch]:
        """The watches still running."""
        with self._lock:
            return list(self._watches)

    def close(self) -> None:
        """Cancel every watch and stop the thread."""
        with self._lock:
            self._closed = True
            watches, self._watches = self._watches, []
            for w in watches:
                w.cancelled = True
                w._progress.notify_all()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.wait_s + 5.0)

    # --- the watch thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_S
        while True:
            with self._lock:
                if self._closed:
                    return
                watches = list(self._watches)
            if not watches:
                self._wake.wait(self.wait_s)
                self._wake.clear()
                continue
            start = min(w.revision for w in watches) + 1
            ranges = tuple(sorted({(w.key, w.prefix) for w in watches}))
            self._wake.clear()
            try:
                fut = changes_nowait(self.client.backend, start, ranges, self.page, self.wait_s)
                fut.add_done_callback(lambda _: self._wake.set())
                while not fut.done():
                    self._wake.wait()
                    self._wake.clear()
                    if not fut.done() and self._changed(watches):
                        break  # a watch came or went: ask again for the new set (this answer is dropped)
                if not fut.done():
                    continue
                answer = fut.result()
            except CompactedError as e:
                self._fail_compacted(watches, e)
                continue
            except Exception as e:  # noqa: BLE001 - a failed round is asked again, never the end of the watches
                # A failover or an unreachable replica: the next round asks for the same revisions.
                with self._lock:
                    if self._closed:
                        return
                if isinstance(e, (DdiaRayError, TimeoutError, concurrent.futures.TimeoutError)):
                    _log.debug("watch round from revision %d failed (%s); retrying", start, e)
                else:
                    _log.error("watch round from revision %d failed unexpectedly; retrying", start, exc_info=e)
                time.sleep(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = _BACKOFF_S
            self.rounds += 1
            if answer == () or answer is None:
                continue  # waited wait_s with nothing new
            rows, nxt = answer
            self._deliver(watches, [event_from_row(r) for r in rows], nxt - 1)

    def _changed(self, watches: list[Watch]) -> bool:
        with self._lock:
            return self._closed or self._watches != watches

    def _deliver(self, watches: list[Watch], events: list, upto: int) -> None:
        for w in watches:
            with self._lock:
                if w.cancelled:
                    continue
                mine = [e for e in events if e.revision > w.revision and w.matches(e.kv.key)]
            if mine:
                try:
                    w.callback(mine)
                except Exception as e:  # noqa: BLE001 - the callback's failure stops its own watch, reported
                    self._stop(w, e)
                    continue
            with self._lock:
                if not w.cancelled and upto > w.revision:
                    w.revision = upto
                w._progress.notify_all()

    def _fail_compacted(self, watches: list[Watch], e: CompactedError) -> None:
        """Stop the watches whose next revision was compacted (the others go on)."""
        behind = [w for w in watches if w.revision + 1 < e.oldest_kept]
        for w in behind:
            err = CompactedError(f"watch of {w.key!r} needs revision {w.revision + 1}, which was compacted: the "
                                 f"oldest revision kept is {e.oldest_kept}; read the current values and watch "
                                 f"from there", requested=w.revision + 1, oldest_kept=e.oldest_kept)
            self._stop(w, err)
        if not behind:
            time.sleep(_BACKOFF_S)  # compacted between the round and the check: ask again

    def _stop(self, w: Watch, error: BaseException) -> None:
        with self._lock:
            w.error = error
        self.remove(w)
        if w.on_error is not None:
            try:
                w.on_error(error)
            except Exception:  # noqa: BLE001 - the handler of an error failing too: logged, not lost
                _log.exception("on_error of %r raised", w)
        else:
            _log.error("watch %r stopped: %s", w, error)
