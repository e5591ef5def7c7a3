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

On open both metas are read and the valid one with the highest txn id wins.
A meta is valid when its checksum holds, the file is long enough for its
``page_count``, its free-list pages verify, and every page its transaction
wrote (listed beside the free list) verifies and carries its txn id. So a
torn meta, a torn data page or a truncated tail all fall back to the
previous commit, whose pages the failed transaction never touched.

Free space: pages replaced by transaction N are *pending(N)*; they become
reusable when no pinned snapshot reads a txn < N (the crash fallback never
needs them either: it is txn N itself). The free list (free + every pending
page: after a restart nobody reads old trees) is stored with each commit,
inline in the meta page when small, else in a chain of free-list pages.

Grammar (little-endian)::

    page      := header payload zero*                     # exactly page_size bytes
    header    := crc:u32 format:u8 kind:u8 0:u16 page_no:u64 txn:u64 length:u32
    crc       := zlib.crc32(page[4 : 28 + length])         # covers page_no: misplaced pages fail
    kind      := 1 meta | 2 leaf | 3 branch | 4 overflow | 5 freelist
    meta      := "DDIABTRE" page_size:u32 root:u64 height:u32 freelist:u64 page_count:u64
                 n_keys:u64 data_bytes:u64 n_free:u32 n_written:u32 ids:u64*   # ids inline iff freelist == 0
    freelist  := next:u64 ids:u64*                        # free ids first, then written ids
    overflow  := next:u64 bytes*
"""

from __future__ import annotations

import heapq
import struct
import zlib
from collections import Counter
from dataclasses import dataclass

from ..._validate import integer, invariant
from ...errors import ConfigError, CorruptionError, NotADatabaseError

__all__ = ["PageFile", "Meta", "META", "LEAF", "BRANCH", "OVERFLOW", "FREELIST", "HEADER_BYTES", "FORMAT_VERSION"]

FORMAT_VERSION = 1
META, LEAF, BRANCH, OVERFLOW, FREELIST = 1, 2, 3, 4, 5
MAGIC = b"DDIABTRE"
_HEADER = struct.Struct("<IBBHQQI")
HEADER_BYTES = _HEADER.size  # 28
_META = struct.Struct("<8sIQIQQQQII")
_NEXT = struct.Struct("<Q")
_PAGE_SIZES = tuple(1 << n for n in range(9, 17))  # 512 B .. 64 KiB


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


def _ids(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}Q", data))


def _pack_ids(ids) -> bytes:
    return struct.pack(f"<{len(ids)}Q", *ids)


class _Txn:
    """Bookkeeping of the one open write transaction."""

    __slots__ = ("id", "writes", "freed", "popped", "page_count")

    def __init__(self, txn_id: int, page_count: int):
        self.id = txn_id
        self.writes: dict[int, bytes] = {}   # page -> encoded page, written at commit
        self.freed: list[int] = []           # committed pages this txn stops using
        self.popped: list[int] = []          # pages taken from the free heap
        self.page_count = page_count


class PageFile:
    """Pages, two alternating metas, copy-on-write transactions and snapshot-aware free space."""

    def __init__(self, backend, *, page_size: int = 4096, sync: bool = True, create_txn: int = 0):
        page_size = integer("page_size", page_size)
        if page_size not in _PAGE_SIZES:
            raise ConfigError(f"page_size must be a power of two in [512, 65536], got {page_size}")
        self.backend, self.path, self.sync = backend, backend.path, bool(sync)
        self.page_size = page_size
        self.capacity = page_size - HEADER_BYTES
        self._free: list[int] = []
        self._pending: dict[int, list[int]] = {}
        self._pins: Counter = Counter()
        self._txn: _Txn | None = None
        self.commits = self.bytes_written = self.pages_written = 0
        if backend.size() == 0:
            self._create(create_txn)
        else:
            self._recover()

    # --- page codec ---------------------------------------------------------

    def _encode(self, kind: int, page_no: int, txn: int, payload: bytes) -> bytes:
        invariant(len(payload) <= self.capacity, f"a {len(payload)}-byte payload does not fit a page")
        body = _HEADER.pack(0, FORMAT_VERSION, kind, 0, page_no, txn, len(payload))[4:] + payload
        return struct.pack("<I", zlib.crc32(body)) + body + bytes(self.capacity - len(payload))

    def _decode(self, raw: bytes, page_no: int, page_size: int | None = None) -> tuple[int, int, bytes]:
        size = page_size or self.page_size
        if len(raw) < size:
            raise CorruptionError(f"page {page_no} is truncated ({len(raw)} of {size} bytes)", self.path)
        crc, fmt, kind, _, pno, txn, length = _HEADER.unpack_from(raw)
        if length > size - HEADER_BYTES or zlib.crc32(memoryview(raw)[4:HEADER_BYTES + length]) != crc:
            raise CorruptionError(f"page {page_no} fails its checksum", self.path)
        if fmt != FORMAT_VERSION:
            raise CorruptionError(f"page {page_no} has format version {fmt}, expected {FORMAT_VERSION}", self.path)
        if pno != page_no:
            raise CorruptionError(f"page {page_no} holds the contents of page {pno} (misdirected write)", self.path)
        return kind, txn, raw[HEADER_BYTES:HEADER_BYTES + length]

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
            if not 2 <= page_no < self.meta.page_count:
                raise CorruptionError(f"a pointer names page {page_no}, outside [2, {self.meta.page_count})", self.path)
            raw = self.backend.read(page_no * self.page_size, self.page_size)
        got, _, payload = self._decode(raw, page_no)
        return got, payload

    # --- create and recover -------------------------------------------------

    def _create(self, txn: int) -> None:
        self.meta = Meta(txn=txn, root=0, height=0, page_count=2, n_keys=0, data_bytes=0)
        for slot in (0, 1):  # both slots valid from the start: a torn first commit falls back to this
            self.backend.write(slot * self.page_size, self._meta_page(self.meta, slot, [], [], 0))
        self.backend.sync()

    def _meta_page(self, meta: Meta, slot: int, free: list, written: list, freelist_head: int) -> bytes:
        head = _META.pack(MAGIC, self.page_size, meta.root, meta.height, freelist_head, meta.page_count,
                          meta.n_keys, meta.data_bytes, len(free), len(written))
        inline = _pack_ids(free + written) if freelist_head == 0 else b""
        return self._encode(META, slot, meta.txn, head + inline)

    def _read_meta(self, slot: int, page_size: int) -> tuple[Meta, list, list] | None:
        """A meta slot that verifies completely (see the module docstring), else None."""
        raw = self.backend.read(slot * page_size, page_size)
        try:
            kind, txn, payload = self._decode(raw, slot, page_size)
            if kind != META or len(payload) < _META.size:
                return None
            magic, psize, root, height, fl_head, count, n_keys, data_bytes, n_free, n_written = \
                _META.unpack_from(payload)
            if magic != MAGIC or psize != page_size or self.backend.size() < count * page_size:
                return None
            self.page_size, self.capacity = page_size, page_size - HEADER_BYTES
            self.meta = Meta(txn, root, height, count, n_keys, data_bytes)
            chain, ids, page = [], b"", fl_head
            if fl_head == 0:
                ids = payload[_META.size:]
            while page:
                chain.append(page)
                if len(chain) > count:
                    return None
                body = self.read_page(page, FREELIST)
                page, ids = _NEXT.unpack_from(body)[0], ids + body[_NEXT.size:]
            ids = _ids(ids)
            if len(ids) != n_free + n_written or any(not 2 <= p < count for p in ids):
                return None
            written = ids[n_free:]
            for p in written:
                if self._decode(self.backend.read(p * page_size, page_size), p)[1] != txn:
                    return None
            self.meta = Meta(txn, root, height, count, n_keys, data_bytes, tuple(chain))
            return self.meta, ids[:n_free], written
        except CorruptionError:
            return None

    def _recover(self) -> None:
        candidates = []
        first = self.backend.read(0, HEADER_BYTES + 12)
        sizes = [self.page_size] + [s for s in _PAGE_SIZES if s != self.page_size]
        if first[HEADER_BYTES:HEADER_BYTES + 8] == MAGIC:
            psize = struct.unpack_from("<I", first, HEADER_BYTES + 8)[0]
            if psize in _PAGE_SIZES:
                sizes = [psize] + [s for s in sizes if s != psize]
        magic_seen = first[HEADER_BYTES:HEADER_BYTES + 8] == MAGIC
        for size in sizes:  # meta 1 sits one page in: find it even when meta 0 is torn
            raw = self.backend.read(size, HEADER_BYTES + 8)
            if raw[HEADER_BYTES:] == MAGIC:
                magic_seen = True
                sizes = [size] + [s for s in sizes if s != size]
                break
        if not magic_seen:
            raise NotADatabaseError(f"{self.path} is not a B-tree page file (no meta page found)")
        size = sizes[0]
        for slot in (0, 1):
            raw = self.backend.read(slot * size, HEADER_BYTES)
            if len(raw) == HEADER_BYTES:
                candidates.append((_HEADER.unpack_from(raw)[5], slot))
        for _, slot in sorted(candidates, reverse=True):  # newest txn first
            found = self._read_meta(slot, size)
            if found is not None:
                meta, free, _written = found
                self._free = sorted(free)  # a sorted list is a valid heap
                return
        raise CorruptionError("neither meta page describes an intact committed tree", self.path)

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

    def allocate(self) -> int:
        """A page for the open transaction: the lowest reusable one, else a new one at the end."""
        txn = self._txn
        if self._free:
            page = heapq.heappop(self._free)
            txn.popped.append(page)
            return page
        txn.page_count += 1
        return txn.page_count - 1

    def stage(self, page_no: int, kind: int, payload: bytes) -> None:
        """Write ``payload`` to ``page_no`` at commit (readable through :meth:`read_page` before)."""
        self._txn.writes[page_no] = self._encode(kind, page_no, self._txn.id, payload)

    def free(self, page_no: int) -> None:
        """The open transaction no longer uses ``page_no``."""
        txn = self._txn
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
        txn = self._txn
        try:
            # The previous commit's free-list pages are needed only while it is the crash fallback,
            # i.e. until this commit lands; no snapshot reads them, so they skip the pending lists.
            old_chain = list(self.meta.freelist_pages)
            written = sorted(txn.writes)
            pending = [p for pages in self._pending.values() for p in pages]

            def free_ids() -> list:
                return self._free + pending + txn.freed + old_chain

            inline_cap = (self.capacity - _META.size) // 8
            per_page = (self.capacity - _NEXT.size) // 8
            total = len(free_ids()) + len(written)
            chain = []
            if total > inline_cap:  # taking pages only shrinks the free set, so this many suffice
                chain = [self.allocate() for _ in range(-(-total // per_page))]
            free = free_ids()
            ids = free + written
            for i, page in enumerate(chain):
                nxt = chain[i + 1] if i + 1 < len(chain) else 0
                self.stage(page, FREELIST, _NEXT.pack(nxt) + _pack_ids(ids[i * per_page:(i + 1) * per_page]))
            meta = Meta(txn.id, root, height, txn.page_count, n_keys, data_bytes, tuple(chain))
            self._write_pages(txn.writes)
            last = txn.page_count - 1
            if txn.page_count > self.meta.page_count and last not in txn.writes:
                # the last new page was freed again before commit: still extend the file to page_count
                self.backend.write(last * self.page_size, bytes(self.page_size))
            if self.sync:
                self.backend.sync()
            page = self._meta_page(meta, txn.id % 2, free, written, chain[0] if chain else 0)
            self.backend.write((txn.id % 2) * self.page_size, page)
            if self.sync:
                self.backend.sync()
        except BaseException:
            self.abort()
            raise
        self.bytes_written += len(page)
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
        run_start, run = None, []
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

