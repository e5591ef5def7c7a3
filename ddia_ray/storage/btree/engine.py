"""``BTreeEngine``: the :class:`~ddia_ray.storage.engine.StorageEngine` on a copy-on-write B+tree.

Theory of operation
-------------------
Every :meth:`BTreeEngine.write` (and so every put/delete) is one page-file
transaction: its operations are applied to a copy-on-write tree
(:mod:`.cowtree`) and committed by a meta-page write (:mod:`.pagefile`).
That makes batches atomic and gives multi-version reads for free: a
:class:`BTreeSnapshot` is just a committed root page plus its txn id
(``.seq``), pinned so the page file does not reuse its pages.

Durability: with ``sync=True`` (default) a commit fsyncs before and after
its meta write, so an acknowledged write survives power loss; with
``sync=False`` commits survive a process crash (the OS keeps the writes)
but the last ones may be lost on power loss; :meth:`flush` fsyncs.

Opening never loses an acknowledged commit without a word: when the newest
commit does not verify, :mod:`.recovery` either falls back (only where the
commit was written without fsync and the opener runs without it too, or
with ``recover="previous_commit"``), logging a warning and counting
``stats()["open_recoveries"]``, or raises CorruptionError and leaves the
file untouched. A missing data file is created atomically (see
:mod:`._backend`); an existing empty one is CorruptionError.

Snapshots pin their tree until ``release()`` (or the end of a ``with``);
one dropped without either is released once garbage-collected: its
``weakref.finalize`` only queues the pin, and the engine unpins it at its
next write, snapshot, compaction or ``stats()``, under its lock.

:meth:`compact` bulk-loads the live tree into a fresh file (leaves packed
to ``fill_factor``, no free pages, pages in key order), fsyncs it and
renames it over the old one. Snapshots taken before keep reading the old
file through its still-open handle until they are released.

Readers and the writer share one lock; a scan holds its own pin, so
writes during a scan do not change what it returns.

:meth:`checkpoint` copies the file as of one commit, pinned like a snapshot's,
while writes go on (see :mod:`.checkpoint`).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from ..._validate import integer, invariant, probability
from ...errors import ConfigError, DatabaseClosedError, InvalidArgumentError
from ..engine import BatchWrites, WriteBatch, check_batch, check_range, register_engine, to_key
from . import _backend
from .checkpoint import checkpoint_engine
from .cowtree import NodeStore, TreeWriter, build_tree, check_tree, tree_get, tree_scan
from .pagefile import PageFile
from .recovery import check_recover

__all__ = ["BTreeEngine", "BTreeSnapshot"]

_OPEN_FILES: set = set()           # (kind, path) of every open engine in this process: one writer per file
_OPEN_LOCK = threading.Lock()
_ANON = itertools.count(1)


class _Generation:
    """One page file plus its node cache; replaced by :meth:`BTreeEngine.compact`."""

    def __init__(self, pagefile: PageFile, cache_pages: int):
        self.pf = pagefile
        self.store = NodeStore(pagefile, cache_pages)
        self.snapshots = 0
        self.retired = False

    def close_if_unused(self) -> None:
        if self.retired and self.snapshots == 0:
            self.pf.close()


class _Pin:
    """The engine's record of one snapshot: which tree it pins. Holds no reference to the snapshot,
    so the snapshot can be garbage-collected while the engine still knows what to unpin."""

    __slots__ = ("gen", "seq", "released")

    def __init__(self, gen: _Generation, seq: int):
        self.gen, self.seq, self.released = gen, seq, False


def _dropped(engine_ref, pin: _Pin) -> None:
    """Finaliser of a snapshot collected without ``release()``: queue its pin for release.

    It may run inside any allocation of any thread, even one holding the engine's (reentrant)
    lock in the middle of a commit, so it only appends to a deque (atomic); the engine applies
    the release the next time it takes its lock at a safe point (:meth:`BTreeEngine._reap`).
    """
    engine = engine_ref()
    if engine is not None and not pin.released:
        engine._dropped_pins.append(pin)


class BTreeSnapshot:
    """A pinned committed tree: reads through it see exactly the commits up to ``seq``.

    ``release()`` it (or use ``with``) when done; a snapshot dropped without either is released
    once it is garbage-collected, so forgotten snapshots never pin pages forever.
    """

    __slots__ = ("_engine", "_gen", "seq", "_root", "_pin", "_finalizer", "__weakref__")

    def __init__(self, engine: "BTreeEngine", gen: _Generation, seq: int, root: int, pin: _Pin):
        self._engine, self._gen, self.seq, self._root, self._pin = engine, gen, seq, root, pin
        # the finaliser must not reference the snapshot, and only weakly the engine: neither is kept alive
        self._finalizer = weakref.finalize(self, _dropped, weakref.ref(engine), pin)
        self._finalizer.atexit = False

    @property
    def released(self) -> bool:
        """True once released (explicitly, or by the engine's ``close()``)."""
        return self._pin.released

    def release(self) -> None:
        """Unpin the tree (idempotent); its pages become reusable once no older snapshot needs them."""
        self._finalizer.detach()
        self._engine._release(self._pin)

    def __enter__(self) -> "BTreeSnapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _ScanIterator:
    """Lazy scan over a pinned tree; the pin is dropped when exhausted or closed, and when the
    iterator is collected its snapshot goes with it (and is released by the snapshot's finaliser)."""

    def __init__(self, engine: "BTreeEngine", snap: BTreeSnapshot, owned: bool, start, end, reverse: bool):
        self._engine, self._snap, self._owned = engine, snap, owned
        self._pin = snap._pin  # read per row: the pin's flag directly, not through the property
        self._it: Iterator[tuple[bytes, object]] | None = tree_scan(snap._gen.store, snap._root, start, end,
                                                                    reverse)
        self._value = snap._gen.store.value

    def __iter__(self) -> "_ScanIterator":
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        if self._it is None:
            raise StopIteration
        with self._engine._lock:
            self._engine._check()
            if self._pin.released:
                raise DatabaseClosedError("the snapshot was released during the scan")
            try:
                key, val = next(self._it)
                return key, self._value(val)
            except StopIteration:
                self.close()
                raise

    def close(self) -> None:
        """Stop early and drop the pin."""
        self._it = None
        if self._owned:
            self._owned = False
            self._snap.release()


class BTreeEngine(BatchWrites):
    """Ordered ``bytes -> bytes`` store: a copy-on-write B+tree in one page file (see the module docstring)."""

    def __init__(self, url: str | None, *, sync: bool = True, page_size: int = 4096,
                 inline_value_max: int | None = None, cache_pages: int = 8192, fill_factor: float = 0.9,
                 recover: str | None = None):
        if url is None:
            url = f"memory://ddia-btree-anonymous/{next(_ANON)}"
        if not isinstance(url, str):
            raise InvalidArgumentError(f"url must be a str, got {type(url).__name__}")
        if not isinstance(sync, bool):
            raise InvalidArgumentError(f"sync must be True or False, got {sync!r}")
        self.url, self.sync = url, sync
        self.fill_factor = probability("fill_factor", fill_factor)
        if self.fill_factor < 0.5:
            raise ConfigError(f"fill_factor must be within [0.5, 1], got {fill_factor!r}")
        self.cache_pages = integer("cache_pages", cache_pages)
        if cache_pages < 16:
            raise ConfigError(f"cache_pages must be >= 16, got {cache_pages}")
        check_recover(recover)
        self._kind, self._fs, self._path = _backend.resolve(url)
        with _OPEN_LOCK:
            if (self._kind, self._path) in _OPEN_FILES:
                raise ConfigError(f"{self._path} is already open in this process; close the other engine first")
            _OPEN_FILES.add((self._kind, self._path))
        try:
            pf = self._open_pagefile(page_size, recover)
        except BaseException:
            self._unregister()
            raise
        self.max_key_bytes = pf.capacity // 8 - 8
        limit = self.max_key_bytes if inline_value_max is None else integer("inline_value_max", inline_value_max)
        if not 0 <= limit <= self.max_key_bytes:
            pf.close()
            self._unregister()
            raise ConfigError(f"inline_value_max must be within [0, {self.max_key_bytes}] for "
                              f"{pf.page_size}-byte pages, got {inline_value_max}")
        self.inline_value_max = limit
        self._gen = _Generation(pf, cache_pages)
        self._open_recoveries = int(pf.recovery_note is not None)  # opens that fell back (see .recovery)
        self._lock = threading.RLock()
        self._closed = False
        self._snapshots: set = set()       # _Pin of every live snapshot
        self._dropped_pins: deque = deque()  # pins of collected snapshots, released by _reap()
        self._compactions = 0
        self._checkpoints = 0
        self._retired = {"commits": 0, "bytes_written": 0, "pages_written": 0}  # of files replaced by compact()

    @classmethod
    def open(cls, url: str | None, **options) -> "BTreeEngine":
        """Open (or create) the database at ``url`` (``file://``, a path, or ``memory://``).

        ``recover="previous_commit"`` opens a file whose newest commit is damaged at the commit
        before it (logged as a warning and counted in ``stats()["open_recoveries"]``); without it
        such a file raises CorruptionError and is left unchanged (see :mod:`.recovery`).
        """
        return cls(url, **options)

    def _open_pagefile(self, page_size: int, recover: str | None) -> PageFile:
        """Open the data file, or create it atomically when there is none (see :mod:`._backend`)."""
        kind, fs, path = self._kind, self._fs, self._path
        _backend.remove(kind, fs, path + ".compact")  # a compaction interrupted by a crash
        while True:
            if _backend.exists(kind, fs, path):
                _backend.remove(kind, fs, path + ".new")  # a creation interrupted by a crash
                try:
                    backend = _backend.open_backend(kind, fs, path)
                except FileNotFoundError:  # deleted between the look and the open: look again
                    continue
                try:
                    return PageFile(backend, page_size=page_size, sync=self.sync, recover=recover)
                except BaseException:
                    backend.close()
                    raise
            backend = _backend.open_backend(kind, fs, path + ".new", create=True)
            try:
                pf = PageFile(backend, page_size=page_size, sync=self.sync, create=True)
                backend.publish(path)
                return pf
            except FileExistsError:  # another process created it first: open theirs
                backend.close()
                _backend.remove(kind, fs, path + ".new")
            except BaseException:
                backend.close()
                raise

    def _unregister(self) -> None:
        with _OPEN_LOCK:
            _OPEN_FILES.discard((self._kind, self._path))

    def _check(self) -> None:
        if self._closed:
            raise DatabaseClosedError("the database is closed")

    # --- writes -------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically in one transaction (committed, and fsynced if ``sync``, on return)."""
        for op in check_batch(batch):
            if len(op.key) > self.max_key_bytes or len(op.end) > self.max_key_bytes:
                raise ConfigError(f"keys are limited to {self.max_key_bytes} bytes with "
                                  f"{self._gen.pf.page_size}-byte pages; got {max(len(op.key), len(op.end))}")
        with self._lock:
            self._check()
            if not batch.ops:
                return
            self._reap()
            pf = self._gen.pf
            meta = pf.meta
            pf.begin()
            try:
                tree = TreeWriter(self._gen.store, meta.root, meta.height, meta.n_keys, meta.data_bytes,
                                  self.inline_value_max)
                for op in batch.ops:
                    if op.kind == "put":
                        tree.put(op.key, op.value)
                    elif op.kind == "delete":
                        tree.delete(op.key)
                    else:
                        tree.delete_range(op.key, op.end)
                root = tree.commit()
            except BaseException:
                pf.abort()
                raise
            pf.commit(root, tree.height, tree.n_keys, tree.data_bytes)

    # --- reads --------------------------------------------------------------

    def _view(self, snapshot) -> tuple[_Generation, int]:
        if snapshot is None:
            return self._gen, self._gen.pf.meta.root
        if not isinstance(snapshot, BTreeSnapshot) or snapshot._engine is not self:
            raise InvalidArgumentError("snapshot must come from this engine's snapshot()")
        if snapshot.released:
            raise DatabaseClosedError("the snapshot was released")
        return snapshot._gen, snapshot._root

    def get(self, key, *, snapshot: BTreeSnapshot | None = None) -> bytes | None:
        """The value of ``key`` (at ``snapshot``), or None."""
        k = to_key(key)
        with self._lock:
            self._check()
            gen, root = self._view(snapshot)
            val = tree_get(gen.store, root, k)
            return None if val is None else gen.store.value(val)

    def get_many(self, keys, *, snapshot: BTreeSnapshot | None = None) -> list:
        """``[get(k) for k in keys]`` under one lock acquisition (one consistent view)."""
        ks = [to_key(k) for k in keys]
        with self._lock:
            self._check()
            gen, root = self._view(snapshot)
            store = gen.store
            out = []
            for k in ks:
                val = tree_get(store, root, k)
                out.append(None if val is None else store.value(val))
            return out

    def scan(self, start=None, end=None, *, reverse: bool = False,
             snapshot: BTreeSnapshot | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Live ``(key, value)`` pairs in ``[start, end)``, ascending (or descending), read lazily."""
        s, e = check_range(start, end)
        with self._lock:
            self._check()
            if snapshot is None:
                return _ScanIterator(self, self.snapshot(), True, s, e, bool(reverse))
            self._view(snapshot)
            return _ScanIterator(self, snapshot, False, s, e, bool(reverse))

    def snapshot(self) -> BTreeSnapshot:
        """Pin the latest committed tree; ``release()`` it (or use ``with``) when done."""
        with self._lock:
            self._check()
            self._reap()
            gen, meta = self._gen, self._gen.pf.meta
            gen.pf.pin(meta.txn)
            gen.snapshots += 1
            pin = _Pin(gen, meta.txn)
            self._snapshots.add(pin)
            return BTreeSnapshot(self, gen, meta.txn, meta.root, pin)

    def _release(self, pin: _Pin) -> None:
        with self._lock:
            if pin.released:
                return
            pin.released = True
            self._snapshots.discard(pin)
            if self._closed:
                return
            gen = pin.gen
            gen.snapshots -= 1
            gen.pf.unpin(pin.seq)
            gen.close_if_unused()

    def _reap(self) -> None:
        """Release the pins of snapshots collected without ``release()`` (call holding the lock)."""
        dropped = self._dropped_pins
        while dropped:
            self._release(dropped.popleft())

    # --- maintenance ----------------------------------------------------------

    def flush(self) -> None:
        """fsync the page file: every commit so far becomes durable even with ``sync=False``."""
        with self._lock:
            self._check()
            self._gen.pf.sync_now()

    def compact(self) -> None:
        """Rewrite the live tree densely into a fresh file and switch to it atomically (see module docstring)."""
        with self._lock:
            self._check()
            self._reap()
            old = self._gen
            meta = old.pf.meta
            tmp_path = self._path + ".compact"
            backend = _backend.open_backend(self._kind, self._fs, tmp_path, create=True)
            try:
                pf = PageFile(backend, page_size=old.pf.page_size, sync=self.sync, create=True,
                              create_txn=meta.txn)
                gen = _Generation(pf, self.cache_pages)
                items = ((k, old.store.value(v)) for k, v in tree_scan(old.store, meta.root, None, None))
                pf.begin()
                root, height, n_keys, data_bytes = build_tree(gen.store, items, self.inline_value_max,
                                                              self.fill_factor)
                invariant(n_keys == meta.n_keys, "compaction must copy every key")
                pf.commit(root, height, n_keys, data_bytes)
                backend.sync()  # the new file is complete on disk before it replaces the old one
                backend.replace(self._path)
            except BaseException:
                backend.close()
                raise
            for name in self._retired:
                self._retired[name] += getattr(old.pf, name)
            old.retired = True
            old.close_if_unused()
            self._gen = gen
            self._compactions += 1

    def checkpoint(self, dst_url: str, *, storage_options: dict | None = None) -> dict:
        """A consistent copy of the latest commit in ``dst_url`` (an empty or absent directory).

        Pins the current commit with a snapshot, then copies the page file through fsspec while
        writes go on (each waits at most for one chunk's read): copy-on-write never overwrites a
        pinned commit's pages, and the few pages it may (the meta and free-list pages) are taken
        under the lock first (see :mod:`.checkpoint`). ``BTreeEngine.open(dst_url)`` opens the copy
        at that commit: every write acknowledged before the call, none after ``seq``. Returns
        ``{"engine": "btree", "url", "seq", "files", "bytes", "linked"}``; a non-empty
        ``dst_url`` raises ConfigError. ``storage_options`` are fsspec's for ``dst_url``: a
        checkpoint may go to object storage (``s3://``) although the engine cannot run there;
        :func:`~ddia_ray.storage.copy_checkpoint` brings it back to a disk to open it.
        """
        self._check()
        summary = checkpoint_engine(self, dst_url, storage_options)
        with self._lock:
            self._checkpoints += 1
        return summary

    def check(self) -> int:
        """Verify the whole tree (ordering, separators, leaf depth, page fit, checksums); returns the key count."""
        with self._lock:
            self._check()
            meta = self._gen.pf.meta
            count, height = check_tree(self._gen.store, meta.root)
            invariant(count == meta.n_keys, f"the tree holds {count} keys, the meta says {meta.n_keys}")
            invariant(height == meta.height, f"the tree is {height} levels high, the meta says {meta.height}")
            return count

    def close(self) -> None:
        """Close the file; every later call (and every snapshot) raises DatabaseClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            gens = {id(pin.gen): pin.gen for pin in self._snapshots}
            gens[id(self._gen)] = self._gen
            for pin in self._snapshots:
                pin.released = True
            self._snapshots.clear()
            self._dropped_pins.clear()
            for gen in gens.values():
                gen.pf.close()
            self._unregister()

    def stats(self) -> Mapping[str, Any]:
        """Immutable counters: pages, height, commits, bytes written, space amplification."""
        with self._lock:
            self._check()
            self._reap()
            pf = self._gen.pf
            meta = pf.meta
            file_bytes = pf.file_bytes()
            free, pending = pf.free_pages, pf.pending_pages
            return MappingProxyType({
                "engine": "btree", "keys": meta.n_keys, "seq": meta.txn, "height": meta.height,
                "page_size": pf.page_size, "pages_total": meta.page_count, "pages_free": free,
                "pages_pending": pending, "pages_live": meta.page_count - free - pending,
                "file_bytes": file_bytes, "data_bytes": meta.data_bytes,
                **{name: getattr(pf, name) + before for name, before in self._retired.items()},
                "space_amplification": file_bytes / meta.data_bytes if meta.data_bytes else 0.0,
                "snapshots": len(self._snapshots), "compactions": self._compactions,
                "checkpoints": self._checkpoints,
                "open_recoveries": self._open_recoveries,
                "cached_nodes": len(self._gen.store.cache),
            })

    def __enter__(self) -> "BTreeEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


register_engine("btree", BTreeEngine.open)
