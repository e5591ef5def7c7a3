"""The hooks a plugin may implement: four for its lifecycle, five for the extension points.

Theory of operation
-------------------
Each method below is a pluggy hook specification; a plugin implements any of
them under the same name (``@hookimpl`` optional for a ``ddia_ray_*`` name),
taking any subset of the parameters listed. pluggy checks at registration that
an implementation asks for no parameter its specification lacks, and the
manager refuses a plugin implementing a ``ddia_ray_*`` hook that is not listed
here (a typo would otherwise be a hook that silently never runs).

Lifecycle hooks (see :mod:`ddia_ray.plugins.lifecycle` for the states):

===================  =====================================================
``ddia_ray_init``    configure from ``config`` (a read-only mapping); may run again
``ddia_ray_start``   start what the plugin runs (threads, connections)
``ddia_ray_stop``    stop it; the plugin may be started again later
``ddia_ray_health``  True/None: healthy; False or a str: unhealthy (the str says why)
===================  =====================================================

Extension hooks return a mapping of names to what the plugin provides; each
kind is registered where ddia-ray looks it up (:mod:`ddia_ray.plugins.kinds`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .api import hookspec

__all__ = ["PluginSpec"]


class PluginSpec:
    """The hook specifications of plugin API 1.0 (registered with pluggy by the manager)."""

    # --- lifecycle ------------------------------------------------------------------

    @hookspec
    def ddia_ray_init(self, config: Mapping[str, Any]) -> None:
        """Configure the plugin from ``config``: its section of the configuration (empty if none)."""

    @hookspec
    def ddia_ray_start(self) -> None:
        """Start: after ``ddia_ray_init``, or again after ``ddia_ray_stop``."""

    @hookspec
    def ddia_ray_stop(self) -> None:
        """Stop what ``ddia_ray_start`` started."""

    @hookspec
    def ddia_ray_health(self) -> bool | str | None:
        """Report health: True or None when healthy, False or a reason (str) when not. Must answer
        within the manager's ``health_timeout_s``; a health check that raises or hangs fails the plugin."""

    # --- extension points -----------------------------------------------------------

    @hookspec
    def ddia_ray_storage_engines(self) -> Mapping[str, Callable[..., Any]] | None:
        """Storage engines: name -> opener ``(url, **options) -> StorageEngine``."""

    @hookspec
    def ddia_ray_pickers(self) -> Mapping[str, Callable[..., Any]] | None:
        """Load-balancing pickers: name -> factory ``(rng: random.Random) -> Picker``."""

    @hookspec
    def ddia_ray_conflict_resolvers(self) -> Mapping[str, Any] | None:
        """Conflict resolvers: name -> an object with ``resolve(key, siblings)``, or such a function."""

    @hookspec
    def ddia_ray_codec_modules(self) -> Mapping[str, str] | None:
        """Codec record modules: tag prefix -> module defining the ``@record`` classes of that prefix."""

    @hookspec
    def ddia_ray_bus_handlers(self) -> Mapping[str, Callable[..., Any]] | None:
        """Event-bus handlers: name -> function, subscribed by name (``subscribe("user.*", name)``)."""
