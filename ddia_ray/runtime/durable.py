"""A node's durable record log on any fsspec filesystem.

Theory of operation
-------------------
A node shell appends the records its core asks to persist and replays them on
restart (``read_all()``, then ``append()``). Records are framed by the one
framing of :mod:`ddia_ray.framing`, whose header checksum also covers the
length, behind a magic that names the format (details, rules and rationale in
``docs/durable-log.md``)::

    file    := MAGIC frame*                   # records.log, and each records.<seq>.log
    MAGIC   := 00 00 00 00 "DRL2"             # durable record log, format 2
    frame   := see ddia_ray.framing           # length, body crc, header crc, body
    body    := codec.encode(record)           # versioned msgpack

    legacy  := (length:u32le crc32:u32le body[length])*     # format 1, no magic

Recovery, run by every ``read_all()`` and before the first ``append()`` of a :class:`DurableLog`:

* a torn tail (an append cut short by a crash: see :mod:`ddia_ray.framing`)
  is *removed*, so the next append continues a clean log: truncated in place
  on a local disk, rewritten elsewhere;
* damage anywhere before the last frame raises :class:`CorruptRecordError`,
  and the file is left exactly as it was (never shortened);
* a format-1 file is read by the format-1 rules (its torn tail dropped) and
  replaced atomically by a format-2 copy (new file, fsync per ``sync``,
  rename) before anything is appended. A format-1 reader fails loudly on a
  format-2 file: to it the magic is an empty frame with a wrong checksum.

Appends go to ``<root>/<node>/records.log`` (local files and ``memory://``
append). Object stores cannot append: each flush there writes one immutable
object ``records.<seq>.log``, read back in order after ``records.log``. Only
the last of these pieces may end torn.

A :class:`~ddia_ray.runtime.core.Rewrite` replaces the log: written to a new
file, then renamed over ``records.log``. A *derived* one (a compaction of what
the log already holds) is written by a thread of its own on a local disk, as
Redis rewrites its append-only file in a child (BGREWRITEAOF): the appends made
meanwhile go to the old log, which stays complete, and are kept in memory too;
the thread writes them after the rewritten records and renames its file in,
under the lock appends take. A crash before the rename leaves the old log,
after it the new one: either replays to the same state. So the core's step
loop no longer waits while the whole log is written (docs/durable-log.md,
"Background rewrites").
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import struct
import threading
import zlib
from typing import Any, BinaryIO, Iterable

import fsspec

from .. import codec
from .._fs import fsync_dir, is_local
from ..errors import CorruptionError, CorruptRecordError
from ..framing import HEADER_BYTES, MAGIC_BYTES, frame, magic_damaged, read_log, whole_frame_at

__all__ = ["MAGIC", "DurableLog", "encode_frames", "decode_frames", "apply_records", "MAX_REWRITE_TAIL_BYTES"]

# Leading zeros on purpose: a format-1 reader takes them for an empty frame, whose checksum
# ("DRL2") then fails, so an old node refuses a new file instead of reading it as empty.
MAGIC = b"\x00\x00\x00\x00DRL2"
_LEGACY_HEADER = struct.Struct("<II")
#: Bytes appended while a background rewrite runs past which the next append waits for it to finish:
#: they are held in memory until the rewritten file takes them.
MAX_REWRITE_TAIL_BYTES = 64 << 20
_SEGMENT_RE = re.compile(r"^records\.(\d{12})\.log$")


def encode_frames(records: Iterable[Any]) -> bytes:
    """The frames of ``records`` (format 2, without the file's magic)."""
    return b"".join(frame(codec.encode(rec)) for rec in records)


def decode_frames(data: bytes, *, where: str = "log") -> list:
    """Decode format-2 frames; a torn final frame is dropped, any other damage raises CorruptRecordError."""
    return [_decode(body, where) for body in _bodies(data, where)[0]]


def _bodies(data, where: str, start: int = 0) -> tuple[tuple, int]:
    """``(frame bodies, bytes of torn tail)`` of the format-2 frames from ``start`` on; damage raises."""
    try:
        read = read_log(data, where=where, start=start)
    except CorruptionError as e:
        raise CorruptRecordError(str(e)) from e
    return read.bodies, read.torn_tail_bytes


def _decode(body: bytes, where: str) -> Any:
    try:
        return codec.decode(body)
    except CorruptRecordError as e:
        # A frame that verifies but holds no record was written by something else. (Other codec
        # errors, an unknown type or version, pass as they are: they say what to import or upgrade.)
        raise CorruptRecordError(f"{where}: a frame with a valid checksum holds no record: {e}") from e


def _legacy_bodies(data, where: str) -> tuple[tuple, int]:
    """Format 1 by its own rules: ``(bodies, bytes of torn tail)``; a bad checksum raises."""
    bodies, pos, n = [], 0, len(data)
    while pos < n:
        if n - pos < _LEGACY_HEADER.size:
            break  # torn header at the tail
        length, crc = _LEGACY_HEADER.unpack_from(data, pos)
        end = pos + _LEGACY_HEADER.size + length
        if end > n:
            break  # torn body at the tail (format 1 cannot tell it from a damaged length)
        body = bytes(data[pos + _LEGACY_HEADER.size:end])
        if zlib.crc32(body) != crc:
            raise CorruptRecordError(f"{where}: checksum mismatch in the format-1 frame at byte {pos}")
        bodies.append(body)
        pos = end
    return tuple(bodies), n - pos


def _parse(data: bytes, where: str) -> tuple[tuple, int, bool]:
    """``(frame bodies, length of the good prefix, is format 1)`` of one whole file."""
    head = bytes(data[:MAGIC_BYTES])
    if head == MAGIC:
        bodies, torn = _bodies(data, where, MAGIC_BYTES)
        return bodies, len(data) - torn, False
    if len(data) < MAGIC_BYTES and MAGIC.startswith(head):
        return (), 0, False  # the first append died inside the magic: nothing was written
    damaged = CorruptRecordError(f"{where}: the magic {head!r} is damaged, or the log was written by a "
                                 f"format this reader does not know (it reads {MAGIC!r} and format 1)")
    if magic_damaged(head, MAGIC) or whole_frame_at(data, MAGIC_BYTES):
        raise damaged
    try:
        bodies, torn = _legacy_bodies(data, where)
    except CorruptRecordError as e:
        if _holds_a_frame(data, 0):
            raise damaged from e  # say what is most likely wrong: a format-2 log with a bad magic
        raise
    good = len(data) - torn
    # Read as format 1, a format-2 file with a damaged (or shifted) magic becomes a huge length,
    # a "torn tail" that would silently drop the whole log. A real format-1 torn tail is part of
    # one record and never holds a whole format-2 frame.
    if _holds_a_frame(data, good):
        raise damaged
    return bodies, good, True


def _holds_a_frame(data, start: int) -> bool:
    """Whether a whole format-2 frame starts anywhere in ``data[start:]`` (one pass, on rare paths only)."""
    return any(whole_frame_at(data, q) for q in range(start, len(data) - HEADER_BYTES + 1))


def apply_records(log: list, records: Iterable[Any]) -> list:
    """The in-memory form of an append: ``log`` extended by ``records``, a :class:`Rewrite` replacing it."""
    from .core import Rewrite

    for rec in records:
        if isinstance(rec, Rewrite):
            log[:] = rec.records
        else:
            log.append(rec)
    return log


class DurableLog:
    """Append-only, checksummed record log of one node under an fsspec URL (see the module docstring)."""

    def __init__(self, root: str, node: str, *, sync: bool = False):
        self.fs, path = fsspec.core.url_to_fs(root)
        self.dir = f"{path.rstrip('/')}/{node}"
        self.url = f"{root.rstrip('/')}/{node}"
        # On a local disk the log file stays open between appends (opening it through fsspec for
        # every append cost more than the write); other filesystems open it per append.
        self._local = is_local(self.fs)
        # sync=True also fsyncs every append on a local disk: records then survive a power cut, not
        # only a crash of the process (the default, like a database's "fsync off").
        self.sync = bool(sync)
        created = self._missing_dirs() if self._local and self.sync else []
        self.fs.makedirs(self.dir, exist_ok=True)
        for d in created:  # a new directory entry is durable only once its parent is synced
            fsync_dir(os.path.dirname(d))
        self._segments = 0  # the highest segment number seen or written
        self._file: BinaryIO | None = None  # records.log on a local disk, opened by the first append
        self._recovered = False
        self._fresh = True  # records.log is absent or empty: the next append writes MAGIC first
        # A derived rewrite being written by its thread (module docstring); appends and the thread's
        # final swap take the lock, so an append lands in the old file or after the swap, whole.
        self._lock = threading.Lock()
        self._job: _BackgroundRewrite | None = None
        #: rewrites (all), rewrites_in_background, rewrite_failures (a background rewrite that failed:
        #: the old log stays, complete; the next compaction tries again), last_rewrite_error (text)
        self.counters: dict[str, Any] = {"rewrites": 0, "rewrites_in_background": 0, "rewrite_failures": 0,
                                         "last_rewrite_error": ""}

    def _missing_dirs(self) -> list:
        out, d = [], self.dir
        while d and d != os.path.dirname(d) and not os.path.isdir(d):
            out.append(d)
            d = os.path.dirname(d)
        return out[::-1]

    @property
    def _path(self) -> str:
        return f"{self.dir}/records.log"

    # --- reading and recovery -------------------------------------------------

    def read_all(self) -> list:
        """Every record appended so far, in order; the first call also recovers the files (module docstring)."""
        self.wait_rewrite()
        return [_decode(body, where) for where, body in self._load()]

    def _load(self) -> list:
        """``(where, body)`` of every record, after cutting a torn tail and upgrading format 1."""
        if self._local:
            # Rewrites a crash cut short: the log they were replacing is whole. Their files go, so
            # that they neither take up the disk nor pass for part of the log.
            for leftover in glob.glob(glob.escape(self._path) + ".rewrite*"):
                _remove_quietly(leftover)
        pieces = ([self._path] if self.fs.exists(self._path) else []) + self._segment_paths()
        self._fresh = True  # until records.log is found holding at least its magic
        out = []
        for i, path in enumerate(pieces):
            data = self.fs.cat_file(path)
            where = self._where(path)
            bodies, good, legacy = _parse(data, where)
            if i < len(pieces) - 1 and good < len(data):
                # A later piece was written after this one: its tail is not the log's tail.
                raise CorruptRecordError(f"{where}: damaged frame at byte {good}, and records were written after it")
            repaired = legacy or good < len(data)
            if repaired:
                self._repair(path, data, bodies, good, legacy)
            out += [(where, b) for b in bodies]
            if path == self._path:  # _repair removes a file left without a whole frame
                self._fresh = not data or (repaired and not bodies)
        self._recovered = True
        return out

    def _where(self, path: str) -> str:
        return f"{self.url}/{path.rsplit('/', 1)[-1]}"

    def _repair(self, path: str, data: bytes, bodies: tuple, good: int, legacy: bool) -> None:
        """Make ``path`` a clean format-2 file holding ``bodies`` (the torn tail gone)."""
        self.close()
        if not bodies:
            self.fs.rm_file(path)  # nothing acknowledged is lost: there are no whole frames
            if self._local and self.sync:
                fsync_dir(self.dir)
        elif not legacy and self._local:
            # Cutting only the torn bytes is safe in place: a crash leaves either length.
            with open(path, "r+b") as f:
                f.truncate(good)
                if self.sync:
                    os.fsync(f.fileno())
        else:
            self._replace(path, MAGIC + b"".join(frame(b) for b in bodies) if legacy else bytes(data[:good]))

    def _segment_paths(self) -> list:
        found = []
        try:
            listing = self.fs.ls(self.dir, detail=False)
        except FileNotFoundError:
            listing = []
        for p in listing:
            m = _SEGMENT_RE.match(p.rstrip("/").rsplit("/", 1)[-1])
            if m:
                found.append((int(m.group(1)), p))
        found.sort()
        self._segments = max([self._segments] + [n for n, _ in found])
        return [p for _, p in found]

    # --- writing ----------------------------------------------------------------

    def append(self, records: Iterable[Any]) -> int:
        """Append and flush ``records``; returns the number of bytes written.

        A :class:`~ddia_ray.runtime.core.Rewrite` among them replaces the whole log by its
        records (written to a new object, then swapped in), and appending resumes after it.
        A derived one on a local disk is written in the background (module docstring); its
        bytes are not counted here.
        """
        from .core import Rewrite

        if not self._recovered:
            self._load()  # never append after a torn tail or to a format-1 file
        job = self._job
        if job is not None and (job.finished or job.error is not None):
            self.wait_rewrite()  # its thread has ended: appends go straight to the file again
        written = 0
        run: list[Any] = []
        for rec in records:
            if isinstance(rec, Rewrite):
                written += self._append_frames(encode_frames(run))
                run = []
                self.wait_rewrite()  # one rewrite at a time, in order
                self.counters["rewrites"] += 1
                if rec.derived and self._local:
                    self._start_rewrite(rec.records)
                else:
                    written += self._rewrite(encode_frames(rec.records))
            else:
                run.append(rec)
        written += self._append_frames(encode_frames(run))
        job = self._job
        if job is not None and job.tail_bytes > MAX_REWRITE_TAIL_BYTES:
            self.wait_rewrite()  # the memory the tail holds stays bounded
        return written

    def _append_frames(self, data: bytes) -> int:
        if not data:
            return 0
        if self._job is None:
            return self._write_frames(data)
        with self._lock:
            written = self._write_frames(data)
            job = self._job
            if job is not None and not job.finished:
                job.tail.append(data)  # the rewritten file takes it too, after its records
                job.tail_bytes += len(data)
            return written

    def _write_frames(self, data: bytes) -> int:
        fresh = self._fresh
        if fresh:
            data = MAGIC + data
        if self._local:
            if self._file is None:
                self._file = open(self._path, "ab")  # noqa: SIM115 -- kept open on purpose (see __init__)
            self._file.write(data)
            self._file.flush()  # in the OS before any message that depends on it is sent
            if self.sync:
                os.fsync(self._file.fileno())
                if fresh:
                    fsync_dir(self.dir)  # the new file's directory entry
            self._fresh = False
            return len(data)
        try:
            with self.fs.open(self._path, "ab") as f:
                f.write(data)
                f.flush()
            self._fresh = False
        except (NotImplementedError, ValueError):
            # Object stores cannot append: one immutable object per flush, each with its magic.
            if not fresh:
                data = MAGIC + data
            self._segments += 1
            with self.fs.open(f"{self.dir}/records.{self._segments:012d}.log", "wb") as f:
                f.write(data)
        return len(data)

    # --- background rewrites ------------------------------------------------------

    def _start_rewrite(self, records: tuple) -> None:
        # A name of its own: a halted process's thread still writing its file can never mix its
        # bytes into the file of the process that replaced it (see abandon_rewrite).
        job = _BackgroundRewrite(records, f"{self._path}.rewrite-{os.getpid()}-{next(_REWRITES)}")
        self._job = job
        self.counters["rewrites_in_background"] += 1
        job.thread = threading.Thread(target=self._rewrite_in_background, args=(job,), daemon=True,
                                      name=f"rewrite {self.dir.rsplit('/', 1)[-1]}")
        job.thread.start()

    def _rewrite_in_background(self, job: "_BackgroundRewrite") -> None:
        """The thread of a derived rewrite: its records, then (under the lock) what was appended
        since, then the rename. A failure, or an abandoned job, leaves the old log in place, whole."""
        try:
            with open(job.path, "wb") as f:
                f.write(MAGIC)
                # One record at a time: the step loop takes the GIL back between two encodings, so it
                # waits for one record's encoding at most, not for the whole log's.
                for rec in job.records:
                    if job.abandoned:
                        break
                    f.write(_rewrite_frame(rec))
                with self._lock:
                    if job.abandoned:
                        raise _Abandoned()
                    for data in job.tail:
                        f.write(data)
                    f.flush()
                    if self.sync:
                        os.fsync(f.fileno())  # the new bytes are on disk before the name points at them
                    os.replace(job.path, self._path)
                    # Swapped: from here on appends must reach the new file (the old one's handle
                    # names an unlinked file), whatever happens next.
                    job.finished = True
                    self._fresh = False
                    old, self._file = self._file, None
                    if old is not None:
                        old.close()
                    if self.sync:
                        fsync_dir(self.dir)  # the rename itself survives a power cut
        except Exception as e:  # noqa: BLE001 - recorded; the old log is whole (see counters)
            if not job.finished:
                _remove_quietly(job.path)
            job.error = e
        finally:
            job.records = ()  # the core may let go of them: nothing here needs them any more
            job.tail = []

    def abandon_rewrite(self) -> None:
        """Make a background rewrite under way give up without touching the log (its file is
        removed). A shell halted before its process is killed calls it: the process that replaces
        it reads and appends to this log, which a late rename would take from under it."""
        with self._lock:
            if self._job is not None and not self._job.finished:
                self._job.abandoned = True

    def wait_rewrite(self) -> None:
        """Wait for a background rewrite under way, if any, to be swapped in (or to fail: counted in
        :attr:`counters`, the old log kept)."""
        job = self._job
        if job is None:
            return
        if job.thread is not None:
            job.thread.join()
        self._job = None
        if job.error is not None and not job.abandoned:
            self.counters["rewrite_failures"] += 1
            self.counters["last_rewrite_error"] = f"{type(job.error).__name__}: {job.error}"

    def _rewrite(self, frames: bytes) -> int:
        self.close()
        data = MAGIC + frames
        self._replace(self._path, data)
        # Object stores copy and delete instead of renaming, and their append segments are removed
        # only afterwards, so a crash there between the two steps can leave old segments behind:
        # keep logs that are rewritten (Raft members) on a local disk.
        for seg in self._segment_paths():
            self.fs.rm(seg)
        self._segments = 0
        self._fresh = False
        return len(data)

    def _replace(self, path: str, data: bytes) -> None:
        """Swap ``data`` in for ``path``: the old file or the new one after a crash, never a mix."""
        tmp = f"{path}.rewrite"
        if self._local:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.sync:
                    os.fsync(f.fileno())  # the new bytes are on disk before the name points at them
            os.replace(tmp, path)
            if self.sync:
                fsync_dir(self.dir)  # the rename itself survives a power cut
            return
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)  # a rename on memory://; copy and delete on object stores

    def close(self) -> None:
        """Finish a background rewrite under way and close the kept-open log file, if any (appending
        reopens it)."""
        self.wait_rewrite()
        if self._file is not None:
            self._file.close()
            self._file = None

    def destroy(self) -> None:
        """Delete this node's records (tests and demos clean up with it)."""
        self.close()
        if self.fs.exists(self.dir):
            self.fs.rm(self.dir, recursive=True)
        self._fresh, self._segments = True, 0


class _BackgroundRewrite:
    """A derived rewrite being written by its thread: the records, and the frames appended since."""

    __slots__ = ("records", "path", "tail", "tail_bytes", "thread", "finished", "abandoned", "error")

    def __init__(self, records: tuple, path: str):
        self.records = records
        self.path = path  # the new file, renamed over the log when whole
        self.abandoned = False
        self.tail: list[bytes] = []
        self.tail_bytes = 0
        self.thread: threading.Thread | None = None
        self.finished = False  # swapped in (set under the log's lock)
        self.error: BaseException | None = None


class _Abandoned(Exception):
    """A background rewrite given up (:meth:`DurableLog.abandon_rewrite`)."""


_REWRITES = itertools.count(1)


def _rewrite_frame(rec: Any) -> bytes:
    """One record's frame as a background rewrite writes it (a module function so that a test can
    hold a rewrite at a record)."""
    return frame(codec.encode(rec))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
