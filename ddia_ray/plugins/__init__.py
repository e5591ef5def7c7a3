"""Plugins: discovery through entry points, a checked lifecycle, isolation, extension points.

Theory of operation
-------------------
A plugin is a module or an object, installed by a distribution under the
entry-point group ``ddia_ray.plugins`` (or registered by hand), that states
the plugin API it was written for (``api_version = "1.0"``) and implements
pluggy hooks named ``ddia_ray_*``. Through them it takes part in a lifecycle
(init with configuration, start, stop, health) and provides extensions: storage
engines, load-balancing pickers, conflict resolvers, codec record modules and
event-bus handlers, which go into the registries the rest of ddia-ray already
looks names up in. A plugin that fails is failed alone; see docs/plugins.md.

Modules:

* :mod:`.api`: ``PLUGIN_API``, the version rule, the entry-point group, pluggy's markers;
* :mod:`.hookspecs`: the hooks a plugin may implement;
* :mod:`.kinds`: the extension points and their registries;
* :mod:`.lifecycle`: states, the transition table, :class:`PluginStatus`;
* :mod:`.manager`: :class:`PluginManager` (register, discover, lifecycle, extensions);
* :mod:`.isolation`: running plugin code bounded, its exceptions caught;
* :mod:`.loader`: the process's manager, :func:`ensure_plugins` for Ray workers.
"""

from .. import codec
from .api import GROUP, PLUGIN_API, check_api, format_version, hookimpl, hookspec, incompatibility, parse_api_version
from .hookspecs import PluginSpec
from .kinds import KINDS, ExtensionKind
from .lifecycle import TRANSITIONS, PluginState, PluginStatus, next_state
from .loader import WORKER_SETUP_HOOK, default_manager, ensure_plugins, runtime_env
from .manager import ConfigSource, PluginConfig, PluginManager

# A driver decoding a status an actor sent imports this module on the first "plugins.*" tag.
codec.register_module("plugins", "ddia_ray.plugins.lifecycle")

__all__ = [
    "PLUGIN_API",
    "GROUP",
    "hookimpl",
    "hookspec",
    "format_version",
    "parse_api_version",
    "incompatibility",
    "check_api",
    "PluginSpec",
    "KINDS",
    "ExtensionKind",
    "PluginState",
    "PluginStatus",
    "TRANSITIONS",
    "next_state",
    "PluginManager",
    "PluginConfig",
    "ConfigSource",
    "default_manager",
    "ensure_plugins",
    "runtime_env",
    "WORKER_SETUP_HOOK",
]
