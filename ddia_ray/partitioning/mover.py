"""One change of a partitioned store's map (split, merge or move) as a pure step machine.

Theory of operation
-------------------
:class:`Mover` performs one change exactly as the protocol in :mod:`.changes` says, and does no
I/O: like etcd raft's ``Step``/``Ready``, the driver takes the requests to send from
:meth:`Mover.ready`, sends them, and hands every answer back with :meth:`Mover.on_reply` or
:meth:`Mover.on_failure`; :meth:`Mover.tick` lets time pass (retries wait a few ticks). The same
mover runs on Ray (:mod:`.changes`) and in the seeded simulation (:mod:`.simulation`). Its
requests, each with a ``token`` that names it in the answer:

* ``GroupRequest``: to the leader of replica group ``group``, a ``ReplScan`` (answered with a
  ``ScanResult``), an unfenced ``ReplWrite`` or a ``ReplOwnership`` (answered once applied);
* ``ReadMap``: to the coordination service, answered with the current ``PartitionMap``;
* ``CasMap``: to the coordination service, answered True if the map was ``old`` and is ``new`` now.

The phases of each kind of change are the plans in :data:`PLANS` (the table drives the code).
A failure of a request is retried (the same request, same token, after ``retry_ticks``), then:

* before the new map is computed (``READ_MAP``, ``MIDDLE``): the change fails, nothing was touched;
* before the new map is published: the change is *abandoned* (:data:`ABANDON_PLANS`). It waits for
  every request still in flight, gives each group whose record it changed (the last changed
  first, so that a destination gives up the partition before the source takes writes again) the
  record of the old map at ``v + 1``, publishes ``old.bumped()`` and, for a move, clears the
  destination's copy;
* after it published, or while it abandons: it retries ``settle_retries`` times, then fails
  loudly (the store needs an operator; the error says what is left).

A compare-and-set whose outcome is unknown (its request failed) is resolved by reading the map:
``new`` means it was published, ``old`` that it may be tried again, anything else that another
writer changed the map (refused). Until the map has been read the change cannot be abandoned
(abandoning a published map would give the partition back to its source while the map names the
destination; the seeded simulation found this): it keeps asking, then fails loudly.
"""

from __future__ import annotations

import dataclasses
import itertools
from types import MappingProxyType
from typing import Any, Callable

from .._validate import invariant
from ..errors import ConfigError, InvalidArgumentError, PartitionError
from ..replication.ownership import ReplOwnership
from ..replication.records import DELETE, PUT, ReplScan, ReplWrite
from .keyspace import HASH_BYTES
from .partition_map import PartitionMap, ownership_of

__all__ = ["Mover", "GroupRequest", "ReadMap", "CasMap", "Outcome", "PLANS", "ABANDON_PLANS", "READ_MAP", "MIDDLE",
           "RECORD", "CLEAR_DST", "COPY", "FREEZE", "CATCH_UP", "DST_RECORD", "PUBLISH", "SRC_RECORD", "CLEAN_SRC",
           "DONE", "ABANDON_RECORDS", "ABANDON_PUBLISH", "ABANDON_CLEAR", "ABANDONED", "FAILED"]

READ_MAP, MIDDLE, RECORD, PUBLISH, DONE = "read map", "middle", "record", "publish", "done"
CLEAR_DST, COPY, FREEZE, CATCH_UP = "clear destination", "copy", "freeze", "catch up"
DST_RECORD, SRC_RECORD, CLEAN_SRC = "destination record", "source record", "clean source"
ABANDON_RECORDS, ABANDON_PUBLISH, ABANDON_CLEAR = "abandon: records", "abandon: publish", "abandon: clear"
ABANDONED, FAILED = "abandoned", "failed"

#: The phases of each change, in order (the module docstring of :mod:`.changes` explains each).
PLANS = MappingProxyType({
    "split": (READ_MAP, MIDDLE, RECORD, PUBLISH, DONE),
    "merge": (READ_MAP, RECORD, PUBLISH, DONE),
    # The source gives the partition up before the map naming the destination is published: else a
    # client still holding the old map could read the source's frozen copy after another client
    # wrote to the destination (a stale read a Jepsen run found; changes.py, "A move").
    "move": (READ_MAP, CLEAR_DST, COPY, FREEZE, CATCH_UP, DST_RECORD, SRC_RECORD, PUBLISH, CLEAN_SRC, DONE),
})
#: What a change that cannot publish does instead.
ABANDON_PLANS = MappingProxyType({
    "split": (ABANDON_RECORDS, ABANDON_PUBLISH, ABANDONED),
    "merge": (ABANDON_RECORDS, ABANDON_PUBLISH, ABANDONED),
    "move": (ABANDON_RECORDS, ABANDON_PUBLISH, ABANDON_CLEAR, ABANDONED),
})
_UNTOUCHED = frozenset({READ_MAP, MIDDLE})  # a failure here fails the change: nothing was changed yet
_SETTLING = frozenset({CLEAN_SRC, ABANDON_RECORDS, ABANDON_PUBLISH, ABANDON_CLEAR})
_SCAN_READ = "linearizable"  # a page reflects every write acknowledged before it was asked for


@dataclasses.dataclass(frozen=True, slots=True)
class GroupRequest:
    """Send ``request`` to replica group ``group``'s leader; ``attempt`` > 0: a resend of the same
    request after a failure (a driver with write sessions sends it under the same sequence number)."""

    token: int
    group: str
    request: Any
    attempt: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ReadMap:
    """Read the current map from the coordination service."""

    token: int
    attempt: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CasMap:
    """Replace map ``old`` by ``new`` in the coordination service if it is still ``old``."""

    token: int
    old: PartitionMap
    new: PartitionMap
    attempt: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How a change ended: ``state`` is ``"done"``, ``"abandoned"`` or ``"failed"``; ``published``
    the map it published (the new one, the old one bumped, or None); ``error`` why it did not finish;
    ``copied``, ``caught_up``, ``cleared`` and ``cleaned`` count keys and operations of a move."""

    kind: str
    state: str
    published: PartitionMap | None
    error: BaseException | None
    copied: int = 0
    caught_up: int = 0
    cleared: int = 0
    cleaned: int = 0
    ticks: int = 0
    phase: str = ""  # the phase it ended in (the one that failed, for a failed change)


@dataclasses.dataclass
class _Pending:
    out: Any
    on_ok: Callable[[Any], None]
    on_error: Callable[[BaseException], None] | None
    attempts: int = 0


class Mover:
    """One split, merge or move of store ``store`` (see the module docstring); build it with
    :meth:`split`, :meth:`merge` or :meth:`move`. ``page_rows`` keys per scan page and write,
    ``max_in_flight`` writes at once, ``retries`` resends of a failed request before the change
    is abandoned (``settle_retries`` once it must finish), ``retry_ticks`` ticks between them,
    ``ownership_acks`` followers that acknowledge a record (-1: the group's protocol decides)."""

    def __init__(self, store: str, kind: str, pid: int, arg: Any = None, *, page_rows: int = 1000,
                 max_in_flight: int = 4, retries: int = 2, settle_retries: int = 20, retry_ticks: int = 5,
                 ownership_acks: int = -1):
        if kind not in PLANS:
            raise InvalidArgumentError(f"a change is one of {tuple(PLANS)}, got {kind!r}")
        for name, value, low in (("page_rows", page_rows, 1), ("max_in_flight", max_in_flight, 1),
                                 ("retries", retries, 0), ("settle_retries", settle_retries, 0),
                                 ("retry_ticks", retry_ticks, 0), ("ownership_acks", ownership_acks, -1)):
            if type(value) is not int or value < low:
                raise InvalidArgumentError(f"{name} is an int >= {low}, got {value!r}")
        self.store, self.kind, self.pid, self.arg = store, kind, pid, arg
        self.page_rows, self.max_in_flight, self.retry_ticks = page_rows, max_in_flight, retry_ticks
        self.retries, self.settle_retries, self.ownership_acks = retries, settle_retries, ownership_acks
        self.old: PartitionMap | None = None
        self.new: PartitionMap | None = None
        self.touched: list[str] = []  # groups whose record this change sent, in order
        self.counts = {"copied": 0, "caught_up": 0, "cleared": 0, "cleaned": 0}
        self.outcome: Outcome | None = None
        self.cause: BaseException | None = None  # why the change is being abandoned
        self.ticks = 0
        self._plan = PLANS[kind]
        self._step = 0
        self.phase = self._plan[0]
        self._ph: dict[str, Any] = {}  # the current phase's own state, reset on entry
        self._tokens = itertools.count(1)
        self._issued = 0
        self._out: list = []
        self._pending: dict[int, _Pending] = {}
        self._retry_at: list[tuple[int, int]] = []  # (tick, token) of resends waiting
        self._orphans: set[int] = set()  # requests of an abandoned phase still in flight
        self._pump()

    @classmethod
    def split(cls, store: str, pid: int, at: bytes | None = None, **options: Any) -> "Mover":
        """Cut partition ``pid`` at routing key ``at`` (None: its middle)."""
        return cls(store, "split", pid, at, **options)

    @classmethod
    def merge(cls, store: str, left: int, right: int, **options: Any) -> "Mover":
        """Join partition ``right`` into its left neighbour ``left``."""
        return cls(store, "merge", left, right, **options)

    @classmethod
    def move(cls, store: str, pid: int, group: str, **options: Any) -> "Mover":
        """Give partition ``pid`` to replica group ``group``."""
        return cls(store, "move", pid, group, **options)

    # --- inputs and outputs ---------------------------------------------------------------------

    def ready(self) -> tuple:
        """The requests to send now (each returned once)."""
        out, self._out = tuple(self._out), []
        return out

    def on_reply(self, token: int, result: Any) -> None:
        """The answer to request ``token``."""
        invariant(0 < token <= self._issued, f"an answer to request {token}, which this mover never sent")
        p = self._pending.pop(token, None)
        if p is None:
            self._orphans.discard(token)  # an answer nobody waits for any more (abandoned, or a duplicate)
        else:
            p.on_ok(result)
        self._pump()

    def on_failure(self, token: int, error: BaseException) -> None:
        """Request ``token`` failed (after the driver's own retries): its outcome is unknown."""
        invariant(0 < token <= self._issued, f"a failure of request {token}, which this mover never sent")
        p = self._pending.get(token)
        if p is None:
            self._orphans.discard(token)
        elif p.on_error is not None:
            del self._pending[token]
            p.on_error(error)
        elif p.attempts < self._limit():
            p.attempts += 1
            self._retry_at.append((self.ticks + self.retry_ticks, token))
        else:
            del self._pending[token]
            self._fail(error)
        self._pump()

    def tick(self) -> None:
        """Time passes: resends whose wait is over go out."""
        self.ticks += 1
        due = [t for at, t in self._retry_at if at <= self.ticks]
        if due:
            self._retry_at = [(at, t) for at, t in self._retry_at if at > self.ticks]
            for token in due:
                p = self._pending.get(token)
                if p is not None:
                    self._out.append(dataclasses.replace(p.out, attempt=p.attempts))
        self._pump()

    # --- plumbing -------------------------------------------------------------------------------

    def _limit(self) -> int:
        return self.settle_retries if self._settling() else self.retries

    def _send(self, make: Callable[[int], Any], on_ok: Callable[[Any], None],
              on_error: Callable[[BaseException], None] | None = None) -> None:
        token = next(self._tokens)
        self._issued = token
        out = make(token)
        self._pending[token] = _Pending(out, on_ok, on_error)
        self._out.append(out)

    def _to_group(self, group: str, request: Any, on_ok: Callable[[Any], None]) -> None:
        self._send(lambda t: GroupRequest(t, group, request), on_ok)

    def _pump(self) -> None:
        """Run the current phase; enter the next one each time a phase completes."""
        while self.outcome is None and not self._orphans:
            if not _WORK[self.phase](self):
                return
            self._step += 1
            self.phase, self._ph = self._plan[self._step], {}

    def _finish(self, state: str, error: BaseException | None = None) -> bool:
        """End the change (False: for the phase table, no next phase)."""
        published = {DONE: self.new, ABANDONED: self.old.bumped() if self.old else None}.get(state)
        if state == FAILED and self.phase == CLEAN_SRC:
            published = self.new  # (after an unknown publish it may be too: the error says so)
        self.outcome = Outcome(self.kind, state, published, error, ticks=self.ticks, phase=self.phase, **self.counts)
        self.phase = state
        self._pending.clear()
        self._retry_at.clear()
        return False

    def _settling(self) -> bool:
        """Whether the change can no longer be abandoned: it published, it is abandoning, or its
        publish has an unknown outcome (abandoning a published map would give the partition back
        to the source while the map names the destination)."""
        return self.phase in _SETTLING or "unknown" in self._ph

    def _fail(self, error: BaseException) -> None:
        """A request failed for good: fail, abandon, or (settling) fail loudly; see the module docstring."""
        if self.phase in _UNTOUCHED:
            self._finish(FAILED, error)
        elif self._settling():
            left = f"the old group may hold partition {self.pid} frozen, and its keys"
            what = {PUBLISH: f"may have published map version {self._new.version} (its compare-and-set has an "
                             f"unknown outcome and the map could not be read); if so, {left}",
                    CLEAN_SRC: "published its map, but could not delete the keys it gave away"}
            err = ConfigError(f"the {self.kind} of partition {self.pid} "
                              f"{what.get(self.phase, 'could not be abandoned: the records may be ahead of the map')} "
                              f"({type(error).__name__}: {error}); run a change again or repair by hand")
            err.__cause__ = self.cause or error
            self._finish(FAILED, err)
        else:
            self._abandon(error)

    def _abandon(self, cause: BaseException) -> None:
        self.cause = cause
        self._orphans = set(self._pending) - {t for _, t in self._retry_at}  # in flight, not waiting to resend
        self._pending.clear()
        self._retry_at.clear()
        self._plan, self._step = ABANDON_PLANS[self.kind], 0
        self.phase, self._ph = self._plan[0], {}

    # --- the pieces phases are made of -----------------------------------------------------------

    def _single(self, group: str, request: Any) -> bool:
        """A phase of one request to ``group``: complete once it is answered."""
        st = self._ph
        if "sent" not in st:
            st["sent"] = True
            if isinstance(request, ReplOwnership):
                self.touched.append(group)
            self._to_group(group, request, lambda _: st.__setitem__("done", True))
        return "done" in st

    def _record(self, pmap: PartitionMap, group: str, **options: Any) -> ReplOwnership:
        return ReplOwnership(ownership_of(pmap, group, self.store, **options), self.ownership_acks)

    def _range(self) -> tuple[bytes, bytes | None]:
        p = self._old.partition(self.pid)
        return p.start, p.end

    def _pass(self, source: str, target: str | None, op: int, count: str | None) -> bool:
        """A paged pass over the partition's range of ``source``: each page's keys become one write of
        ``op`` to ``target`` (PUT: copy, DELETE: clear; None: keys kept in the phase state)."""
        st = self._ph
        lo, hi = self._range()
        st.setdefault("cursor", lo)
        if not st.get("scanning") and not st.get("end") and st.get("writes", 0) < self.max_in_flight:
            st["scanning"] = True

            def page(res: Any) -> None:
                st["scanning"] = False
                if res.keys:
                    st["cursor"] = res.keys[-1] + b"\x00"  # the next key after the last one
                    if count is not None:
                        self.counts[count] += len(res.keys)
                    if target is None:
                        st.setdefault("keys", []).extend(res.keys)
                    else:
                        ops = tuple((op, k, v if op == PUT else b"") for k, v in zip(res.keys, res.values))
                        self._write(target, ops)
                st["end"] = not (res.more and res.keys)

            self._to_group(source, ReplScan(st["cursor"], hi, self.page_rows, _SCAN_READ), page)
        return bool(st.get("end")) and not st.get("scanning") and st.get("writes", 0) == 0

    def _write(self, group: str, ops: tuple) -> None:
        st = self._ph
        st["writes"] = st.get("writes", 0) + 1
        self._to_group(group, ReplWrite(ops), lambda _: st.__setitem__("writes", st["writes"] - 1))

    def _cas(self, new: PartitionMap, refused: Callable[[], object]) -> bool:
        """Publish ``new`` over the old map; an unknown outcome is resolved by reading the map."""
        st = self._ph
        old = self._old

        def answered(ok: Any) -> None:
            if ok is True:
                st["done"] = True
            else:
                refused()

        def unknown(error: BaseException) -> None:
            st["unknown"] = True  # from now on the map must be read before anything else is decided
            st["tries"] = st.get("tries", 0) + 1
            if st["tries"] > self._limit():
                self._fail(error)
                return

            def resolve(now: Any) -> None:
                if now == new:
                    st["done"] = True
                elif now == old:
                    self._send(lambda t: CasMap(t, old, new, st["tries"]), answered, unknown)
                else:
                    refused()

            self._send(ReadMap, resolve)

        if "sent" not in st:
            st["sent"] = True
            self._send(lambda t: CasMap(t, old, new), answered, unknown)
        return "done" in st

    # --- the phases ----------------------------------------------------------------------------

    def _read_map(self) -> bool:
        st = self._ph
        if "sent" not in st:
            st["sent"] = True
            self._send(ReadMap, self._based_on)
        return self.old is not None

    def _based_on(self, pmap: Any) -> None:
        if type(pmap) is not PartitionMap:
            self._finish(FAILED, ConfigError(f"the coordination service holds a {type(pmap).__name__} "
                                             f"where the partition map belongs"))
            return
        try:
            pmap.partition(self.pid)
            if self.kind == "merge":
                self.new = pmap.merge(self.pid, self.arg)
            elif self.kind == "move":
                self.new = pmap.move(self.pid, self.arg)  # refuses a move to the group that has it
            elif self.arg is not None:
                self.new = pmap.split(self.pid, self.arg)
        except (InvalidArgumentError, PartitionError) as e:
            self._finish(FAILED, e)
            return
        self.old = pmap

    def _middle(self) -> bool:
        """A split point that halves the partition: the middle of its hashes, or its median key."""
        if self.new is not None:
            return True
        p = self._old.partition(self.pid)
        if self._old.scheme == "hash":
            lo = int.from_bytes(p.start.ljust(HASH_BYTES, b"\0"), "big")
            hi = 1 << (8 * HASH_BYTES) if p.end is None else int.from_bytes(p.end, "big")
            if hi - lo < 2:
                self._finish(FAILED, InvalidArgumentError(f"partition {self.pid} covers one hash; it cannot be split"))
                return False
            self.new = self._old.split(self.pid, ((lo + hi) // 2).to_bytes(HASH_BYTES, "big"))
            return True
        if not self._pass(p.group, None, PUT, None):
            return False
        keys = self._ph.get("keys", [])
        mid = keys[len(keys) // 2] if keys else b""
        if not keys or mid <= p.start:
            self._finish(FAILED, InvalidArgumentError(f"partition {self.pid} holds {len(keys)} key(s): no split point "
                                                      f"inside it; pass at="))
            return False
        self.new = self._old.split(self.pid, mid)
        return True

    def _src(self) -> str:
        """The group that has the partition in the old map."""
        return self._old.partition(self.pid).group

    @property
    def _old(self) -> PartitionMap:
        assert self.old is not None, "the map has not been read yet"
        return self.old

    @property
    def _new(self) -> PartitionMap:
        assert self.new is not None, "the new map has not been computed yet"
        return self.new

    def _catch_up(self) -> bool:
        """Make the destination's copy equal the frozen source's: both read page by page in key
        order, merged up to the last key both pages cover, each difference written to the copy."""
        st = self._ph
        src, dst = self._src(), self.arg
        lo, hi = self._range()
        st.setdefault("cursor", lo)
        if not st.get("asked") and not st.get("end") and st.get("writes", 0) < self.max_in_flight:
            st["asked"], st["a"], st["b"] = True, None, None

            def page(side: str) -> Callable[[Any], None]:
                def got(res: Any) -> None:
                    st[side] = res
                    if st["a"] is not None and st["b"] is not None:
                        self._merge_pages(st, dst)
                return got

            request = ReplScan(st["cursor"], hi, self.page_rows, _SCAN_READ)
            self._to_group(src, request, page("a"))
            self._to_group(dst, request, page("b"))
        return bool(st.get("end")) and not st.get("asked") and st.get("writes", 0) == 0

    def _merge_pages(self, st: dict, dst: str) -> None:
        a, b = st["a"], st["b"]
        bound = min([r.keys[-1] for r in (a, b) if r.more and r.keys], default=None)  # both pages cover <= bound
        ours = {k: v for k, v in zip(a.keys, a.values) if bound is None or k <= bound}
        theirs = {k: v for k, v in zip(b.keys, b.values) if bound is None or k <= bound}
        ops = [(PUT, k, v) for k, v in ours.items() if theirs.get(k) != v]
        ops += [(DELETE, k, b"") for k in theirs if k not in ours]  # deleted at the source since the copy
        ops.sort(key=lambda op: op[1])
        self.counts["caught_up"] += len(ops)
        if ops:
            self._write(dst, tuple(ops))
        st["asked"] = False
        if bound is None:
            st["end"] = True
        else:
            st["cursor"] = bound + b"\x00"

    def _publish(self) -> bool:
        return self._cas(self._new, lambda: self._fail(ConfigError(
            f"the partition map changed under this {self.kind} (another handle changed it without the change "
            f"lock?)")))

    def _abandon_records(self) -> bool:
        """Each group this change sent a record to gets the old map's record at the next version, in
        the reverse order of their first records (a move's destination gives the partition up
        before its source, frozen first and released last, takes writes again)."""
        st = self._ph
        # In the reverse order of each group's first record: a move's destination, then its source
        # (which the move froze first and released last).
        todo = st.setdefault("todo", list(reversed(list(dict.fromkeys(self.touched)))))
        while todo:
            if "sent" not in st:
                st["sent"] = True
                self._to_group(todo[0], self._record(self._old.bumped(), todo[0]), lambda _: st.__setitem__("done", 1))
            if "done" not in st:
                return False
            todo.pop(0)
            st.pop("sent"), st.pop("done")
        return True

    def _abandon_publish(self) -> bool:
        return self._cas(self._old.bumped(), lambda: self._finish(FAILED, ConfigError(
            f"the {self.kind} of partition {self.pid} was abandoned but the partition map changed meanwhile "
            f"(another handle changed it without the change lock?); the groups' records may be ahead of it")))


#: What each phase does, run each time something happens until it says the phase is complete. A
#: move: clear the destination's range, copy, freeze the source, catch up, the destination takes
#: the partition, the source lets it go, publish, the source deletes its copy.
_WORK: dict[str, Callable[[Mover], bool]] = {
    READ_MAP: Mover._read_map,
    MIDDLE: Mover._middle,
    RECORD: lambda m: m._single(m._src(), m._record(m._new, m._src())),
    CLEAR_DST: lambda m: m._pass(m.arg, m.arg, DELETE, "cleared"),
    COPY: lambda m: m._pass(m._src(), m.arg, PUT, "copied"),
    FREEZE: lambda m: m._single(m._src(), m._record(m._old, m._src(), version=m._new.version, frozen={m.pid})),
    CATCH_UP: Mover._catch_up,
    DST_RECORD: lambda m: m._single(m.arg, m._record(m._new, m.arg)),
    PUBLISH: Mover._publish,
    SRC_RECORD: lambda m: m._single(m._src(), m._record(m._new, m._src())),
    CLEAN_SRC: lambda m: m._pass(m._src(), m._src(), DELETE, "cleaned"),
    ABANDON_RECORDS: Mover._abandon_records,
    ABANDON_PUBLISH: Mover._abandon_publish,
    ABANDON_CLEAR: lambda m: m._pass(m.arg, m.arg, DELETE, "cleared"),
    DONE: lambda m: m._finish(DONE),
    ABANDONED: lambda m: m._finish(ABANDONED, m.cause),
}
