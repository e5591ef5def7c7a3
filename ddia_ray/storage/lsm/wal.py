"""The write-ahead log: every acknowledged batch is in a WAL before it is in the memtable.

Theory of operation
-------------------
One WAL per memtable generation, named ``<number>.log`` (DDIA ch. 3, "Making
B-trees reliable" / LevelDB's log). Each committed batch is one frame (see
:mod:`ddia_ray.framing`) whose body is plain msgpack with an explicit format version::

    body := msgpack([WAL_FORMAT, first_seq, [[kind, key, value_or_end], ...]])
    kind := 0 put | 1 delete | 2 range-delete (value_or_end is the range end)

with ``first_seq`` an int, ``1 <= first_seq`` and its last op's sequence
number at most :data:`MAX_SEQ`, ``key`` and ``value_or_end`` msgpack bin,
and ``key <= end`` for a range delete. A frame whose checksum verifies but
whose body breaks this grammar (a crafted file, a bug) is damage like a bad
checksum, never trusted (see :func:`read_wal`).

Group commit: the tree's write leader hands :meth:`WalWriter.append` the
frames of every batch queued behind it, so concurrent writers share one write
(and one fsync). Sync modes: ``"none"`` hands bytes to the OS on every append
(survives a process crash, not a power cut); ``"batch"`` fsyncs each append
before the writers are acknowledged; ``"flush"`` fsyncs only when the
memtable is switched for flushing (and on close).

On a local disk under ``"none"`` and ``"flush"`` the WAL is a shared memory
map of a preallocated file (RocksDB's ``allow_mmap_writes``): an append is a
copy into the kernel's page cache, with the durability of a ``write(2)`` (a
killed process loses nothing it appended; a power cut loses what was not
synced) without a system call per append, which is most of a small write's
cost. The file grows in reserved chunks (``posix_fallocate``, so a full disk
raises ``OSError`` at growth instead of killing the process with ``SIGBUS``)
and is cut to its written length on close. A crash leaves the reserved zeros
behind the last frame; the reader treats them, and a frame cut short before
them, as a torn tail (see :mod:`ddia_ray.framing`). Such appends cost no I/O wait, so
the tree makes them under its mutex (:attr:`WalWriter.cheap`).

Object stores cannot append, so there a WAL is a series of immutable segment
objects ``<number>.log.<segment>``: ``"batch"`` writes one segment per group
commit; the other modes buffer up to ``segment_bytes`` in memory first (those
buffered batches are lost by a crash, which is what those modes allow).

Replay reads the base file and its segments in order, drops a torn tail and
either raises :class:`CorruptionError` on damage elsewhere or, with
``skip=True``, drops the damaged frames (whole batches) and keeps the rest:
the batches after a skipped one are still applied, so the recovered state
may not be a prefix of the history (counted in the tree's stats).
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Iterator

import msgpack
from fsspec.implementations.local import LocalFileOpener

from ..._fs import is_local
from ..._validate import InvariantViolation
from ...errors import CorruptionError
from ...framing import HEADER_BYTES, frame, frame_into, read_log
from .prefault import Prefaulter

__all__ = ["WAL_FORMAT", "MAX_SEQ", "WalWriter", "NullWal", "open_wal", "encode_batch", "read_wal", "wal_name",
           "wal_objects", "can_append"]

WAL_FORMAT = 1
#: The largest sequence number (int64's: SSTables store seqs as uint64, readers compare as int64).
MAX_SEQ = (1 << 63) - 1
_KINDS = (0, 1, 2)
_RANGE_DELETE = 2
_FIRST_CHUNK_BYTES = 1 << 20  # the first reservation of a mapped WAL; each growth doubles it
_MAX_CHUNK_BYTES = 64 << 20


def wal_name(number: int) -> str:
    """The object name of WAL ``number``."""
    return f"{number:06d}.log"


def _protocols(fs) -> tuple:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def can_append(fs) -> bool:
    """Whether ``fs`` supports appending to an open file (local disks and ``memory://``)."""
    return bool({"file", "local", "memory"} & set(_protocols(fs)))


def encode_batch(first_seq: int, ops) -> bytes:
    """One framed WAL record for a batch of ``(kind, key, value)`` ops."""
    return frame(msgpack.packb((WAL_FORMAT, first_seq, ops), use_bin_type=True))


class WalWriter:
    """Appends framed batches to one WAL on an fsspec filesystem."""

    logs = True  # appends are kept (NullWal's are not): the batch is worth encoding

    def __init__(self, fs, directory: str, number: int, *, sync: str, segment_bytes: int = 1 << 20):
        self.fs = fs
        self.number = number
        self.path = f"{directory}/{wal_name(number)}"
        self.sync_mode = sync
        self.bytes_written = 0
        self._segment_bytes = segment_bytes
        self._append = can_append(fs)
        self._local = is_local(fs)
        self._map: mmap.mmap | None = None
        self._prefaulter: Prefaulter | None = None  # faults the mapping's reserved pages in ahead of us
        self._file: Any = None  # the fsspec file appended to (a filesystem that can append)
        self._sink: Any = None  # what is written to: _file, or the OS file object inside a local one
        self._fd: int | None = None  # the OS descriptor of a local WAL
        if self._local and sync != "batch":
            # Mapped (see the module docstring); a mapping needs a read-write descriptor, which fsspec's
            # local opener does not hand out, and a local fsspec path is an OS path.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._map = self._reserve(_FIRST_CHUNK_BYTES)
        elif self._append:
            self._file = fs.open(self.path, "ab")
            # A local file is written through its OS file object: fsspec's wrapper only forwards the calls.
            self._sink = self._file.f if isinstance(self._file, LocalFileOpener) else self._file
            # A local file is appended to with os.write on its descriptor: every append is handed to the
            # OS at once anyway, and the buffered writer's write + flush pair cost 40% more per append.
            self._fd = self._sink.fileno() if isinstance(self._file, LocalFileOpener) else None
        #: Whether an append never waits for I/O: a mapped WAL (a filesystem object's write may block).
        self.cheap = self._map is not None
        self._packer = msgpack.Packer(use_bin_type=True)  # only the write leader encodes: one at a time
        self._buffer = bytearray()
        self._segment = 0
        self._closed = False

    def _reserve(self, size: int) -> mmap.mmap:
        """Reserve the file's first ``size`` bytes on disk and map them (growth replaces the mapping).

        The pages from :attr:`bytes_written` on are faulted in by a :class:`~.prefault.Prefaulter`
        thread, so that the appends find them writable (see :mod:`.prefault`).
        """
        fd = self._descriptor()
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:  # no reservation: a full disk surfaces when the kernel writes the pages back
            os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size)
        self._prefaulter = Prefaulter(mapping, self.bytes_written, size)
        return mapping

    def _stop_prefaulting(self) -> None:
        """Before the mapping is closed or replaced: no prefault call may outlive it."""
        if self._prefaulter is not None:
            self._prefaulter.stop()
            self._prefaulter = None

    def _descriptor(self) -> int:
        """The OS descriptor of this local WAL (mapped, or appended to through a local file)."""
        fd = self._fd
        if fd is None:
            raise InvariantViolation(f"{self.path} has no file descriptor: it is not a local WAL")
        return fd

    def encode(self, first_seq: int, ops) -> bytes:
        """:func:`encode_batch` with this writer's reusable packer (call from the write leader only)."""
        return frame(self._packer.pack((WAL_FORMAT, first_seq, ops)))

    def append_batch(self, first_seq: int, ops) -> None:
        """:meth:`append` of one encoded batch."""
        self.append(self.encode(first_seq, ops))

    def append_one_mapped(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """:meth:`append_batch` of one op, on a mapped WAL only (:attr:`cheap`).

        The single-key fast path's call: the same frame as ``append_batch(seq, ((kind, key,
        value),))`` in one call instead of three, a tenth of a small put's cost.
        """
        body = self._packer.pack((WAL_FORMAT, seq, ((kind, key, value),)))
        pos = self.bytes_written
        end = pos + HEADER_BYTES + len(body)
        # _map is set: only a mapped WAL is cheap (the caller checks), and no check is added to this hot path.
        if end > len(self._map):  # type: ignore[arg-type]
            self._grow(end)
        self.bytes_written = frame_into(self._map, pos, body)

    def append(self, data: bytes) -> None:
        """Write ``data`` (concatenated frames); fsync first if the sync mode is ``"batch"``."""
        if self._map is not None:
            pos = self.bytes_written
            end = pos + len(data)
            if end > len(self._map):
                self._grow(end)
            self._map[pos:end] = data
        elif self._fd is not None:
            done = os.write(self._fd, data)
            while done < len(data):  # a regular file takes it all at once; a short write is retried
                done += os.write(self._fd, data[done:])
            if self.sync_mode == "batch":
                self._fsync()
        elif self._append:
            self._sink.write(data)
            self._sink.flush()
            if self.sync_mode == "batch":
                self._fsync()
        else:
            self._buffer += data
            if self.sync_mode == "batch" or len(self._buffer) >= self._segment_bytes:
                self._write_segment()
        self.bytes_written += len(data)

    def _grow(self, needed: int) -> None:
        old = self._map
        if old is None:
            raise InvariantViolation(f"{self.path} is not mapped: it cannot grow")
        size = len(old)
        step = min(max(size, _FIRST_CHUNK_BYTES), _MAX_CHUNK_BYTES)
        new_size = max(size + step, needed)
        self._stop_prefaulting()
        self._map = self._reserve(new_size)
        old.close()

    def _fsync(self) -> None:
        if self._local:
            os.fsync(self._descriptor())

    def _write_segment(self) -> None:
        if not self._buffer:
            return
        self._segment += 1
        self.fs.pipe_file(f"{self.path}.{self._segment:06d}", bytes(self._buffer))
        self._buffer.clear()

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._map is not None:
            self._map.flush()  # msync: the mapped pages; the fsync also covers the file's metadata
            self._fsync()
        elif self._append:
            self._file.flush()
            self._fsync()
        else:
            self._write_segment()

    def objects(self) -> tuple[str, ...]:
        """Paths of every object this writer created (the base file, then its segments), in order.

        The tree deletes a flushed WAL by these names rather than by listing the directory.
        """
        base = (self.path,) if self._map is not None or self._append else ()
        return base + tuple(f"{self.path}.{i:06d}" for i in range(1, self._segment + 1))

    def close(self, *, sync: bool) -> None:
        """Hand buffered bytes to storage (fsync them if ``sync``) and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._map is not None:
            self._stop_prefaulting()
            self._map.close()
            fd = self._descriptor()
            os.ftruncate(fd, self.bytes_written)  # drop the reserved, unwritten tail
            if sync:
                self._fsync()
            os.close(fd)
        elif self._append:
            self._file.flush()
            if sync:
                self._fsync()
            self._file.close()
        else:
            self._write_segment()


class NullWal:
    """The WAL of a tree opened with ``wal=False``: every append is dropped (RocksDB's ``disableWAL``).

    The writes live only in the memtable until it is flushed; a crash loses them. For an owner
    that keeps its own log of record and replays it from the position the tree has made durable
    (:attr:`~.tree.LSMTree.durable_seq`), as a replicated store's replica does. Same interface
    as :class:`WalWriter`; ``encode`` returns nothing, so no batch is ever framed.
    """

    cheap = True  # an append never waits
    logs = False  # appends keep nothing: a writer need not encode its batch
    bytes_written = 0

    def __init__(self, number: int) -> None:
        self.number = number

    def encode(self, first_seq: int, ops) -> bytes:
        """Nothing: the batch is not logged."""
        return b""

    def append_batch(self, first_seq: int, ops) -> None:
        """Dropped."""

    def append_one_mapped(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """Dropped."""

    def append(self, data: bytes) -> None:
        """Dropped."""

    def sync(self) -> None:
        """Nothing to make durable."""

    def objects(self) -> tuple[str, ...]:
        """No objects."""
        return ()

    def close(self, *, sync: bool) -> None:
        """Nothing to close."""


def open_wal(fs, directory: str, number: int, opts) -> "WalWriter | NullWal":
    """The writer of WAL ``number`` under the tree's options (a :class:`NullWal` with ``wal=False``)."""
    if not opts.wal:
        return NullWal(number)
    return WalWriter(fs, directory, number, sync=opts.sync, segment_bytes=opts.wal_segment_bytes)


def wal_objects(directory: str, number: int, listing: list[str]) -> tuple[str, ...]:
    """Paths of WAL ``number``'s objects among ``listing`` (names): the base file, then its segments."""
    base = wal_name(number)
    names = [n for n in listing if n == base or n.startswith(base + ".")]
    return tuple(f"{directory}/{n}" for n in sorted(names, key=lambda n: (n != base, n)))


class _Malformed(Exception):
    """A verified frame whose body is not a WAL batch (internal: becomes CorruptionError or a skip)."""


def _decode_batch(body: bytes) -> tuple[int, tuple]:
    """``(first_seq, ops)`` of one WAL frame body, checked against the grammar at the top.

    A checksum only proves the bytes are the ones written, not that a batch writer wrote them, so
    the shape is checked before anything trusts it: a body of another format, a sequence number
    outside ``1..MAX_SEQ``, or an op that is not ``(kind, key: bytes, value: bytes)`` with a
    known kind raises :class:`_Malformed`; an unknown format version raises CorruptionError.
    Sizes are bounded by the frame: msgpack refuses lengths beyond the body it is given.
    """
    try:
        rec = msgpack.unpackb(body, raw=False, use_list=False)
    except Exception as e:  # noqa: BLE001 - any decoding failure of foreign bytes (ExtraData, StackError, ...)
        raise _Malformed(f"not msgpack ({type(e).__name__})") from None
    if type(rec) is not tuple or len(rec) != 3:
        raise _Malformed("not a [format, first_seq, ops] triple")
    fmt, first_seq, ops = rec
    if type(fmt) is not int:
        raise _Malformed(f"format version {fmt!r} is not an integer")
    if fmt != WAL_FORMAT:  # a newer engine's log: never skipped, whatever the recovery mode
        raise CorruptionError(f"WAL format {fmt!r} is not supported (expected {WAL_FORMAT})")
    if type(ops) is not tuple:
        raise _Malformed("ops is not a list")
    if type(first_seq) is not int or not 1 <= first_seq <= MAX_SEQ - len(ops) + 1:
        raise _Malformed(f"first_seq {first_seq!r} is out of range for {len(ops)} ops")
    for op in ops:
        # type() rather than isinstance: msgpack's true is a bool, and bool is an int equal to 1.
        if type(op) is not tuple or len(op) != 3 or type(op[0]) is not int or op[0] not in _KINDS \
                or type(op[1]) is not bytes or type(op[2]) is not bytes:
            raise _Malformed(f"malformed op {_preview(op)}")
        if op[0] == _RANGE_DELETE and op[1] > op[2]:
            raise _Malformed(f"range delete ends before it starts: {_preview(op)}")
    return first_seq, ops


def _preview(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_wal(fs, directory: str, number: int, listing: list[str], *, skip: bool) -> Iterator[tuple]:
    """Yield ``(first_seq, ops, skipped_frames)`` for every intact batch of WAL ``number``, in order.

    A frame that verifies but does not hold a batch (see :func:`_decode_batch`) is damage like a
    checksum mismatch: :class:`CorruptionError` naming the file and the frame's byte offset, or,
    with ``skip=True``, dropped and counted in ``skipped_frames``.
    """
    for path in wal_objects(directory, number, listing):
        data = fs.cat_file(path)
        found = read_log(data, where=path, skip=skip)
        skipped = found.skipped_frames
        # Without skipping, the bodies are the file's frames back to back: their offsets add up.
        offset = 0 if not found.skipped_frames else None
        for body in found.bodies:
            where = f"the frame at byte {offset}" if offset is not None else "a frame"
            if offset is not None:
                offset += HEADER_BYTES + len(body)
            try:
                first_seq, ops = _decode_batch(body)
            except _Malformed as e:
                if not skip:
                    raise CorruptionError(f"{where} is not a WAL batch: {e}", path) from None
                skipped += 1
                continue
            except CorruptionError as e:
                raise CorruptionError(f"{where}: {e}", path) from None
            yield first_seq, ops, skipped
            skipped = 0
        if skipped:
            yield 0, (), skipped
