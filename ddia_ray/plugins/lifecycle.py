"""A plugin's lifecycle: its states, the one table of transitions, and its status as data.

Theory of operation
-------------------
=========================  =========================================  ===============
action                     allowed from                               leads to
=========================  =========================================  ===============
``init(config)``           loaded, initialized, stopped               initialized
``start``                  initialized, stopped                       running
``stop``                   initialized, running                       stopped
``fail`` (a hook failed)   loaded, initialized, running, stopped      failed (final)
=========================  =========================================  ===============

``refused`` is the status of a plugin that was never loaded (a bad entry
point, a wrong API version, a conflict); no action leads to or from it.

:data:`TRANSITIONS` drives :func:`next_state`, which every step of the manager
goes through: a step the table does not allow raises
:class:`~ddia_ray.errors.PluginStateError` and changes nothing. ``init`` may run
again before ``start`` and after ``stop`` (a configuration change), never
while running: stop, re-init, start. ``FAILED`` is final: the plugin raised,
hung or returned nonsense in one of its hooks, its extensions are withdrawn,
and the error stays in its status for whoever looks. To try again, unregister
it and register it anew.

:class:`PluginStatus` is what ``statuses()`` returns and ``ddia-ray plugins``
prints; it is a codec record, so an actor can report its plugins to a driver.
"""

from __future__ import annotations

import enum
from typing import Mapping

from ..codec import record
from ..error_record import ErrorRecord
from ..errors import InvalidArgumentError, PluginStateError

__all__ = ["PluginState", "TRANSITIONS", "next_state", "PluginStatus", "ACTIVE"]


class PluginState(str, enum.Enum):
    """Where a plugin is in its lifecycle (see the module doc)."""

    REFUSED = "refused"
    LOADED = "loaded"
    INITIALIZED = "initialized"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


_S = PluginState
#: action -> (states it is allowed in, state it leads to). The only place transitions are defined.
TRANSITIONS: Mapping[str, tuple[frozenset, PluginState]] = {
    "init": (frozenset({_S.LOADED, _S.INITIALIZED, _S.STOPPED}), _S.INITIALIZED),
    "start": (frozenset({_S.INITIALIZED, _S.STOPPED}), _S.RUNNING),
    "stop": (frozenset({_S.INITIALIZED, _S.RUNNING}), _S.STOPPED),
    "fail": (frozenset({_S.LOADED, _S.INITIALIZED, _S.RUNNING, _S.STOPPED}), _S.FAILED),
}
#: The states whose plugin's extensions are registered.
ACTIVE = frozenset({_S.LOADED, _S.INITIALIZED, _S.RUNNING, _S.STOPPED})


def next_state(plugin: str, state: PluginState, action: str) -> PluginState:
    """The state ``action`` leads ``plugin`` to from ``state``; PluginStateError if the table forbids it."""
    try:
        allowed, to = TRANSITIONS[action]
    except KeyError:
        raise InvalidArgumentError(f"unknown lifecycle action {action!r}; known: {sorted(TRANSITIONS)}") from None
    if state not in allowed:
        raise PluginStateError(
            f"plugin {plugin!r} cannot {action} while {state.value}; it may from: "
            f"{', '.join(sorted(s.value for s in allowed))}", plugin, state.value, action)
    return to


@record("plugins.status", version=1)
class PluginStatus:
    """One plugin as data: its name and ``state``, where it came from (``entry_point``,
    ``distribution``), its ``version``, the plugin API it wants (``api_version``, "" if it did not
    say), what it provides (``provides``: kind -> names), the last health verdict (``healthy``,
    None before any, and ``detail``), and the ``error`` that refused or failed it."""

    name: str
    state: str
    version: str = ""
    api_version: str = ""
    entry_point: str = ""
    distribution: str = ""
    provides: dict | None = None
    healthy: bool | None = None
    detail: str = ""
    error: ErrorRecord | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError("a plugin status names its plugin")
        if self.state not in {s.value for s in PluginState}:
            raise InvalidArgumentError(f"unknown plugin state {self.state!r}")
        if self.error is not None and not isinstance(self.error, ErrorRecord):
            raise InvalidArgumentError("a plugin status's error is an ErrorRecord")

    @property
    def compatible(self) -> bool:
        """Whether the plugin was accepted (loaded, whatever happened to it since)."""
        return self.state != PluginState.REFUSED.value

    @property
    def why(self) -> str:
        """Why it was refused or failed ("" when it was not)."""
        return "" if self.error is None else self.error.message
