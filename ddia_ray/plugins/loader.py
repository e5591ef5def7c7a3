"""The process's plugins: one manager per process, and how a Ray worker loads them.

Theory of operation
-------------------
Registries are per process: a plugin's engine registered in the driver is not
registered in an actor on another worker. Each process therefore discovers the
installed plugins itself, through :func:`ensure_plugins`: the first call
discovers the entry points into the process's :func:`default_manager`, later
calls return at once (``refresh=True`` looks again, for a distribution
installed since). Two ways to run it in every worker, both explicit:

* an actor (or task) calls ``ensure_plugins()`` before it looks anything up by
  name, e.g. in its ``__init__``;
* or the driver starts Ray with ``ray.init(runtime_env=runtime_env())``, which
  sets Ray's ``worker_process_setup_hook`` to :data:`WORKER_SETUP_HOOK`, so
  every worker of the job loads the plugins before it runs anything.

No registry below this floor calls into plugins: they stay free of this
package, and the lookup of an unknown name stays an error that names what is
registered (the message says to load the plugin that provides it).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Mapping

from .manager import ConfigSource, PluginManager

__all__ = ["default_manager", "ensure_plugins", "runtime_env", "WORKER_SETUP_HOOK"]

#: What Ray's ``worker_process_setup_hook`` runs in each worker to load the plugins.
WORKER_SETUP_HOOK = "ddia_ray.plugins.loader.ensure_plugins"

_lock = threading.Lock()
_manager: PluginManager | None = None
_discovered = False


def default_manager() -> PluginManager:
    """This process's plugin manager (created on first use; nothing is discovered until
    :func:`ensure_plugins`)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def ensure_plugins(config: ConfigSource = None, *, start: bool = False, refresh: bool = False) -> PluginManager:
    """Discover the installed plugins into :func:`default_manager` once per process (again with
    ``refresh``); with ``config`` initialise the plugins that may be, with ``start`` start them too.
    Returns the manager. Safe to call from many threads and many times: that is how it is meant to be used."""
    global _discovered
    manager = default_manager()
    with _lock:
        if refresh or not _discovered:
            # A distribution installed after this process started is a new directory on sys.path:
            # the import system's directory caches must be dropped to see it.
            importlib.invalidate_caches()
            manager.discover()
            _discovered = True
    if config is not None:
        manager.init_all(config)
    if start:
        manager.start_all()
    return manager


def runtime_env(base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (a Ray runtime environment) plus the setup hook that loads the plugins in every worker:
    ``ray.init(runtime_env=runtime_env())``."""
    env = dict(base or {})
    env["worker_process_setup_hook"] = WORKER_SETUP_HOOK
    return env
