"""Checksummed frames: the one byte layout of every durable log and small object ddia-ray writes.

Theory of operation
-------------------
The runtime's durable log (:mod:`ddia_ray.runtime.durable`), the LSM-tree's
WAL, its manifests and its SSTable sidecars all put their bytes in frames
whose header carries its own checksum, so a flipped bit in a *length* is
caught too (a plain ``length, crc(body)`` header turns a damaged length into
a silent "torn tail")::

    log     := frame*                                   # a WAL, the frames of a durable log
    object  := magic[8] frame                           # manifest, sidecar
    frame   := length:u32le body_crc:u32le header_crc:u32le body[length]
    header_crc := crc32(length:u32le body_crc:u32le)

Reading a log, damage is classified the way LevelDB's log reader does:

* a header or body cut short by the end of the data, trailing zero bytes, or
  damage to the *last* frame (only zero bytes after it: the end of the file or
  the space a mapped WAL reserved) are a **torn tail** (the append never
  completed): ignored, and reported as ``torn_tail_bytes`` so that a writer can
  cut them off before it appends again;
* anything else is **corruption**: :class:`CorruptionError`, or, with
  ``skip=True``, the damaged frame is dropped and reading resumes at the next
  offset where a whole frame verifies (counted in ``skipped_bytes``).

A header is never trusted before its checksum verifies, and a length is never
used to allocate: a huge length can only make a frame run past the end of the
data, which is a torn tail. Memory stays bounded by the input.

An object is one frame behind a magic string: too short for its header or
body means torn (the writer crashed); a complete object with a bad checksum or
trailing bytes is corruption. A wrong magic is classified by
:func:`magic_damaged`: within :data:`MAGIC_DAMAGE_BITS` flipped bits of the
expected one it is ours and damaged (:class:`CorruptionError`); further away
it is somebody else's file (:class:`NotADatabaseError`). Callers that *know*
the object must be theirs (an SSTable sidecar named by a manifest) turn that
into corruption too.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import CorruptionError, InvalidArgumentError, NotADatabaseError

__all__ = ["HEADER_BYTES", "MAGIC_BYTES", "MAGIC_DAMAGE_BITS", "frame", "frame_into", "LogRead", "read_log",
           "whole_frame_at", "magic_damaged", "TornObjectError", "frame_object", "read_object"]

_HEAD = struct.Struct("<II")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<III")  # _HEAD then _CRC, written in one call by frame_into
HEADER_BYTES = 12
MAGIC_BYTES = 8
# A magic that differs from ours in at most this many bits (one byte's worth) is ours, damaged:
# a random 64-bit string lands that close with probability ~3e-10, while one flipped bit or one
# overwritten byte always does. Magics of different formats must stay more than twice as far
# apart (LSMMANI1 and LSMSST01 differ in 14 bits), so a damaged one is never nearer another's.
MAGIC_DAMAGE_BITS = 8


def frame(body: bytes) -> bytes:
    """One frame around ``body`` (see the module grammar)."""
    head = _HEAD.pack(len(body), zlib.crc32(body))
    return head + _CRC.pack(zlib.crc32(head)) + body


def frame_into(buf, pos: int, body: bytes) -> int:
    """Write :func:`frame` ``(body)`` into the writable buffer ``buf`` at ``pos``; returns its end.

    The same bytes as ``frame(body)`` without building them first: a mapped log's single-record
    append writes straight into its mapping (two copies fewer per record). ``buf`` must hold
    ``HEADER_BYTES + len(body)`` bytes from ``pos``.
    """
    n = len(body)
    crc = zlib.crc32(body)
    _HEADER.pack_into(buf, pos, n, crc, zlib.crc32(_HEAD.pack(n, crc)))
    start = pos + HEADER_BYTES
    end = start + n
    buf[start:end] = body
    return end


@dataclass(frozen=True)
class LogRead:
    """What :func:`read_log` found: the frame bodies in order and the bytes it had to drop."""

    bodies: tuple
    torn_tail_bytes: int
    skipped_bytes: int
    skipped_frames: int


def _header_ok(data, pos: int) -> bool:
    return zlib.crc32(data[pos:pos + 8]) == _CRC.unpack_from(data, pos + 8)[0]


def whole_frame_at(data, pos: int, n: int | None = None) -> bool:
    """Whether a whole frame whose header and body both verify starts at ``data[pos]`` (and ends by ``n``)."""
    n = len(data) if n is None else n
    if n - pos < HEADER_BYTES or not _header_ok(data, pos):
        return False
    length, crc = _HEAD.unpack_from(data, pos)
    end = pos + HEADER_BYTES + length
    return end <= n and zlib.crc32(data[pos + HEADER_BYTES:end]) == crc


def read_log(data: bytes, *, where: str, skip: bool = False, start: int = 0) -> LogRead:
    """Split ``data[start:]`` into frame bodies; torn tails are ignored, other damage raises or is skipped.

    ``start`` skips a file's own header (a magic) without copying the data; byte
    offsets in error messages count from the start of ``data``.
    """
    bodies: list[bytes] = []
    pos, n = start, len(data)
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
        while nxt < n and not whole_frame_at(data, nxt, n):
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
    return not any(whole_frame_at(data, q, len(data)) for q in range(pos + 1, zeros_from))


class TornObjectError(Exception):
    """An object ends before its frame does: its writer crashed (internal signal, not an API error)."""


def magic_damaged(found: bytes, magic: bytes) -> bool:
    """Whether ``found`` (8 bytes) is ``magic`` with at most :data:`MAGIC_DAMAGE_BITS` bits flipped, but not equal."""
    found = bytes(found[:MAGIC_BYTES])
    if len(found) != len(magic) or found == magic:
        return False
    flipped = int.from_bytes(found, "little") ^ int.from_bytes(magic, "little")
    return bin(flipped).count("1") <= MAGIC_DAMAGE_BITS


def frame_object(magic: bytes, body: bytes) -> bytes:
    """``magic`` (8 bytes) followed by one frame around ``body``."""
    if len(magic) != MAGIC_BYTES:
        raise InvalidArgumentError(f"magic must be {MAGIC_BYTES} bytes, got {len(magic)}")
    return magic + frame(body)


def read_object(data: bytes, magic: bytes, *, where: str) -> bytes:
    """The body of a framed object; raises TornObjectError, NotADatabaseError or CorruptionError."""
    if len(data) < MAGIC_BYTES:
        if magic.startswith(bytes(data)):
            raise TornObjectError(where)
        raise NotADatabaseError(f"{where} is not an object of this engine (bad magic)")
    if data[:MAGIC_BYTES] != magic:
        if magic_damaged(data[:MAGIC_BYTES], magic):
            # One flipped bit must not turn an acknowledged commit into "not a database": the
            # caller would then offer to create a new one over it (see the module docstring).
            raise CorruptionError(f"the magic {bytes(data[:MAGIC_BYTES])!r} is a damaged {magic!r}", where)
        raise NotADatabaseError(f"{where} is not an object of this engine (bad magic)")
    pos = MAGIC_BYTES
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
