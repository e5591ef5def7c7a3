"""Connecting to Ray: one call that works on a laptop, in a notebook and in a Ray job.

Theory of operation: every ddia-ray entry point that needs Ray calls
:func:`ensure_ray` first. If Ray is already initialised (the user called
``ray.init`` or the code runs inside a Ray job/worker) it is used as it is.
Otherwise Ray is started, honouring ``RAY_ADDRESS`` (join that cluster) or
starting a local one, always in the fixed namespace :data:`NAMESPACE` so named
actors created by one driver can be found by the next. A runtime environment's
worker setup hook given as a path (the plugins' :func:`ddia_ray.plugins.runtime_env`)
also runs in the driver that started Ray, so the driver knows what its workers know.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

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
        _run_setup_hook_here(kwargs.get("runtime_env"))
        return ray


def _run_setup_hook_here(runtime_env: Any) -> None:
    """Run the runtime environment's ``worker_process_setup_hook`` (a ``"module.function"`` path) in
    this driver too. Ray runs it in every worker only, but the driver checks names against the same
    registries its workers fill: a store launched with a plugin's conflict resolver checks the
    resolver's name here, before any replica exists (docs/plugins.md)."""
    hook = runtime_env.get("worker_process_setup_hook") if isinstance(runtime_env, dict) else None
    if not isinstance(hook, str) or "." not in hook:
        return  # a callable hook is Ray's to ship to the workers; a driver that has one can call it itself
    module, _, name = hook.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)()
    except Exception as e:  # noqa: BLE001 - reported as what it is: the setup the workers will run failed here
        raise RuntimeNotReadyError(f"the worker setup hook {hook!r} failed in the driver: {e}") from e
