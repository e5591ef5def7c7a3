"""Faulting a mapped WAL's reserved pages in ahead of the writer, without the GIL.

Theory of operation
-------------------
A mapped WAL (:mod:`.wal`) appends by copying into a shared file mapping. The
first write to each 4 KiB page of it traps into the kernel, which finds or
allocates the page-cache page and, for a freshly reserved (``fallocate``)
extent, asks the filesystem to make the block writable. On this project's VM
that first touch cost ~2 µs per put's frame, 15x the copy itself
(docs/storage-engines.md, "Fresh memory: WAL prefaulting and the flush's
binary columns"), paid by the writer while it holds the tree's mutex and the GIL.

:class:`Prefaulter` moves that cost to a short-lived thread per reservation:
it calls ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14) on the newly reserved
range one step at a time through :mod:`ctypes`, which releases the GIL during
the call, so the writer keeps running on the other core and finds its pages
already writable. Populating only faults pages in; it never changes their
contents, so racing the writer on the same pages is harmless: whichever
touches a page first pays for it.

Safety: the thread works on a raw address, so the mapping must not be
unmapped while a call runs. Every call is made under :attr:`Prefaulter._lock`
after checking ``_stopped``, and :meth:`Prefaulter.stop` (which the WAL calls
before it closes or replaces a mapping) sets ``_stopped`` under the same lock,
so after ``stop()`` returns no call is running and none will start.

Where the call is unavailable (not Linux, an older kernel, no libc through
ctypes) the first failure switches prefaulting off for the process and the WAL
behaves exactly as before.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading

__all__ = ["Prefaulter", "prefault_supported"]

#: ``MADV_POPULATE_WRITE`` from <linux/mman.h>; Python's mmap module has no name for it before 3.13.
_MADV_POPULATE_WRITE = 23
#: Bytes populated per call: short enough that stop() waits at most a few milliseconds.
STEP_BYTES = 1 << 20

_madvise = None
_enabled = sys.platform.startswith("linux")
if _enabled:
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _madvise = _libc.madvise
        _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _enabled = False


def prefault_supported() -> bool:
    """Whether mapped WALs are prefaulted in this process (False once a call has failed)."""
    return _enabled


def _address(mapping: mmap.mmap) -> int:
    """The address of ``mapping``'s first byte (the buffer export is released at once, so the
    mapping can still be closed; :class:`Prefaulter` makes sure no call outlives it)."""
    view = ctypes.c_char.from_buffer(mapping)
    try:
        return ctypes.addressof(view)
    finally:
        del view


class Prefaulter:
    """Populates ``mapping[start:end]`` for writing on a background thread (see the module docstring)."""

    def __init__(self, mapping: mmap.mmap, start: int, end: int):
        self._lock = threading.Lock()
        self._stopped = False
        self.populated = start  # everything below is faulted in (or was never asked for)
        self._thread: threading.Thread | None = None
        if not _enabled or end <= start:
            return
        self._base = _address(mapping)
        self._end = end
        self._thread = threading.Thread(target=self._run, name="ddia-wal-prefault", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        global _enabled
        while True:
            with self._lock:
                pos = self.populated
                if self._stopped or pos >= self._end:
                    return
                step = min(STEP_BYTES, self._end - pos)
                if _madvise(self._base + pos, step, _MADV_POPULATE_WRITE) != 0:  # type: ignore[misc]
                    # EINVAL: a kernel without the call (or a filesystem that refuses it); the
                    # writer faults its own pages, as without a prefaulter.
                    _enabled = False
                    return
                self.populated = pos + step

    def stop(self) -> None:
        """Stop populating; once this returns no call on the mapping runs or will run."""
        with self._lock:
            self._stopped = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
