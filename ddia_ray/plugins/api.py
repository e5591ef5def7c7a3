"""The plugin API's version, the entry-point group, and pluggy's markers for ddia-ray.

Theory of operation
-------------------
A plugin states the version of this API it was written against as
``api_version = "MAJOR.MINOR"``. The rule is semver's: ddia-ray offering
``PLUGIN_API = (M, m)`` runs a plugin that wants ``(M, w)`` with ``w <= m``.
A new minor version only *adds* hooks or extension kinds, so everything a
plugin for ``1.0`` calls is still there in ``1.3``; a new major version may
change or remove hooks, so a plugin for ``1.x`` is refused by ``2.y`` (and a
plugin for ``1.3`` by ``1.0``, which lacks what it may call). A plugin that
states no version is refused too: guessing would turn an API change into a
crash deep inside a hook, far from its cause.

Hooks are pluggy hooks of the project ``"ddia_ray"``: ``@hookimpl`` marks an
implementation, as ``@pytest.hookimpl`` does for pytest.
"""

from __future__ import annotations

from typing import Any

import pluggy

from ..errors import PluginVersionError

__all__ = ["PLUGIN_API", "GROUP", "PROJECT", "HOOK_PREFIX", "hookimpl", "hookspec", "format_version",
           "parse_api_version", "incompatibility", "check_api"]

#: The plugin API this ddia-ray offers, ``(major, minor)``.
PLUGIN_API: tuple[int, int] = (1, 0)
#: The entry-point group plugins are installed under (``[project.entry-points."ddia_ray.plugins"]``).
GROUP = "ddia_ray.plugins"
#: pluggy's project name: the marker names and the hook prefix derive from it.
PROJECT = "ddia_ray"
#: Every hook's name starts with this; a plugin's function of such a name is a hook even unmarked.
HOOK_PREFIX = "ddia_ray_"

#: Marks a plugin's hook implementation (optional for functions named ``ddia_ray_*``).
hookimpl = pluggy.HookimplMarker(PROJECT)
#: Marks a hook specification (used by :mod:`ddia_ray.plugins.hookspecs`).
hookspec = pluggy.HookspecMarker(PROJECT)

_PART_MAX = 10_000  # a version part past this is a typo, not a release


def format_version(version: tuple[int, int]) -> str:
    """``(1, 0)`` as ``"1.0"``."""
    return f"{version[0]}.{version[1]}"


def parse_api_version(value: Any, plugin: str = "?") -> tuple[int, int]:
    """An API version as ``(major, minor)``: from ``"1.2"``, ``"1"``, ``(1, 2)`` or ``1``.

    Anything else raises :class:`PluginVersionError` for ``plugin``: a plugin that cannot say which
    API it wants is refused, not guessed at.
    """
    parts: Any = value
    if isinstance(value, str):
        parts = value.strip().split(".")
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = (value,)
    try:
        if not isinstance(parts, (tuple, list)) or not 1 <= len(parts) <= 2:
            raise ValueError
        numbers = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in parts)
        if not all(type(n) is int and 0 <= n <= _PART_MAX for n in numbers):
            raise ValueError
    except ValueError:
        offered = format_version(PLUGIN_API)
        what = "no plugin API version (set api_version = \"MAJOR.MINOR\")" if value is None else \
            f"plugin API version {value!r}, which is not MAJOR.MINOR"
        raise PluginVersionError(plugin, "" if value is None else str(value), offered,
                                 reason=f"it declares {what}; this ddia-ray offers {offered}") from None
    return (numbers[0], numbers[1] if len(numbers) == 2 else 0)


def incompatibility(wanted: tuple[int, int], offered: tuple[int, int] = PLUGIN_API) -> str | None:
    """Why a plugin wanting API ``wanted`` cannot run on ``offered``, or None if it can."""
    if wanted[0] != offered[0]:
        return (f"it needs plugin API {format_version(wanted)}, a major version this ddia-ray "
                f"(plugin API {format_version(offered)}) does not offer")
    if wanted[1] > offered[1]:
        return (f"it needs plugin API {format_version(wanted)}, newer than this ddia-ray's "
                f"{format_version(offered)}: upgrade ddia-ray")
    return None


def check_api(plugin: str, declared: Any, offered: tuple[int, int] = PLUGIN_API) -> tuple[int, int]:
    """The API version ``plugin`` declared, parsed; PluginVersionError naming the plugin, the wanted
    and the offered versions if it is malformed or incompatible."""
    wanted = parse_api_version(declared, plugin)
    why = incompatibility(wanted, offered)
    if why is not None:
        raise PluginVersionError(plugin, format_version(wanted), format_version(offered), reason=why)
    return wanted
