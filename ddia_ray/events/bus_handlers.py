"""Event-bus handlers by name: functions that a subscription names instead of passing.

Theory of operation
-------------------
:meth:`~ddia_ray.events.bus.EventBusClient.subscribe` takes a handler object
(a Ray actor handle, a Ray remote function or a function). A handler can also
be *registered* here under a name and subscribed by that name, which is how a
plugin contributes one: ``subscribe("user.*", "audit.log")``. The name is
resolved in the subscriber's process, and the function then travels as any
function handler does; a function defined at the top level of an installed
module is pickled by reference, so the bus's worker imports the plugin's
module to run it.

Names are unique: a second function under a taken name is refused, the same
function again is a no-op.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import InvalidArgumentError
from ..registry import Registry

__all__ = ["BUS_HANDLERS", "register_handler", "unregister_handler", "named_handler"]


def _callable_handler(name: str, handler: Any) -> Callable[..., Any]:
    if not callable(handler):
        raise InvalidArgumentError(f"handler {name!r} must be callable, got {type(handler).__name__}")
    return handler


_HANDLERS: Registry[Callable[..., Any]] = Registry("event-bus handler", check=_callable_handler,
                                                   hint="; load the plugin that provides it")
#: Handler name -> function. Read-only: add one with :func:`register_handler`.
BUS_HANDLERS: Mapping[str, Callable[..., Any]] = _HANDLERS.view


def register_handler(name: str, handler: Callable[..., Any]) -> None:
    """Let subscriptions name ``handler`` (a function of the event, or of a tuple of events when the
    subscription batches) as ``name``. A name taken by another function raises ConfigError."""
    _HANDLERS.register(name, handler)


def unregister_handler(name: str, handler: Callable[..., Any]) -> bool:
    """Forget ``name`` if ``handler`` is what it names; returns whether it was removed."""
    return _HANDLERS.unregister(name, handler)


def named_handler(name: str) -> Callable[..., Any]:
    """The function registered as ``name``; ConfigError naming the registered ones otherwise."""
    return _HANDLERS.get(name)
