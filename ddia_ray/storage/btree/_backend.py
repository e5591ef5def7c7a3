"""Random-access byte stores under the page file: local files and ``memory://``.

Theory of operation
-------------------
A copy-on-write page file must write a page *in place* at ``page_no *
page_size`` and make it durable before the meta page that points at it.
Object stores (S3, GCS, ...) only replace whole objects, so they cannot host
this engine; :func:`open_backend` refuses them with a ConfigError naming the
scheme (the LSM engine, which only writes immutable objects, is the one for
object storage). Two backends exist:

* local files (``file://`` or a plain path): ``os.pread``/``os.pwrite`` on
  one descriptor, ``os.fsync`` for durability, an exclusive ``flock`` so a
  second writer (in this or another process) is refused;
* ``memory://``: the file object kept in fsspec's in-memory filesystem
  store (a ``BytesIO``), so ``fsspec`` sees the same bytes tests inspect or
  damage; ``sync`` is a no-op.

A database URL names a directory holding ``data.btree`` (like LMDB's
environment directory); a URL naming an existing file opens that file.

Creation is atomic: a new page file is written under a temporary name,
made durable, and only then *published* under its real name
(:meth:`publish`: a hard link, which never replaces an existing file, then
the temporary name is removed; the directory is fsynced). So a crash during
creation leaves at most a stale temporary file, never a short or empty data
file, and an existing data file is only ever opened (never created over).
"""

from __future__ import annotations

import os

import fsspec

from ..._fs import fsync_dir, is_local
from ...errors import ConfigError

try:  # flock is POSIX-only; without it concurrent writers are simply not detected
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]  # the optional-module idiom: None where the platform lacks it

__all__ = ["open_backend", "exists", "remove", "DATA_FILE"]

DATA_FILE = "data.btree"


class _LocalBackend:
    """A local file accessed with pread/pwrite/fsync."""

    kind = "file"

    def __init__(self, path: str, *, create: bool = False):
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_BINARY", 0)
        self._fd = os.open(path, flags, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                raise ConfigError(f"{path} is already open by another B-tree engine (flock held); "
                                  "close it first: the engine allows one writer per file") from None
        if create:  # truncate only once the lock is ours: never under another process's creation
            os.ftruncate(self._fd, 0)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def sync(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def replace(self, target: str) -> None:
        """Atomically rename this file over ``target`` (and make the rename durable)."""
        os.replace(self.path, target)
        self.path = target
        fsync_dir(os.path.dirname(target))

    def publish(self, target: str) -> None:
        """Give this (complete, synced) file the name ``target``; FileExistsError if that exists."""
        try:
            os.link(self.path, target)  # unlike rename, a link never replaces a file created meanwhile
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: rename, after a last look
            if os.path.exists(target):
                raise FileExistsError(target) from None
            os.rename(self.path, target)
        else:
            os.unlink(self.path)
        self.path = target
        fsync_dir(os.path.dirname(target))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also drops the flock
            self._fd = -1


class _MemoryBackend:
    """A file of fsspec's in-memory filesystem, written in place through its BytesIO."""

    kind = "memory"

    def __init__(self, fs, path: str, *, create: bool = False):
        from fsspec.implementations.memory import MemoryFile

        self.fs, self.path = fs, path
        if create:
            fs.store[path] = MemoryFile(fs, path, b"")
        elif path not in fs.store:
            raise FileNotFoundError(path)
        self._file = fs.store[path]

    def read(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)

    def write(self, offset: int, data: bytes) -> None:
        self._file.seek(offset)
        self._file.write(data)

    def sync(self) -> None:
        """Nothing to do: memory is as durable as it gets."""

    def size(self) -> int:
        return self._file.getbuffer().nbytes

    def replace(self, target: str) -> None:
        """Move this file over ``target``."""
        self.fs.store[target] = self._file
        self.fs.store.pop(self.path, None)
        self.path = target

    def publish(self, target: str) -> None:
        """Give this file the name ``target``; FileExistsError if that exists."""
        if target in self.fs.store:
            raise FileExistsError(target)
        self.replace(target)

    def close(self) -> None:
        self._file = None


def _protocols(fs) -> tuple:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)


def resolve(url: str) -> tuple[str, object, str]:
    """``(kind, fs, data file path)`` for a database URL; ConfigError for object storage."""
    fs, path = fsspec.core.url_to_fs(url)
    protocols = _protocols(fs)
    if is_local(fs):
        kind = "file"
    elif "memory" in protocols:
        kind = "memory"
    else:
        scheme = url.split("://", 1)[0] if "://" in url else protocols[0]
        raise ConfigError(f"the B-tree engine updates pages in place and cannot run on {scheme}:// "
                          "(object stores only replace whole objects); use a file:// or memory:// URL, "
                          "or the lsm engine for object storage")
    if fs.isfile(path):
        return kind, fs, path
    fs.makedirs(path, exist_ok=True)
    return kind, fs, path.rstrip("/") + "/" + DATA_FILE


def open_backend(kind: str, fs, path: str, *, create: bool = False):
    """Open the file at ``path`` for random-access I/O; ``create``: a new, empty one (truncating).

    Without ``create`` a missing file is FileNotFoundError: an existing database is never
    re-created by accident (see the module docstring).
    """
    if kind == "file":
        return _LocalBackend(path, create=create)
    return _MemoryBackend(fs, path, create=create)


def exists(kind: str, fs, path: str) -> bool:
    """Whether the file at ``path`` exists."""
    return os.path.exists(path) if kind == "file" else path in fs.store


def remove(kind: str, fs, path: str) -> None:
    """Delete the file at ``path`` if it exists."""
    if kind == "file":
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        fs.store.pop(path, None)
