"""The extension points: what a plugin may provide, and the registry each kind goes into.

Theory of operation
-------------------
ddia-ray's variation points keep their registries in their own packages, on
the floors below this one, and know nothing of plugins:

======================  ===============================  ===============================================
kind                    hook                             registry
======================  ===============================  ===============================================
``storage_engine``      ``ddia_ray_storage_engines``     ``storage.engine.register_engine`` (``open_engine``)
``picker``              ``ddia_ray_pickers``             ``balancing.balancer.register_picker`` (``PICKERS``)
``conflict_resolver``   ``ddia_ray_conflict_resolvers``  ``replication.resolvers.register_resolver``
``codec_module``        ``ddia_ray_codec_modules``       ``codec.register_module`` (tag prefix -> module)
``bus_handler``         ``ddia_ray_bus_handlers``        ``events.bus_handlers.register_handler``
======================  ===============================  ===============================================

A plugin registers into them; they never import this package. Each
:class:`ExtensionKind` ``claim`` registers one name and raises ConfigError if
the name is taken by something else (registering the same object again is a
no-op), and ``release`` withdraws the plugin's own object and nothing else.
A codec prefix is never released: records of that prefix may already have been
decoded in this process, and the mapping only says where to import them from.
The registries are imported on first use, so listing plugins stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, InvalidArgumentError

__all__ = ["ExtensionKind", "KINDS", "kind_of_hook"]


@dataclass(frozen=True)
class ExtensionKind:
    """One extension point: its ``name``, the ``hook`` that returns a plugin's contributions, and the
    ``claim``/``release`` functions of its registry."""

    name: str
    hook: str
    claim: Callable[[str, Any], None]
    release: Callable[[str, Any], None]


def _claim_engine(name: str, opener: Any) -> None:
    from ..storage.engine import register_engine

    register_engine(name, opener, replace=False)


def _release_engine(name: str, opener: Any) -> None:
    from ..storage.engine import unregister_engine

    unregister_engine(name, opener)


def _claim_picker(name: str, factory: Any) -> None:
    from ..balancing.balancer import register_picker

    register_picker(name, factory)


def _release_picker(name: str, factory: Any) -> None:
    from ..balancing.balancer import unregister_picker

    unregister_picker(name, factory)


def _claim_resolver(name: str, resolver: Any) -> None:
    from ..replication.resolvers import register_resolver

    register_resolver(name, resolver)


def _release_resolver(name: str, resolver: Any) -> None:
    from ..replication.resolvers import unregister_resolver

    unregister_resolver(name, resolver)


def _claim_codec(prefix: str, module: Any) -> None:
    from .. import codec

    if not isinstance(module, str) or not module:
        raise InvalidArgumentError(f"codec prefix {prefix!r} must map to a module name (str), got {module!r}")
    taken = codec.registered_modules().get(prefix)
    if taken is not None and taken != module:
        raise ConfigError(f"codec tag prefix {prefix!r} is already defined by module {taken!r}")
    codec.register_module(prefix, module)


def _release_codec(prefix: str, module: Any) -> None:
    """Kept on purpose (see the module doc)."""


def _claim_handler(name: str, handler: Any) -> None:
    from ..events.bus_handlers import register_handler

    register_handler(name, handler)


def _release_handler(name: str, handler: Any) -> None:
    from ..events.bus_handlers import unregister_handler

    unregister_handler(name, handler)


#: Every extension kind of plugin API 1.0, by name.
KINDS: dict[str, ExtensionKind] = {k.name: k for k in (
    ExtensionKind("storage_engine", "ddia_ray_storage_engines", _claim_engine, _release_engine),
    ExtensionKind("picker", "ddia_ray_pickers", _claim_picker, _release_picker),
    ExtensionKind("conflict_resolver", "ddia_ray_conflict_resolvers", _claim_resolver, _release_resolver),
    ExtensionKind("codec_module", "ddia_ray_codec_modules", _claim_codec, _release_codec),
    ExtensionKind("bus_handler", "ddia_ray_bus_handlers", _claim_handler, _release_handler),
)}


def kind_of_hook(hook: str) -> ExtensionKind | None:
    """The extension kind whose contributions ``hook`` returns (None for a lifecycle hook)."""
    for kind in KINDS.values():
        if kind.hook == hook:
            return kind
    return None
