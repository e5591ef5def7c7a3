"""Checksummed frames: the byte layout shared by the WAL, manifests and SSTable sidecars.

Theory of operation
-------------------
Every durable byte this engine writes, apart from the Parquet data itself,
sits inside a frame whose header carries its own checksum, so a flipped bit
in a *length* is caught too (a plain ``length, crc(body)`` header would turn
a damaged length into a silent "torn tail")::

    log     := frame*                                  # the WAL
    object  := magic[8] frame                           # manifest, sidecar
    frame   := length:u32le body_crc:u32le header_crc:u32le body[length]
    header_crc := crc32(length:u32le body_crc:u32le)

Reading a log, damage is classified the way LevelDB's log reader does:

* a header or body cut short by the end of the data, trailing zero bytes, or
  damage to the *last* frame (only zero bytes after it: the end of the file or
  the space a mapped WAL reserved) are a **torn tail** (the append never
  completed): ignored;
* anything else is **corruption**: :class:`CorruptionError`, or, with
  ``skip=True``, the damaged frame is dropped and reading resumes at the next
  offset where a whole frame verifies (counted in ``skipped_bytes``).

An object is one frame behind a magic string: too short for its header or
body means torn (the writer crashed), a wrong magic means "not ours", and a
complete object with a bad checksum or trailing bytes is corruption.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ...errors import CorruptionError, NotADatabaseError

__all__ = ["HEADER_BYTES", "frame", "LogRead", "read_log", "TornObjectError", "frame_object", "read_object"]

_HEAD = struct.Struct("<II")
_CRC = struct.Struct("<I")
HEADER_BYTES = 12
_MAGIC_BYTES = 8


def frame(body: bytes) -> bytes:
    """One frame around ``body`` (see the module grammar)."""
    head = _HEAD.pack(len(body), zlib.crc32(body))
    return head + _CRC.pack(zlib.crc32(head)) + body


@dataclass(frozen=True)
class LogRead:
    """What :func:`read_log` found: the frame bodies in order and the bytes it had to drop."""

    bodies: tuple
    torn_tail_bytes: int
    skipped_bytes: int
    skipped_frames: int


def _header_ok(data, pos: int) -> bool:
    return zlib.crc32(data[pos:pos + 8]) == _CRC.unpack_from(data, pos + 8)[0]


def _whole_frame_at(data, pos: int, n: int) -> bool:
    if n - pos < HEADER_BYTES or not _header_ok(data, pos):
        return False
    length, crc = _HEAD.unpack_from(data, pos)
    end = pos + HEADER_BYTES + length
    return end <= n and zlib.crc32(data[pos + HEADER_BYTES:end]) == crc


def read_log(data: bytes, *, where: str, skip: bool = False) -> LogRead:
    """Split a log into frame bodies; torn tails are ignored, other damage raises or is skipped."""
    bodies: list[bytes] = []
    pos, n = 0, len(data)
    torn = skipped = skipped_frames = 0
    zeros_from = None  # where the trailing run of zero bytes starts (computed on the first damage)
    while pos < n:
        damage = None
        if n - pos < HEADER_BYTES:
            torn = n - pos
            break
        if not _header_ok(data, pos):
            end = None
            damage = "header checksum mismatch"
        else:
            length, crc = _HEAD.unpack_from(data, pos)
            end = pos + HEADER_BYTES + length
            if end > n:
                torn = n - pos
                break
            body = data[pos + HEADER_BYTES:end]
            if zlib.crc32(body) == crc:
                bodies.append(body)
                pos = end
                continue
            damage = "body checksum mismatch"
        if zeros_from is None:
            zeros_from = len(bytes(data).rstrip(b"\0"))
        if _last_frame(data, pos, end, zeros_from):
            torn = n - pos
            break
        if not skip:
            raise CorruptionError(f"{damage} in the frame at byte {pos}", where)
        nxt = pos + 1
        while nxt < n and not _whole_frame_at(data, nxt, n):
            nxt += 1
        skipped += nxt - pos
        skipped_frames += 1
        pos = nxt
    return LogRead(tuple(bodies), torn, skipped, skipped_frames)


def _last_frame(data, pos: int, end: int | None, zeros_from: int) -> bool:
    """Whether the damaged frame at ``pos`` is the log's last write, cut short: a torn tail.

    Only zero bytes (never written, or reserved by preallocation) may follow a torn
    append. With an intact header the frame's extent is known and must reach them;
    with a damaged one (a copy into a mapped file may land in any byte order) no
    whole frame may start before them.
    """
    if end is not None:
        return end >= zeros_from
    return not any(_whole_frame_at(data, q, len(data)) for q in range(pos + 1, zeros_from))


class TornObjectError(Exception):
    """An object ends before its frame does: its writer crashed (internal signal, not an API error)."""


def frame_object(magic: bytes, body: bytes) -> bytes:
    """``magic`` (8 bytes) followed by one frame around ``body``."""
    if len(magic) != _MAGIC_BYTES:
        raise ValueError("magic must be 8 bytes")
    return magic + frame(body)


def read_object(data: bytes, magic: bytes, *, where: str) -> bytes:
    """The body of a framed object; raises TornObjectError, NotADatabaseError or CorruptionError."""
    if len(data) < _MAGIC_BYTES:
        if magic.startswith(bytes(data)):
            raise TornObjectError(where)
        raise NotADatabaseError(f"{where} is not an object of this engine (bad magic)")
    if data[:_MAGIC_BYTES] != magic:
        raise NotADatabaseError(f"{where} is not an object of this engine (bad magic)")
    pos = _MAGIC_BYTES
    if len(data) - pos < HEADER_BYTES:
        raise TornObjectError(where)
    if not _header_ok(data, pos):
        raise CorruptionError("header checksum mismatch", where)
    length, crc = _HEAD.unpack_from(data, pos)
    end = pos + HEADER_BYTES + length
    if len(data) < end:
        raise TornObjectError(where)
    if len(data) > end:
        raise CorruptionError(f"{len(data) - end} unexpected bytes after the frame", where)
    body = data[pos + HEADER_BYTES:end]
    if zlib.crc32(body) != crc:
        raise CorruptionError("body checksum mismatch", where)
    return bytes(body)
