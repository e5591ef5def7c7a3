"""Versions and the manifest: which SSTables are live, committed by writing a new numbered object.

Theory of operation
-------------------
A :class:`Version` is an immutable list of live SSTables per level (level 0
newest first by sequence number; deeper levels sorted by key and
non-overlapping). Flushes and compactions build the next version with
:meth:`Version.apply` and commit it by writing ``MANIFEST-<n+1>``, a framed
codec record of the *whole* version plus the last sequence number, the first
WAL still to replay and the next file number. There is no ``CURRENT`` file and
no rename (neither exists on S3): the current manifest is the highest-numbered
one, found by listing. The commit point is that object being complete:

* a manifest cut short (the writer crashed mid-put) is *torn*; if it is the
  newest it is ignored and the previous one is used (its files are still there,
  because files are only deleted after the manifest that drops them is written);
* a complete manifest that fails its checksum is *corruption*: opening raises
  :class:`CorruptionError` rather than silently rolling back acknowledged data;
* a complete, verified object that is not an LSM manifest is
  :class:`NotADatabaseError`, and so is a magic far from ours (another
  engine's ``MANIFEST-*``); a magic within a few flipped bits of ours is a
  damaged manifest of ours: :class:`CorruptionError` (see
  :func:`ddia_ray.framing.magic_damaged`).

Versions are reference counted by readers (snapshots, iterators, in-flight
gets); a file dropped from the current version is deleted only once no live
version names it (see ``LSMTree._delete_obsolete``).
"""

from __future__ import annotations

import re
from typing import Iterable

from ..._fs import fsync_dir, is_local
from ...codec import decode, encode, record
from ...errors import CodecError, CorruptionError, InvalidArgumentError, NotADatabaseError
from ...framing import TornObjectError, frame_object, read_object
from .sstable import FileMeta, put_object

__all__ = ["ENGINE_NAME", "ManifestRecord", "Version", "ManifestStore", "manifest_name", "manifest_bytes",
           "MANIFEST_RE"]

ENGINE_NAME = "lsm"
_MAGIC = b"LSMMANI1"
MANIFEST_RE = re.compile(r"^MANIFEST-(\d{6,})$")


def manifest_name(number: int) -> str:
    """The object name of manifest ``number``."""
    return f"MANIFEST-{number:06d}"


def manifest_bytes(rec: "ManifestRecord") -> bytes:
    """The object ``MANIFEST-<rec.number>`` holds: ``rec`` framed behind the manifest magic."""
    return frame_object(_MAGIC, encode(rec))


@record("storage.lsm.manifest", version=1)
class ManifestRecord:
    """One committed version of the database."""

    engine: str
    number: int
    last_seq: int
    log_number: int
    next_file: int
    compaction: str
    levels: tuple  # tuple per level of FileMeta

    def __post_init__(self):
        if self.number < 1 or self.last_seq < 0 or self.next_file < 1:
            raise InvalidArgumentError("manifest counters out of range")
        if not all(isinstance(f, FileMeta) for level in self.levels for f in level):
            raise InvalidArgumentError("manifest levels must hold file metadata")


class Version:
    """An immutable set of live SSTables per level; ``refs`` counts the readers pinning it."""

    __slots__ = ("levels", "smallest", "refs", "numbers")

    def __init__(self, levels: Iterable[Iterable[FileMeta]]):
        out = []
        for i, files in enumerate(levels):
            files = list(files)
            if i == 0:
                files.sort(key=lambda f: (f.max_seq, f.number), reverse=True)
            else:
                files.sort(key=lambda f: f.smallest)
            out.append(tuple(files))
        self.levels: tuple = tuple(out)
        self.smallest = tuple([f.smallest for f in files] for files in self.levels)
        self.numbers = frozenset(f.number for files in self.levels for f in files)
        self.refs = 0

    def apply(self, deleted: Iterable[int] = (), added: Iterable[tuple[int, FileMeta]] = ()) -> "Version":
        """The version after removing file numbers ``deleted`` and adding ``(level, meta)`` pairs."""
        gone = set(deleted)
        levels = [[f for f in files if f.number not in gone] for files in self.levels]
        for level, meta in added:
            levels[level].append(meta)
        return Version(levels)

    def files(self) -> list[tuple[int, FileMeta]]:
        """Every live ``(level, meta)``."""
        return [(i, f) for i, files in enumerate(self.levels) for f in files]

    def level_bytes(self, level: int) -> int:
        """Total Parquet bytes of ``level``."""
        return sum(f.size for f in self.levels[level])

    def overlapping(self, level: int, lo: bytes, hi: bytes) -> list[FileMeta]:
        """Files of ``level`` whose key range meets ``[lo, hi]``."""
        return [f for f in self.levels[level] if f.overlaps(lo, hi)]


class ManifestStore:
    """Reads and writes the numbered manifest objects of one database directory."""

    def __init__(self, fs, directory: str):
        self.fs = fs
        self.directory = directory

    @staticmethod
    def numbers(listing: Iterable[str]) -> list[int]:
        """Manifest numbers present in a directory listing (names only), ascending."""
        return sorted(int(m.group(1)) for n in listing if (m := MANIFEST_RE.match(n)))

    def write(self, rec: ManifestRecord) -> int:
        """Write ``rec`` as ``MANIFEST-<rec.number>``; returns the bytes written."""
        data = manifest_bytes(rec)
        put_object(self.fs, f"{self.directory}/{manifest_name(rec.number)}", data)
        if is_local(self.fs):  # make the new directory entries durable too
            fsync_dir(self.directory)
        return len(data)

    def load_current(self, listing: Iterable[str]) -> tuple[ManifestRecord | None, list[int]]:
        """``(current manifest or None, numbers of torn manifests to delete)``."""
        torn: list[int] = []
        for number in reversed(self.numbers(listing)):
            path = f"{self.directory}/{manifest_name(number)}"
            data = self.fs.cat_file(path)
            try:
                body = read_object(data, _MAGIC, where=path)
            except TornObjectError:
                if torn or number != self.numbers(listing)[-1]:
                    raise CorruptionError("an older manifest is torn too", path) from None
                torn.append(number)
                continue
            try:
                rec = decode(body)
            except CodecError as e:
                raise NotADatabaseError(f"{path} is not an LSM manifest: {e}") from e
            if not isinstance(rec, ManifestRecord) or rec.engine != ENGINE_NAME:
                raise NotADatabaseError(f"{path} is not an LSM manifest")
            if rec.number != number:
                raise CorruptionError(f"manifest claims number {rec.number}", path)
            return rec, torn
        return None, torn
