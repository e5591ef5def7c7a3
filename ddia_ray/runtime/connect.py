"""Connecting to Ray: one call that works on a laptop, in a notebook and in a Ray job.

Theory of operation: every ddia-ray entry point that needs Ray calls
:func:`ensure_ray` first. If Ray is already initialised (the user called
``ray.init`` or the code runs inside a Ray job/worker) it is used as it is.
Otherwise Ray is started, honouring ``RAY_ADDRESS`` (join that cluster) or
starting a local one, always in the fixed namespace :data:`NAMESPACE` so named
actors created by one driver can be found by the next.
"""

from __future__ import annotations

import os
import threading

from ..errors import RuntimeNotReadyError

__all__ = ["NAMESPACE", "ensure_ray"]

#: The Ray namespace that holds every named ddia-ray actor.
NAMESPACE = "ddia_ray"

_lock = threading.Lock()


def ensure_ray(**init_kwargs):
    """Make sure this process is connected to Ray; start a local Ray if needed.

    ``init_kwargs`` are passed to ``ray.init`` only when this call starts Ray.
    Returns the ``ray`` module. Raises :class:`RuntimeNotReadyError` with the
    address it tried when Ray cannot be started or joined.
    """
    import ray

    with _lock:
        if ray.is_initialized():
            return ray
        address = os.environ.get("RAY_ADDRESS")
        kwargs = {"namespace": NAMESPACE, "ignore_reinit_error": True, "log_to_driver": True}
        kwargs.update(init_kwargs)
        if address:
            kwargs.setdefault("address", address)
        try:
            ray.init(**kwargs)
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError...
            where = address or "a new local Ray"
            raise RuntimeNotReadyError(
                f"could not start or join Ray at {where}: {e}; check RAY_ADDRESS or run `ray start --head`"
            ) from e
        return ray
