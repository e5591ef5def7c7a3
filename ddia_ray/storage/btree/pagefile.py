"""A crash-safe copy-on-write page file in the style of LMDB.

Theory of operation
-------------------
The file is an array of fixed-size pages; page ``n`` starts at byte
``n * page_size``. Pages 0 and 1 are the two *meta* pages; every other page
is a tree node, an overflow page (a slice of a large value), or a free-list
page. A committed page is never overwritten while any committed tree that a
reader or a crash could fall back to still uses it (copy-on-write, as in
LMDB and bbolt):

1. a write transaction puts new nodes into free (or new, appended) pages;
2. they are written, then (``sync=True``) fsynced;
3. the commit writes meta page ``txn % 2`` -- the two meta pages alternate,
   so the previous commit's meta is always intact -- and fsyncs again.
   Only then is the commit acknowledged.

The meta *record* (header, fields, inline ids) fills exactly the first
512 bytes of its page: one sector, written by one aligned write, the size
PostgreSQL's ``pg_control`` relies on being written atomically. It is
padded with a non-zero filler that its checksum covers, so a zeroed or
half-written sector fails the checksum instead of reading back as an
intact shorter record. Free-list ids that do not fit go to free-list pages,
written (and fsynced) with the data pages before the meta.

A commit is *intact* when its meta record verifies, the file is long enough
for its ``page_count``, and every page it wrote (data and free-list pages,
listed in the meta) verifies, carries its txn id, and matches the digest of
their checksums kept in the meta (so a stale page from a lost commit with
the same txn id is caught). Opening picks the intact commit with the highest
txn id; :mod:`.recovery` decides when the *other* meta page may be ignored
(an older commit is always ignorable; a newer one that fails only when it
was written without fsync and the opener runs without fsync too, or when the
caller asks for ``recover="previous_commit"``). A failed open never writes.

Free space: pages replaced by transaction N are *pending(N)*; they become
reusable when no pinned snapshot reads a txn < N (the crash fallback never
needs them either: it is txn N itself). The free list (free + every pending
page: after a restart nobody reads old trees) is stored with each commit,
inline in the meta record when small, else in a chain of free-list pages.

Grammar (little-endian)::

    page      := header payload zero*                     # exactly page_size bytes
    header    := crc:u32 format:u8 kind:u8 0:u16 page_no:u64 txn:u64 length:u32
    crc       := zlib.crc32(page[4 : 28 + length])         # covers page_no: misplaced pages fail
    kind      := 1 meta | 2 leaf | 3 branch | 4 overflow | 5 freelist
    meta      := "DDIABTRE" page_size:u32 root:u64 height:u32 freelist:u64 page_count:u64
                 n_keys:u64 data_bytes:u64 n_free:u32 n_written:u32 flags:u32 digest:u32
                 ids:u64* filler*                         # header + meta = 512 bytes exactly
    ids       := free ids, then written ids               # inline iff freelist == 0
    flags     := bit 0 "synced": written with sync=True (pages fsynced before the meta)
    digest    := zlib.crc32(crc of every written and free-list page, ascending page order)
    freelist  := next:u64 ids:u64*                        # free ids first, then written ids
    overflow  := next:u64 bytes*

Format 2 (this one) added ``flags``, ``digest`` and the one-sector meta
record; format 1 files are refused with :class:`NotADatabaseError`.
"""

from __future__ import annotations

import heapq
import logging
import struct
import zlib
from collections import Counter
from dataclasses import dataclass

from ..._validate import InvariantViolation, integer, invariant
from ...errors import ConfigError, CorruptionError, NotADatabaseError
from .recovery import SlotReport, check_recover, choose

__all__ = ["PageFile", "Meta", "META", "LEAF", "BRANCH", "OVERFLOW", "FREELIST", "HEADER_BYTES",
           "FORMAT_VERSION", "META_RECORD_BYTES", "FLAG_SYNCED"]

FORMAT_VERSION = 2
META, LEAF, BRANCH, OVERFLOW, FREELIST = 1, 2, 3, 4, 5
MAGIC = b"DDIABTRE"
_HEADER = struct.Struct("<IBBHQQI")
HEADER_BYTES = _HEADER.size  # 28
_META = struct.Struct("<8sIQIQQQQIIII")
_NEXT = struct.Struct("<Q")
_PAGE_SIZES = tuple(1 << n for n in range(9, 17))  # 512 B .. 64 KiB
META_RECORD_BYTES = 512  # one sector: the commit point is one atomic write
_INLINE_IDS = (META_RECORD_BYTES - HEADER_BYTES - _META.size) // 8
_FILLER = b"\xa5"
FLAG_SYNCED = 1
_LOG = logging.getLogger("ddia_ray.storage.btree")


@dataclass(frozen=True)
class Meta:
    """One committed state: the tree root and the bookkeeping needed to continue from it."""

    txn: int
    root: int            # 0: empty tree
    height: int
    page_count: int
    n_keys: int
    data_bytes: int
    freelist_pages: tuple = ()
    synced: bool = False  # written with sync=True: its pages were durable before its meta


def _ids(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}Q", data[:len(data) // 8 * 8]))  # a torn id is dropped


def _pack_ids(ids) -> bytes:
    return struct.pack(f"<{len(ids)}Q", *ids)


def _digest(crcs) -> int:  # over the stored checksums (4 raw bytes each) of the pages a commit wrote
    return zlib.crc32(b"".join(crcs))


class _Txn:
    """Bookkeeping of the one open write transaction."""

    __slots__ = ("id", "writes", "freed", "popped", "page_count")

    def __init__(self, txn_id: int, page_count: int):
        self.id = txn_id
        self.writes: dict[int, bytes] = {}   # page -> encoded page, written at commit
        self.freed: list[int] = []           # committed pages this txn stops using
        self.popped: list[int] = []          # pages taken from the free heap
        self.page_count = page_count


def _verify(raw: bytes, page_no: int, size: int):
    """``(kind, txn, payload)`` of an encoded page, or a string saying why it fails."""
    if len(raw) < size:
        return f"is truncated ({len(raw)} of {size} bytes)"
    crc, fmt, kind, _, pno, txn, length = _HEADER.unpack_from(raw)
    if length > size - HEADER_BYTES or zlib.crc32(memoryview(raw)[4:HEADER_BYTES + length]) != crc:
        return "fails its checksum"
    if fmt != FORMAT_VERSION:
        return f"has format version {fmt}, expected {FORMAT_VERSION}"
    if pno != page_no:
        return f"holds the contents of page {pno} (misdirected write)"
    return kind, txn, raw[HEADER_BYTES:HEADER_BYTES + length]


class PageFile:
    """Pages, two alternating metas, copy-on-write transactions and snapshot-aware free space.

    ``create=True`` writes a new, empty page file into ``backend`` (which must be empty);
    otherwise the file is opened as described in :mod:`.recovery`, ``recover`` being that
    module's option. ``recovery_note`` says what an open fell back from (None: nothing).
    """

    def __init__(self, backend, *, page_size: int = 4096, sync: bool = True, create: bool = False,
                 create_txn: int = 0, recover: str | None = None):
        page_size = integer("page_size", page_size)
        if page_size not in _PAGE_SIZES:
            raise ConfigError(f"page_size must be a power of two in [512, 65536], got {page_size}")
        check_recover(recover)
        self.backend, self.sync = backend, bool(sync)
        self.page_size = page_size
        self.capacity = page_size - HEADER_BYTES
        self._free: list[int] = []
        self._pending: dict[int, list[int]] = {}
        self._pins: Counter = Counter()
        self._txn: _Txn | None = None
        self.commits = self.bytes_written = self.pages_written = 0
        self.recovery_note: str | None = None
        if create:
            invariant(backend.size() == 0, "a new page file is written into an empty file")
            self._create(create_txn)
        else:
            self._recover(recover)

    @property
    def path(self) -> str:
        """The file's current name (it changes when a new file is published or a compaction swaps it in)."""
        return self.backend.path

    # --- page codec ---------------------------------------------------------

    def _encode(self, kind: int, page_no: int, txn: int, payload: bytes) -> bytes:
        invariant(len(payload) <= self.capacity, f"a {len(payload)}-byte payload does not fit a page")
        body = _HEADER.pack(0, FORMAT_VERSION, kind, 0, page_no, txn, len(payload))[4:] + payload
        return struct.pack("<I", zlib.crc32(body)) + body + bytes(self.capacity - len(payload))

    def _decode(self, raw: bytes, page_no: int) -> tuple[int, int, bytes]:
        found = _verify(raw, page_no, self.page_size)
        if type(found) is str:
            raise CorruptionError(f"page {page_no} {found}", self.path)
        return found

    def read_page(self, page_no: int, kind: int) -> bytes:
        """The payload of a committed (or staged) page; CorruptionError if it is damaged or of another kind."""
        got, payload = self.read_any(page_no)
        if got != kind:
            raise CorruptionError(f"page {page_no} is of kind {got}, expected {kind}", self.path)
        return payload

    def read_any(self, page_no: int) -> tuple[int, bytes]:
        """``(kind, payload)`` of a committed (or staged) page; CorruptionError if it is damaged."""
        if self._txn is not None and page_no in self._txn.writes:
            raw = self._txn.writes[page_no]
        else:
            if type(page_no) is not int or not 2 <= page_no < self.meta.page_count:
                raise CorruptionError(f"a pointer names page {page_no!r}, outside [2, {self.meta.page_count})",
                                      self.path)
            raw = self.backend.read(page_no * self.page_size, self.page_size)
        got, _, payload = self._decode(raw, page_no)
        return got, payload

    # --- create and open ----------------------------------------------------

    def _create(self, txn: int) -> None:
        self.meta = Meta(txn=txn, root=0, height=0, page_count=2, n_keys=0, data_bytes=0, synced=self.sync)
        for slot in (0, 1):  # both slots hold the empty tree: there is always an older commit to compare with
            self.backend.write(slot * self.page_size, self._meta_page(self.meta, slot, [], [], 0, _digest(())))
        self.backend.sync()  # always: the caller publishes the file (rename) only once it is durable

    def _meta_page(self, meta: Meta, slot: int, free: list, written: list, freelist_head: int,
                   digest: int) -> bytes:
        head = _META.pack(MAGIC, self.page_size, meta.root, meta.height, freelist_head, meta.page_count,
                          meta.n_keys, meta.data_bytes, len(free), len(written),
                          FLAG_SYNCED if meta.synced else 0, digest)
        if freelist_head == 0:
            invariant(len(free) + len(written) <= _INLINE_IDS, "inline ids must fit the meta sector")
            head += _pack_ids(free + written)
        record = head + _FILLER * (META_RECORD_BYTES - HEADER_BYTES - len(head))
        return self._encode(META, slot, meta.txn, record)

    def _find_page_size(self) -> int:
        """The page size the meta pages were written with; NotADatabaseError if there are none."""
        if self.backend.size() == 0:
            raise CorruptionError("the file is empty (0 bytes) where a B-tree database was expected. New "
                                  "databases are created atomically, so this is damage (truncation), not "
                                  "an interrupted creation: restore the file from a backup, or delete it "
                                  "to start a new, empty database", self.path)
        first = self.backend.read(0, HEADER_BYTES + 12)
        sizes = [self.page_size] + [s for s in _PAGE_SIZES if s != self.page_size]
        if len(first) == HEADER_BYTES + 12 and first[HEADER_BYTES:HEADER_BYTES + 8] == MAGIC:
            psize = struct.unpack_from("<I", first, HEADER_BYTES + 8)[0]
            if psize in _PAGE_SIZES:
                sizes = [psize] + [s for s in sizes if s != psize]
        for size in sizes:  # meta 1 sits one page in: find it even when meta 0 is damaged
            if self.backend.read(size + HEADER_BYTES, 8) == MAGIC:
                return size
        if first[HEADER_BYTES:HEADER_BYTES + 8] == MAGIC:
            return sizes[0]
        raise NotADatabaseError(f"{self.path} is not a B-tree page file (no meta page found)")

    def _read_slot(self, slot: int, size: int):
        """``(SlotReport, (meta, free ids) or None)`` for meta page ``slot`` (see the module docstring)."""
        raw = self.backend.read(slot * size, size)
        claimed = _HEADER.unpack_from(raw)[5] if len(raw) >= HEADER_BYTES else None
        found = _verify(raw, slot, size)
        if type(found) is str:
            return SlotReport(slot, None, False, found, claimed), None
        kind, txn, payload = found
        if kind != META or len(payload) < _META.size or payload[:8] != MAGIC:
            return SlotReport(slot, None, False, f"is not a meta page (kind {kind})", claimed), None
        _, psize, root, height, fl_head, count, n_keys, data_bytes, n_free, n_written, flags, digest = \
            _META.unpack_from(payload)
        synced = bool(flags & FLAG_SYNCED)

        def incomplete(problem: str):
            return SlotReport(slot, txn, synced, problem), None

        if psize != size:
            return SlotReport(slot, None, False, f"names page size {psize}, not {size}", claimed), None
        file_pages = self.backend.size() // size
        if count < 2 or file_pages < count:
            return incomplete(f"needs {count} pages, the file holds {file_pages}")
        n_ids = n_free + n_written
        if n_ids > count or (fl_head == 0 and n_ids > _INLINE_IDS):
            return incomplete(f"lists {n_ids} page ids for {count} pages")
        chain: list[int] = []
        crcs: dict[int, bytes] = {}
        page = fl_head
        ids = payload[_META.size:_META.size + 8 * n_ids] if fl_head == 0 else b""
        while page:
            if not 2 <= page < count or page in crcs or len(chain) > n_ids:
                return incomplete(f"has a free-list chain that leaves the file or loops at page {page}")
            raw = self.backend.read(page * size, size)
            found = _verify(raw, page, size)
            if type(found) is str or found[0] != FREELIST or found[1] != txn or len(found[2]) < _NEXT.size:
                return incomplete(f"free-list page {page} {found if type(found) is str else 'is stale'}")
            chain.append(page)
            crcs[page] = raw[:4]
            page, ids = _NEXT.unpack_from(found[2])[0], ids + found[2][_NEXT.size:]
        ids = _ids(ids)
        if len(ids) != n_ids or not all(2 <= p < count for p in ids) or len(set(ids + chain)) < n_ids + len(chain):
            return incomplete("has a malformed free list")  # out of range or listed twice: never reuse it
        written = ids[n_free:]
        for p in written:
            raw = self.backend.read(p * size, size)
            found = _verify(raw, p, size)
            if type(found) is str:
                return incomplete(f"wrote page {p}, which {found}")
            if found[1] != txn:
                return incomplete(f"wrote page {p}, which holds txn {found[1]} instead")
            crcs[p] = raw[:4]
        if _digest(crcs[p] for p in sorted(crcs)) != digest:
            return incomplete("wrote pages whose checksums do not match its digest (stale pages)")
        meta = Meta(txn, root, height, count, n_keys, data_bytes, tuple(chain), synced)
        return SlotReport(slot, txn, synced, None), (meta, ids[:n_free])

    def _recover(self, recover: str | None) -> None:
        size = self._find_page_size()
        results = [self._read_slot(slot, size) for slot in (0, 1)]
        reports = [report for report, _ in results]
        if all(r.problem and r.problem.startswith("has format version") for r in reports):
            raise NotADatabaseError(f"{self.path} is a B-tree page file of another format "
                                    f"({reports[0].problem}); this ddia-ray reads format {FORMAT_VERSION}")
        index, note = choose(reports, path=self.path, sync=self.sync, recover=recover)
        self.meta, free = results[index][1]
        self.page_size, self.capacity = size, size - HEADER_BYTES
        self._free = sorted(free)  # a sorted list is a valid heap
        if note is not None:
            self.recovery_note = note
            _LOG.warning("%s: %s", self.path, note)

    # --- snapshots and free space --------------------------------------------

    def pin(self, txn: int) -> None:
        """Keep the pages of committed tree ``txn`` from being reused until :meth:`unpin`."""
        self._pins[txn] += 1

    def unpin(self, txn: int) -> None:
        """Release one :meth:`pin`; pages only that tree still used become reusable."""
        self._pins[txn] -= 1
        if self._pins[txn] <= 0:
            del self._pins[txn]
        self._release_pending()

    def _release_pending(self) -> None:
        oldest = min(self._pins) if self._pins else None
        for txn in sorted(self._pending):
            if oldest is not None and txn > oldest:
                break  # pages freed by txn N are still read by a snapshot at a txn < N
            for page in self._pending.pop(txn):
                heapq.heappush(self._free, page)

    @property
    def free_pages(self) -> int:
        """Pages reusable now."""
        return len(self._free)

    @property
    def pending_pages(self) -> int:
        """Pages waiting for snapshots to be released."""
        return sum(len(v) for v in self._pending.values())

    # --- write transactions -------------------------------------------------

    def begin(self) -> int:
        """Open the write transaction; returns its txn id."""
        invariant(self._txn is None, "one write transaction at a time")
        self._txn = _Txn(self.meta.txn + 1, self.meta.page_count)
        return self._txn.id

    def _open_txn(self) -> _Txn:
        """The open write transaction (:meth:`begin` opened it)."""
        txn = self._txn
        if txn is None:
            raise InvariantViolation("no write transaction is open (call begin() first)")
        return txn

    def allocate(self) -> int:
        """A page for the open transaction: the lowest reusable one, else a new one at the end."""
        txn = self._open_txn()
        if self._free:
            page = heapq.heappop(self._free)
            txn.popped.append(page)
            return page
        txn.page_count += 1
        return txn.page_count - 1

    def stage(self, page_no: int, kind: int, payload: bytes) -> None:
        """Write ``payload`` to ``page_no`` at commit (readable through :meth:`read_page` before)."""
        txn = self._open_txn()
        txn.writes[page_no] = self._encode(kind, page_no, txn.id, payload)

    def free(self, page_no: int) -> None:
        """The open transaction no longer uses ``page_no``."""
        txn = self._open_txn()
        if txn.writes.pop(page_no, None) is not None:
            heapq.heappush(self._free, page_no)  # never committed: nobody else can see it
        else:
            txn.freed.append(page_no)

    def abort(self) -> None:
        """Drop the open transaction: every staged page is forgotten, every taken page returned."""
        txn, self._txn = self._txn, None
        if txn is None:
            return
        for page in txn.popped:
            heapq.heappush(self._free, page)
        self._free = sorted(set(p for p in self._free if p < self.meta.page_count))

    def write_overflow(self, data: bytes) -> int:
        """Store ``data`` in a chain of overflow pages; returns the first page."""
        chunk = self.capacity - _NEXT.size
        pages = [self.allocate() for _ in range(max(1, -(-len(data) // chunk)))]
        for i, page in enumerate(pages):
            nxt = pages[i + 1] if i + 1 < len(pages) else 0
            self.stage(page, OVERFLOW, _NEXT.pack(nxt) + data[i * chunk:(i + 1) * chunk])
        return pages[0]

    def read_overflow(self, head: int, length: int) -> bytes:
        """The value stored by :meth:`write_overflow` at ``head``."""
        if length > (self._txn or self.meta).page_count * (self.capacity - _NEXT.size):
            # a forged length would otherwise walk a looping chain until memory runs out
            raise CorruptionError(f"an overflow reference claims {length} bytes, more than the file holds",
                                  self.path)
        parts, page, total = [], head, 0
        while page:
            body = self.read_page(page, OVERFLOW)
            parts.append(body[_NEXT.size:])
            total += len(body) - _NEXT.size
            if total > length:
                break
            page = _NEXT.unpack_from(body)[0]
        data = b"".join(parts)
        if len(data) != length:
            raise CorruptionError(f"the overflow chain at page {head} holds {len(data)} bytes, not {length}",
                                  self.path)
        return data

    def overflow_pages(self, head: int) -> list[int]:
        """The pages of the overflow chain at ``head``."""
        pages, page = [], head
        while page:
            pages.append(page)
            page = _NEXT.unpack_from(self.read_page(page, OVERFLOW))[0]
            if len(pages) > (self._txn or self.meta).page_count:
                raise CorruptionError(f"the overflow chain at page {head} loops", self.path)
        return pages

    def free_overflow(self, head: int) -> None:
        """Free every page of the overflow chain at ``head``."""
        for page in self.overflow_pages(head):
            self.free(page)

    def commit(self, root: int, height: int, n_keys: int, data_bytes: int) -> Meta:
        """Make the open transaction durable (per ``sync``) and visible; returns the new meta."""
        txn = self._open_txn()
        try:
            # The previous commit's free-list pages are needed only while it is the crash fallback,
            # i.e. until this commit lands; no snapshot reads them, so they skip the pending lists.
            old_chain = list(self.meta.freelist_pages)
            written = sorted(txn.writes)
            pending = [p for pages in self._pending.values() for p in pages]

            def free_ids() -> list:
                return self._free + pending + txn.freed + old_chain

            inline_cap = _INLINE_IDS
            per_page = (self.capacity - _NEXT.size) // 8
            total = len(free_ids()) + len(written)
            chain: list[int] = []
            if total > inline_cap:  # taking pages only shrinks the free set, so this many suffice
                chain = [self.allocate() for _ in range(-(-total // per_page))]
            free = free_ids()
            ids = free + written
            for i, page in enumerate(chain):
                nxt = chain[i + 1] if i + 1 < len(chain) else 0
                self.stage(page, FREELIST, _NEXT.pack(nxt) + _pack_ids(ids[i * per_page:(i + 1) * per_page]))
            meta = Meta(txn.id, root, height, txn.page_count, n_keys, data_bytes, tuple(chain), self.sync)
            digest = _digest(txn.writes[p][:4] for p in sorted(txn.writes))  # written + free-list pages
            self._write_pages(txn.writes)
            last = txn.page_count - 1
            if txn.page_count > self.meta.page_count and last not in txn.writes:
                # the last new page was freed again before commit: still extend the file to page_count
                self.backend.write(last * self.page_size, bytes(self.page_size))
            if self.sync:
                self.backend.sync()
            record = self._meta_page(meta, txn.id % 2, free, written, chain[0] if chain else 0, digest)
            # the commit point: one aligned sector (the rest of the meta page stays as created)
            record = record[:META_RECORD_BYTES]
            self.backend.write((txn.id % 2) * self.page_size, record)
            if self.sync:
                self.backend.sync()
        except BaseException:
            self.abort()
            raise
        self.bytes_written += len(record)
        self.pages_written += 1
        self._txn, self.meta = None, meta
        if txn.freed:
            self._pending[txn.id] = txn.freed
        for page in old_chain:
            heapq.heappush(self._free, page)
        self._release_pending()
        self.commits += 1
        return meta

    def _write_pages(self, writes: dict) -> None:
        """Write staged pages in page order, one call per run of consecutive pages."""
        run_start = 0  # read only while run holds pages
        run: list[bytes] = []  # encoded pages run_start, run_start + 1, ...
        for page in sorted(writes):
            if run and page != run_start + len(run):
                self.backend.write(run_start * self.page_size, b"".join(run))
                run = []
            if not run:
                run_start = page
            run.append(writes[page])
        if run:
            self.backend.write(run_start * self.page_size, b"".join(run))
        self.pages_written += len(writes)
        self.bytes_written += len(writes) * self.page_size

    # --- checkpoints ----------------------------------------------------------

    def commit_pages(self) -> dict[int, bytes]:
        """The pages a copy of the current commit must take *now*: ``{page number: encoded page}``.

        Both meta pages, each holding the current commit (as a new file's two slots do, so the
        copy opens at this commit whichever slot it reads first), and the commit's free-list
        pages. A copy may take every other page of the commit later, while a snapshot pins it:
        those are tree pages, which copy-on-write never overwrites while a snapshot reads them.
        These are not: the next commit writes the meta slot ``(txn + 1) % 2``, and the one after
        reuses the free-list pages without waiting for snapshots (see :meth:`commit`).
        ``REQUIRES:`` no open transaction, and the caller holds what keeps commits out.
        """
        invariant(self._txn is None, "commit pages are taken between transactions")
        meta, size = self.meta, self.page_size
        payload = None
        for slot in (meta.txn % 2, 1 - meta.txn % 2):  # a new file's txn sits in both slots
            found = _verify(self.backend.read(slot * size, size), slot, size)
            if type(found) is not str and found[0] == META and found[1] == meta.txn:
                payload = found[2]
                break
        if payload is None:
            raise CorruptionError(f"no meta page holds the open commit {meta.txn}", self.path)
        pages = {slot: self._encode(META, slot, meta.txn, payload) for slot in (0, 1)}
        for page in meta.freelist_pages:
            raw = self.backend.read(page * size, size)
            found = _verify(raw, page, size)
            if type(found) is str or found[0] != FREELIST or found[1] != meta.txn:
                raise CorruptionError(f"free-list page {page} of commit {meta.txn} does not verify", self.path)
            pages[page] = raw
        return pages

    # --- misc ---------------------------------------------------------------

    def file_bytes(self) -> int:
        """Size of the file (bytes)."""
        return self.backend.size()

    def sync_now(self) -> None:
        """fsync the file (every commit so far becomes durable)."""
        self.backend.sync()

    def close(self) -> None:
        """Close the backend; an open transaction is dropped."""
        self.abort()
        self.backend.close()

