"""Checkpoints: a consistent point-in-time copy of an engine's files, in a directory of its own.

(The module is ``checkpoints``, plural: ``ddia_ray.storage.checkpoint`` is the function below.)

Theory of operation
-------------------
A replica that is new, or too far behind to catch up from the log, installs
the leader's state by copying *files* (RocksDB's Checkpoint API, the snapshot
files of etcd and TiKV), not by encoding the whole state in one message. Each
engine knows how to pin a consistent set of its files; this module holds what
every engine's checkpoint shares:

* :class:`CheckpointWriter` fills one destination directory through fsspec
  (any filesystem: ``file://``, ``memory://``, ``s3://``): it refuses a
  destination that is not empty or absent (:class:`ConfigError`), streams
  each file in :data:`COPY_CHUNK_BYTES` pieces while computing its CRC-32,
  checks the size that arrived, and writes the descriptor ``CHECKPOINT``
  *last*, so a directory holding one is a finished checkpoint. On any failure
  it deletes what it wrote, so the same destination can be used again;
* :func:`checkpoint` asks any engine for a checkpoint
  (``LSMTree.checkpoint``, ``BTreeEngine.checkpoint``);
* :func:`copy_checkpoint` copies a finished checkpoint from one URL to
  another (say from the leader's ``s3://`` bucket to a follower's disk),
  checking each file's size and CRC-32 against the descriptor as it reads the
  source and again by reading the destination back.

A checkpoint directory is opened like any database of its engine
(``LSMTree.open(url)``, ``BTreeEngine.open(url)``); the descriptor is a file
the engines do not look at. Once opened and written to, the directory is a
live database and no longer matches its descriptor, so copying it with
:func:`copy_checkpoint` then fails instead of copying a mixture.

Grammar of the descriptor (the frame is :mod:`ddia_ray.framing`'s)::

    checkpoint := file* "CHECKPOINT"             # the files in the order they were written
    CHECKPOINT := "CHKPOINT" frame(codec(storage.checkpoint))
    storage.checkpoint := engine:str seq:int files:((name:str size:int crc32:int)*)

``seq`` is the engine's sequence number (LSM) or transaction id (B-tree) of
the last write the checkpoint holds: every write up to it, none after it.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Iterable

import fsspec

from .._fs import fsync_dir, is_local
from ..codec import decode, encode, record
from ..errors import CodecError, ConfigError, CorruptionError, InvalidArgumentError, NotADatabaseError
from ..framing import TornObjectError, frame_object, read_object

__all__ = ["CHECKPOINT_FILE", "COPY_CHUNK_BYTES", "CheckpointInfo", "CheckpointWriter", "checkpoint",
           "copy_checkpoint", "read_checkpoint"]

#: The descriptor's name; written last, so its presence marks a finished checkpoint.
CHECKPOINT_FILE = "CHECKPOINT"
#: Bytes read and written per step when a file is copied (bounds the memory a copy holds).
COPY_CHUNK_BYTES = 4 << 20
# 20 or more bits from every other magic of ddia-ray (LSMMANI1, LSMSST01, DDIABTRE), so a
# damaged descriptor is never mistaken for another format's object (see framing.magic_damaged).
_MAGIC = b"CHKPOINT"


def _file_entry_ok(entry) -> bool:
    return (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], str)
            and bool(entry[0]) and "/" not in entry[0] and entry[0] != CHECKPOINT_FILE
            and type(entry[1]) is int and entry[1] >= 0 and type(entry[2]) is int and 0 <= entry[2] < 1 << 32)


@record("storage.checkpoint", version=1)
class CheckpointInfo:
    """The descriptor of a finished checkpoint: its engine, its last sequence number, and its files.

    ``files`` holds ``(name, size_bytes, crc32)`` per file, in the order they were written
    (the engine's commit file, e.g. the LSM manifest, after the files it names). Validated at
    construction, and so on decode: a crafted descriptor cannot name a path outside its directory.
    """

    engine: str
    seq: int
    files: tuple

    def __post_init__(self):
        if not isinstance(self.engine, str) or not self.engine:
            raise InvalidArgumentError("a checkpoint's engine must be a non-empty str")
        if type(self.seq) is not int or self.seq < 0:
            raise InvalidArgumentError(f"a checkpoint's seq must be an int >= 0, got {self.seq!r}")
        if not isinstance(self.files, tuple) or not all(_file_entry_ok(f) for f in self.files):
            raise InvalidArgumentError("a checkpoint's files must be (name, size, crc32) tuples of plain names")
        if len({f[0] for f in self.files}) != len(self.files):
            raise InvalidArgumentError("a checkpoint names a file twice")

    @property
    def total_bytes(self) -> int:
        """Total size of the checkpoint's files (the descriptor not counted)."""
        return sum(size for _, size, _ in self.files)

    def describe(self, url: str, linked: int = 0) -> dict:
        """The plain-data summary the ``checkpoint`` calls return (it crosses actor boundaries as is)."""
        return {"engine": self.engine, "url": url, "seq": self.seq, "files": [name for name, _, _ in self.files],
                "bytes": self.total_bytes, "linked": linked}


def _resolve(url: str, storage_options: dict | None) -> tuple[Any, str]:
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError("a checkpoint URL must be a non-empty str")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise InvalidArgumentError("storage_options must be a dict")
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/") or "/"


def _same_local_fs(a, b) -> bool:
    return is_local(a) and is_local(b)


class CheckpointWriter:
    """Writes one checkpoint directory: its files, then the descriptor (see the module docstring).

    Use it as a context manager: leaving the block by an exception deletes every file it wrote
    (by name: the directory is otherwise empty, it was checked) so the destination can be reused.
    ``storage_options`` are fsspec's for the destination (say an ``s3://`` endpoint and keys).
    ``REQUIRES:`` nobody else writes to the destination meanwhile (it is not locked).
    """

    def __init__(self, dst_url: str, storage_options: dict | None = None):
        self.url = dst_url
        self.fs, self.dir = _resolve(dst_url, storage_options)
        self._local = is_local(self.fs)
        self.files: list[tuple[str, int, int]] = []
        self.linked = 0
        self._written: list[str] = []  # paths to remove if the checkpoint fails
        self._done = False
        self.fs.invalidate_cache(self.dir)  # object stores cache listings; emptiness needs the truth
        if self.fs.exists(self.dir):
            if not self.fs.isdir(self.dir):
                raise ConfigError(f"{dst_url} is a file; a checkpoint needs an empty or absent directory")
            names = self.fs.ls(self.dir, detail=False)
            if names:
                first = str(names[0]).rstrip("/").rsplit("/", 1)[-1]
                raise ConfigError(f"{dst_url} is not empty ({len(names)} entries, e.g. {first!r}); a checkpoint "
                                  "needs an empty or absent directory: remove it or choose another")
        self.fs.makedirs(self.dir, exist_ok=True)

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._done:
            self.abort()

    def path(self, name: str) -> str:
        """The destination path of file ``name``."""
        return f"{self.dir}/{name}"

    def write_chunks(self, name: str, chunks: Iterable[bytes], size: int) -> int:
        """Write file ``name`` from ``chunks``; CorruptionError unless ``size`` bytes arrive. Returns its CRC-32."""
        path = self.path(name)
        self._written.append(path)
        crc, n = 0, 0
        with self.fs.open(path, "wb") as f:
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)
                n += len(chunk)
                f.write(chunk)
            if self._local:  # the descriptor may soon call it finished: make the bytes durable first
                f.flush()
                os.fsync(f.fileno())
        self._check_size(path, n, size)
        self.files.append((name, size, crc))
        return crc

    def copy_file(self, src_fs, src_path: str, name: str, size: int, *, crc: int | None = None,
                  link: bool = False, read_back: bool = False) -> None:
        """Copy the immutable file ``src_path`` of ``src_fs`` (``size`` bytes) as ``name``.

        ``crc``: the CRC-32 the source must have (CorruptionError if what was read differs).
        ``link``: hard-link instead of copying when both sides are the local disk; the caller
        promises the file is never modified in place (see the engines' comments on why that
        holds for theirs). ``read_back``: read the destination again and check its CRC too.
        """
        path = self.path(name)
        if link and _same_local_fs(src_fs, self.fs):
            try:
                os.link(src_path, path)
            except OSError:  # another device (EXDEV) or a filesystem without links: copy instead
                pass
            else:
                self._written.append(path)
                self.linked += 1
                self._check_size(path, self.fs.size(path), size)
                got = _crc_of(self.fs, path, size)  # the descriptor lists every file's checksum
                self._check_crc(src_path, got, crc)
                self.files.append((name, size, got))
                return
        got = self.write_chunks(name, _read_chunks(src_fs, src_path, size), size)
        self._check_crc(src_path, got, crc)
        if read_back:
            self._check_crc(path, _crc_of(self.fs, path, size), got)

    def _check_size(self, path: str, got: int, size: int) -> None:
        self.fs.invalidate_cache(path)
        on_disk = self.fs.size(path)
        if got != size or on_disk != size:
            raise CorruptionError(f"short or long copy: {size} bytes expected, {got} written, "
                                  f"{on_disk} found", path)

    @staticmethod
    def _check_crc(path: str, got: int, want: int | None) -> None:
        if want is not None and got != want:
            raise CorruptionError(f"checksum mismatch: CRC-32 {got:#010x}, the checkpoint says {want:#010x}", path)

    def finish(self, engine: str, seq: int) -> dict:
        """Write the descriptor (the commit point of the checkpoint); returns its summary."""
        info = CheckpointInfo(engine, seq, tuple(self.files))
        if self._local:
            fsync_dir(self.dir)  # the files' directory entries are durable before the descriptor's
        data = frame_object(_MAGIC, encode(info))
        path = self.path(CHECKPOINT_FILE)
        self._written.append(path)
        with self.fs.open(path, "wb") as f:
            f.write(data)
            if self._local:
                f.flush()
                os.fsync(f.fileno())
        if self._local:
            fsync_dir(self.dir)
        self._done = True
        return info.describe(self.url, self.linked)

    def abort(self) -> None:
        """Delete every file written so far (a file already gone is no error)."""
        for path in reversed(self._written):
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass
        self._written.clear()


def _read_chunks(fs, path: str, size: int) -> Iterable[bytes]:
    """``size`` bytes of ``path`` in ranged reads (no shared file position: ``memory://`` files have
    one per file, not per reader); CorruptionError if the file is shorter."""
    offset = 0
    while offset < size:
        want = min(COPY_CHUNK_BYTES, size - offset)
        try:
            chunk = fs.cat_file(path, start=offset, end=offset + want)
        except FileNotFoundError:
            raise CorruptionError("a file of the checkpoint is missing", path) from None
        if len(chunk) != want:
            raise CorruptionError(f"the file ends at {offset + len(chunk)} bytes, {size} expected", path)
        offset += want
        yield chunk


def _crc_of(fs, path: str, size: int) -> int:
    crc = 0
    for chunk in _read_chunks(fs, path, size):
        crc = zlib.crc32(chunk, crc)
    return crc


def read_checkpoint(url: str, *, storage_options: dict | None = None) -> CheckpointInfo:
    """The descriptor of the finished checkpoint at ``url``.

    NotADatabaseError when there is none (nothing there, or a checkpoint that never finished);
    CorruptionError when it is damaged.
    """
    fs, d = _resolve(url, storage_options)
    path = f"{d}/{CHECKPOINT_FILE}"
    try:
        data = fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotADatabaseError(f"{url} holds no finished checkpoint (no {CHECKPOINT_FILE} descriptor)") from None
    try:
        return decode(read_object(data, _MAGIC, where=path), CheckpointInfo)
    except TornObjectError:
        raise CorruptionError("the checkpoint descriptor is truncated", path) from None
    except CodecError as e:
        raise CorruptionError(f"the checkpoint descriptor does not decode: {e}", path) from e


def checkpoint(engine, dst_url: str, *, storage_options: dict | None = None) -> dict:
    """A consistent point-in-time copy of ``engine``'s files in ``dst_url`` (empty or absent).

    The entry point that needs no knowledge of the engine type: it calls the engine's own
    ``checkpoint(dst_url)`` (:meth:`~ddia_ray.storage.lsm.LSMTree.checkpoint`,
    :meth:`~ddia_ray.storage.btree.BTreeEngine.checkpoint`). Returns ``{"engine", "url", "seq",
    "files", "bytes", "linked"}``: ``seq`` is the last write the copy holds, ``linked`` how many
    files were hard-linked rather than copied. An engine without files (``MemoryEngine``: it has
    no URL to open a copy from) raises ConfigError. ``storage_options`` are fsspec's for ``dst_url``.
    """
    method = getattr(engine, "checkpoint", None)
    if not callable(method):
        raise ConfigError(f"{type(engine).__name__} cannot take checkpoints (it has no files to copy); "
                          "use the lsm or btree engine")
    return method(dst_url, storage_options=storage_options)


def copy_checkpoint(src_url: str, dst_url: str, *, src_options: dict | None = None,
                    dst_options: dict | None = None) -> dict:
    """Copy the finished checkpoint at ``src_url`` to ``dst_url`` (empty or absent) through fsspec.

    Each file is checked twice: as it is read from the source (size and CRC-32 against the
    descriptor: a damaged or truncated source raises CorruptionError before anything is
    installed) and after it is written, by reading the destination back (a short or damaged
    write raises CorruptionError). The descriptor is written last, after the files; on any
    failure the files written so far are removed. A source without a descriptor raises
    NotADatabaseError. Files are always copied, never linked: the copy is usually opened and
    written to, and a B-tree page file is updated in place. ``src_options`` and ``dst_options``
    are fsspec's storage options of either side. Returns what :func:`checkpoint` does.
    """
    info = read_checkpoint(src_url, storage_options=src_options)
    src_fs, src_dir = _resolve(src_url, src_options)
    with CheckpointWriter(dst_url, dst_options) as out:
        for name, size, crc in info.files:
            src_fs.invalidate_cache(f"{src_dir}/{name}")
            try:
                actual = src_fs.size(f"{src_dir}/{name}")
            except FileNotFoundError:
                raise CorruptionError("a file the checkpoint lists is missing", f"{src_dir}/{name}") from None
            if actual != size:
                raise CorruptionError(f"the file holds {actual} bytes, the checkpoint says {size}",
                                      f"{src_dir}/{name}")
            out.copy_file(src_fs, f"{src_dir}/{name}", name, size, crc=crc, read_back=True)
        return out.finish(info.engine, info.seq)
