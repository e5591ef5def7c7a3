"""Two facts about files that every durable writer needs: is this filesystem the local disk, and
how to make a directory entry durable.

Theory of operation: a new or renamed file survives a power cut only once its directory is
fsynced too (the entry lives in the directory, not in the file). Only local disks have
directories to sync and file descriptors to sync them with; ``memory://`` and object stores make
a written object visible atomically and have nothing to sync. The durable log, the LSM's
manifests and SSTables and the B-tree's page file all ask these two questions, so they are
answered once, here.
"""

from __future__ import annotations

import os

__all__ = ["is_local", "arrow_fs", "fsync_dir"]


def is_local(fs) -> bool:
    """Whether the fsspec filesystem ``fs`` is the local disk (``file://``)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def arrow_fs(fs):
    """``fs`` (fsspec) as a pyarrow filesystem: Arrow's own for the local disk, else fsspec's wrapped.

    Arrow's threaded scans over a Python filesystem can abort the interpreter at exit (pyarrow 26:
    "terminate called without an active exception"), so local files avoid the wrapper, and readers
    scan wrapped filesystems with ``use_threads=False``."""
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem() if is_local(fs) else pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` durable (new, renamed or removed files in it)."""
    if os.name != "posix":  # pragma: no cover - no directory file descriptors to sync there
        return
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
