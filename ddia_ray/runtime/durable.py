"""A node's durable record log on any fsspec filesystem.

Theory of operation: a node shell appends the records its core asks to
persist, one *frame* per record, and replays them on restart. The format is
self-delimiting and checksummed so that a crash in the middle of an append
(a torn last frame) is recognised and ignored, while damage anywhere else is
reported instead of silently skipped::

    file   := frame*
    frame  := length:u32le crc32:u32le body[length]
    body   := codec.encode(record)          # versioned msgpack

Appends go to ``<root>/<node>/records.log`` with fsspec's append mode (local
files, ``memory://``). Object stores without append get one object per
flush, ``records.<seq>.log``, read back in order. The storage issue brings a
full write-ahead log; this one only has to survive ``ray.kill``.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Iterable

import fsspec

from .. import codec
from ..errors import CorruptRecordError

__all__ = ["DurableLog", "encode_frames", "decode_frames", "apply_records"]

_HEADER = struct.Struct("<II")


def encode_frames(records: Iterable[Any]) -> bytes:
    """Frame each record as ``length, crc32, body``."""
    out = bytearray()
    for rec in records:
        body = codec.encode(rec)
        out += _HEADER.pack(len(body), zlib.crc32(body))
        out += body
    return bytes(out)


def decode_frames(data: bytes, *, where: str = "log") -> list:
    """Decode frames; a torn final frame is dropped, any other damage raises CorruptRecordError."""
    records, pos, n = [], 0, len(data)
    while pos < n:
        if n - pos < _HEADER.size:
            break  # torn header at the tail: the append never completed
        length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if end > n:
            break  # torn body at the tail
        body = data[start:end]
        if zlib.crc32(body) != crc:
            raise CorruptRecordError(f"{where}: checksum mismatch in the frame at byte {pos}")
        records.append(codec.decode(body))
        pos = end
    return records


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
    """Append-only, checksummed record log of one node under an fsspec URL."""

    def __init__(self, root: str, node: str, *, sync: bool = False):
        self.fs, path = fsspec.core.url_to_fs(root)
        self.dir = f"{path.rstrip('/')}/{node}"
        self.url = f"{root.rstrip('/')}/{node}"
        self.fs.makedirs(self.dir, exist_ok=True)
        self._segments = 0
        # On a local disk the log file stays open between appends (opening it through fsspec for
        # every append cost more than the write); other filesystems open it per append.
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self._file = None
        # sync=True also fsyncs every append on a local disk: records then survive a power cut, not
        # only a crash of the process (the default, like a database's "fsync off").
        self.sync = bool(sync)

    @property
    def _path(self) -> str:
        return f"{self.dir}/records.log"

    def append(self, records: Iterable[Any]) -> int:
        """Append and flush ``records``; returns the number of bytes written.

        A :class:`~ddia_ray.runtime.core.Rewrite` among them replaces the whole log by its
        records (written to a new object, then swapped in), and appending resumes after it.
        """
        from .core import Rewrite

        written, run = 0, []
        for rec in records:
            if isinstance(rec, Rewrite):
                written += self._append_frames(encode_frames(run))
                run = []
                written += self._rewrite(encode_frames(rec.records))
            else:
                run.append(rec)
        return written + self._append_frames(encode_frames(run))

    def _append_frames(self, data: bytes) -> int:
        if not data:
            return 0
        if self._local:
            if self._file is None:
                self._file = open(self._path, "ab")  # noqa: SIM115 -- kept open on purpose (see __init__)
            self._file.write(data)
            self._file.flush()  # in the OS before any message that depends on it is sent
            if self.sync:
                os.fsync(self._file.fileno())
            return len(data)
        try:
            with self.fs.open(self._path, "ab") as f:
                f.write(data)
                f.flush()
        except (NotImplementedError, ValueError):
            # Object stores cannot append: one immutable object per flush.
            self._segments += 1
            with self.fs.open(f"{self.dir}/records.{self._segments:012d}.log", "wb") as f:
                f.write(data)
        return len(data)

    def _rewrite(self, data: bytes) -> int:
        self.close()
        tmp = f"{self._path}.rewrite"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
            if self.sync and self._local:
                f.flush()
                os.fsync(f.fileno())
        # A rename on local disks and memory://: the old log or the new one, never a mix. Object
        # stores copy and delete instead, and their append segments are removed only afterwards,
        # so a crash there between the two steps can leave old segments behind: keep logs that
        # are rewritten (Raft members) on a local disk.
        self.fs.mv(tmp, self._path)
        for seg in self._segment_paths():
            self.fs.rm(seg)
        self._segments = 0
        return len(data)

    def _segment_paths(self) -> list:
        return sorted(p for p in self.fs.ls(self.dir, detail=False)
                      if p.rsplit("/", 1)[-1].startswith("records.0"))

    def read_all(self) -> list:
        """Every record appended so far, in order (a torn last frame is ignored)."""
        out = []
        if self.fs.exists(self._path):
            with self.fs.open(self._path, "rb") as f:
                out += decode_frames(f.read(), where=f"{self.url}/records.log")
        segments = self._segment_paths()
        for seg in segments:
            with self.fs.open(seg, "rb") as f:
                out += decode_frames(f.read(), where=seg)
        self._segments = len(segments)
        return out

    def close(self) -> None:
        """Close the kept-open log file, if any (appending reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def destroy(self) -> None:
        """Delete this node's records (tests and demos clean up with it)."""
        self.close()
        if self.fs.exists(self.dir):
            self.fs.rm(self.dir, recursive=True)
