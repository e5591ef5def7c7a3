"""Running plugin code so that it cannot take down its caller: a bound, and every exception caught.

Theory of operation
-------------------
:func:`run_bounded` runs a function in a daemon thread of its own and waits
for it at most ``timeout_s``. What the function raises, ``SystemExit`` and
``KeyboardInterrupt`` included (in that thread neither means the process
should stop: it is the plugin's own doing), comes back as data, and so does a
:class:`~ddia_ray.errors.CallTimeoutError` when it runs past the bound. Python
cannot kill a thread, so a function that never returns is abandoned; as a
daemon its thread cannot hold the process open at exit. A thread per call
costs a fraction of a millisecond (0.1 to 0.4 ms on a busy two-core
machine), which plugin lifecycle steps and health checks, being rare, afford.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import CallTimeoutError

__all__ = ["run_bounded"]


def run_bounded(fn: Callable[[], Any], timeout_s: float, what: str) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread for at most ``timeout_s``: ``(True, answer)``, or ``(False, the
    exception)`` for what it raised (``SystemExit`` too) or a CallTimeoutError naming ``what``."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["answer"] = fn()
        except BaseException as exc:  # noqa: BLE001 - whatever plugin code raises is data for its caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"ddia-ray-plugin {what}", daemon=True).start()
    if not done.wait(timeout_s):
        return False, CallTimeoutError(f"{what} did not return within {timeout_s}s")
    if "error" in box:
        return False, box["error"]
    return True, box.get("answer")
