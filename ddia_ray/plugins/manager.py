"""The plugin manager: registration and discovery, lifecycle, isolation, extensions.

Theory of operation
-------------------
:class:`PluginManager` is the seed's ``PluginManager`` (``register``,
``get_plugin``) grown to what Python's plugin ecosystems do:

* **Registration.** :meth:`~PluginManager.register` takes a plugin object (a
  module, an instance, or a class, which is instantiated) and checks, in this
  order, before anything changes: its name is free (the same object again is a
  no-op), it declares a compatible ``api_version``
  (:mod:`ddia_ray.plugins.api`), pluggy accepts its hooks and none of its
  ``ddia_ray_*`` hooks is unknown, and every extension it provides can be
  claimed. Each check refuses the plugin as a whole with a specific
  :class:`~ddia_ray.errors.PluginError`, kept in :meth:`~PluginManager.statuses`
  as a ``refused`` status and raised to the caller.
* **Discovery.** :meth:`~PluginManager.discover` loads every entry point of
  group ``ddia_ray.plugins`` that it has not seen yet and registers what it
  names. A refusal there is recorded, not raised: one broken distribution must
  not hide the others.
* **Lifecycle.** ``init(config)``, ``start``, ``stop`` and ``health`` follow
  the table of :mod:`ddia_ray.plugins.lifecycle`; a step the table forbids
  raises :class:`~ddia_ray.errors.PluginStateError`.
* **Isolation.** Plugin code (every hook, and the import of an entry point)
  runs through :func:`~ddia_ray.plugins.isolation.run_bounded`, bounded by
  ``call_timeout_s`` (``health_timeout_s`` for a health check). An exception
  (``SystemExit`` included) or a hook still running at the bound fails the
  plugin: its state becomes ``failed`` with the error as an
  :class:`~ddia_ray.error_record.ErrorRecord`, its extensions are withdrawn,
  and the call returns its status; the process, the actor and the other
  plugins go on.

Lock order: one lock, ``_lock``, held for a whole step (a hook call included,
which the bound keeps short), so two steps on one plugin never interleave.
Registries below (engines, pickers, ...) take their own locks, if any, inside it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Union

import pluggy

from .._validate import positive
from ..error_record import ErrorRecord
from ..errors import (ConfigError, InvalidArgumentError, PluginConflictError, PluginError,
                      PluginLoadError, UnknownPluginError)
from .api import GROUP, HOOK_PREFIX, PLUGIN_API, PROJECT, check_api, format_version
from .hookspecs import PluginSpec
from .isolation import run_bounded
from .kinds import KINDS
from .lifecycle import ACTIVE, PluginState, PluginStatus, next_state

__all__ = ["PluginManager", "ConfigSource", "PluginConfig"]

#: One plugin's settings: a mapping, or a function returning it when the plugin is initialised.
PluginConfig = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None]
#: Every plugin's settings: plugin name -> settings, or a function of the plugin's name.
ConfigSource = Union[Mapping[str, Mapping[str, Any]], Callable[[str], Union[Mapping[str, Any], None]], None]

#: (kind, name) -> the plugin that provides it, for every manager of the process (the registries are
#: per process): a conflict names the owner even when another manager registered it.
_OWNERS: dict[tuple[str, str], str] = {}

_DEFAULT_OPTS = {"wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
                 "trylast": False, "specname": None}


class _Hooks(pluggy.PluginManager):
    """pluggy, also taking an unmarked ``ddia_ray_*`` function as a hook (as pytest does for
    ``pytest_*``), so a plugin module needs no import of pluggy to implement one."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            static = inspect.getattr_static(plugin, name, None)
            if inspect.isfunction(static) or inspect.ismethod(static) or isinstance(static, (staticmethod,
                                                                                              classmethod)):
                return dict(_DEFAULT_OPTS)
        return opts


@dataclass
class _Entry:
    """A registered plugin and what the manager knows of it (guarded by the manager's lock)."""

    name: str
    obj: Any
    version: str
    api_version: str
    entry_point: str
    distribution: str
    state: PluginState = PluginState.LOADED
    provides: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> name -> object
    healthy: bool | None = None
    detail: str = ""
    error: ErrorRecord | None = None

    def status(self) -> PluginStatus:
        return PluginStatus(self.name, self.state.value, self.version, self.api_version, self.entry_point,
                            self.distribution, {k: tuple(sorted(v)) for k, v in self.provides.items()} or None,
                            self.healthy, self.detail, self.error)


class PluginManager:
    """Plugins of one process: registered explicitly or discovered through entry points (module doc).

    ``api`` is the plugin API offered (tests pass another to exercise the version rule);
    ``health_timeout_s`` bounds a health check, ``call_timeout_s`` every other hook.
    """

    def __init__(self, *, api: tuple[int, int] = PLUGIN_API, health_timeout_s: float = 1.0,
                 call_timeout_s: float = 30.0):
        self.api = api
        self.health_timeout_s = positive("health_timeout_s", health_timeout_s)
        self.call_timeout_s = positive("call_timeout_s", call_timeout_s)
        self._hooks = _Hooks(PROJECT)
        self._hooks.add_hookspecs(PluginSpec)
        self._plugins: dict[str, _Entry] = {}     # registration order: started in it, stopped in reverse
        self._refused: dict[tuple[str, str], PluginStatus] = {}  # (name, entry point) -> its refusal
        self._owners = _OWNERS  # the registries are the process's: so is who claimed what in them
        self._seen: set[str] = set()  # entry points discover() has handled
        self._lock = threading.RLock()

    # --- registration -------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None, *, entry_point: str = "", distribution: str = "",
                 version: str | None = None) -> PluginStatus:
        """Register ``plugin`` (the seed's ``Register``) and its extensions; returns its status.

        Raises :class:`~ddia_ray.errors.PluginVersionError`, :class:`~ddia_ray.errors.PluginLoadError` or
        :class:`~ddia_ray.errors.PluginConflictError` when it is refused (see the module doc), and records the
        refusal. A plugin whose own extension hook fails is registered as ``failed``, not raised.
        """
        label = entry_point or "explicit registration"
        if inspect.isclass(plugin):
            try:
                plugin = plugin()
            except Exception as exc:  # noqa: BLE001 - the plugin's own constructor: refused with its error
                name = name or _default_name(plugin)
                raise self._refuse(name, entry_point, distribution, version or "", "", PluginLoadError(
                    f"plugin {name!r} ({label}) could not be instantiated: {type(exc).__name__}: {exc}",
                    entry_point)) from exc
        name = name if name is not None else _default_name(plugin)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a plugin name is a non-empty str, got {name!r}")
        version = str(version if version is not None else getattr(plugin, "version", "") or "")
        declared = getattr(plugin, "api_version", None)
        with self._lock:
            existing = self._plugins.get(name)
            if existing is not None:
                if existing.obj is plugin:
                    return existing.status()  # registering the same plugin again changes nothing
                raise self._refuse(name, entry_point, distribution, version, str(declared or ""),
                                   PluginConflictError("plugin", name, existing.entry_point or existing.name,
                                                       entry_point or name))
            try:
                wanted = format_version(check_api(name, declared, self.api))
            except PluginError as e:
                raise self._refuse(name, entry_point, distribution, version, str(declared or ""), e) from None
            try:
                self._hooks.register(plugin, name)
            except (pluggy.PluginValidationError, ValueError) as e:
                raise self._refuse(name, entry_point, distribution, version, wanted, PluginLoadError(
                    f"plugin {name!r} ({label}) is not a valid plugin: {e}", entry_point)) from None
            unknown = sorted(h.name for h in self._hooks.get_hookcallers(plugin) or () if not h.has_spec())
            if unknown:
                self._hooks.unregister(plugin)
                raise self._refuse(name, entry_point, distribution, version, wanted, PluginLoadError(
                    f"plugin {name!r} ({label}) implements hooks plugin API {format_version(self.api)} does not "
                    f"define: {unknown}", entry_point))
            entry = _Entry(name, plugin, version, wanted, entry_point, distribution)
            self._plugins[name] = entry
            self._refused.pop((name, entry_point), None)
            try:
                self._claim_all(entry, label)
            except PluginError as e:
                del self._plugins[name]
                self._hooks.unregister(plugin)
                raise self._refuse(name, entry_point, distribution, version, wanted, e) from None
            return entry.status()

    def _claim_all(self, entry: _Entry, label: str) -> None:
        """Ask ``entry`` for its extensions and register them all, or none (PluginError)."""
        offers: list[tuple[Any, str, Any]] = []
        for kind in KINDS.values():
            impl = self._impl(entry.obj, kind.hook)
            if impl is None:
                continue
            ok, result = self._guarded(entry, kind.hook, impl, {}, self.call_timeout_s)
            if not ok:
                return  # failed in its own hook: registered as failed, with nothing claimed
            if result is None:
                continue
            if not isinstance(result, Mapping) or not all(isinstance(k, str) and k for k in result):
                raise PluginLoadError(f"plugin {entry.name!r} ({label}): {kind.hook} must return a mapping of "
                                      f"names to extensions, got {type(result).__name__}", entry.entry_point)
            offers.extend((kind, n, obj) for n, obj in result.items())
        claimed: list[tuple[Any, str, Any]] = []
        try:
            for kind, n, obj in offers:
                try:
                    kind.claim(n, obj)
                except ConfigError:
                    owner = self._owners.get((kind.name, n), "ddia-ray")
                    raise PluginConflictError(kind.name, n, owner, entry.name) from None
                except Exception as e:  # noqa: BLE001 - the registry refused what the plugin offers
                    raise PluginLoadError(f"plugin {entry.name!r} ({label}) provides an invalid {kind.name} "
                                          f"{n!r}: {e}", entry.entry_point) from None
                claimed.append((kind, n, obj))
        except PluginError:
            for kind, n, obj in reversed(claimed):
                kind.release(n, obj)
            raise
        for kind, n, obj in claimed:
            entry.provides.setdefault(kind.name, {})[n] = obj
            self._owners[(kind.name, n)] = entry.name

    def _release_all(self, entry: _Entry) -> None:
        for kind_name, items in entry.provides.items():
            for n, obj in items.items():
                KINDS[kind_name].release(n, obj)
                self._owners.pop((kind_name, n), None)
        entry.provides.clear()

    def _refuse(self, name: str, entry_point: str, distribution: str, version: str, api_version: str,
                error: PluginError) -> PluginError:
        self._refused[(name, entry_point)] = PluginStatus(
            name, PluginState.REFUSED.value, version, api_version, entry_point, distribution,
            error=ErrorRecord.of(error, node=name))
        return error

    def unregister(self, name: str) -> PluginStatus:
        """Stop ``name`` if it runs (a failure there is recorded), withdraw its extensions and forget it;
        returns its last status. UnknownPluginError if it is not registered."""
        with self._lock:
            entry = self._entry(name)
            if entry.state is PluginState.RUNNING:
                self.stop(name)
            self._release_all(entry)
            self._hooks.unregister(entry.obj)
            del self._plugins[name]
            return entry.status()

    def get_plugin(self, name: str) -> Any:
        """The plugin object registered as ``name`` (the seed's ``GetPlugin``); UnknownPluginError otherwise."""
        with self._lock:
            return self._entry(name).obj

    def _entry(self, name: str) -> _Entry:
        try:
            return self._plugins[name]
        except (KeyError, TypeError):
            raise UnknownPluginError(name, self._plugins) from None

    def names(self) -> tuple[str, ...]:
        """The registered plugins' names, in registration order (refused ones are not registered)."""
        with self._lock:
            return tuple(self._plugins)

    def status(self, name: str) -> PluginStatus:
        """The status of the registered plugin ``name``."""
        with self._lock:
            return self._entry(name).status()

    def statuses(self) -> tuple[PluginStatus, ...]:
        """Every registered plugin's status, in registration order, then every refusal."""
        with self._lock:
            return tuple(e.status() for e in self._plugins.values()) + tuple(self._refused.values())

    # --- discovery ----------------------------------------------------------------

    def discover(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
                 ) -> tuple[PluginStatus, ...]:
        """Load and register the entry points of group ``ddia_ray.plugins`` (or ``entry_points``) not
        seen before; returns the status of each, refusals included (they are recorded, not raised)."""
        eps = list(importlib.metadata.entry_points(group=GROUP) if entry_points is None else entry_points)
        out = []
        with self._lock:
            for ep in eps:
                label = f"{ep.name} = {ep.value}"
                if label in self._seen:
                    continue
                self._seen.add(label)
                dist = getattr(ep, "dist", None)
                dist_name = (dist.metadata["Name"] or "") if dist is not None else ""
                dist_version = (dist.version or "") if dist is not None else ""
                # Importing runs the plugin's module code: bounded and guarded like its hooks.
                ok, obj = run_bounded(functools.partial(_load, ep), self.call_timeout_s,
                                   f"loading entry point {label!r}")
                if not ok:
                    where = f" of {dist_name} {dist_version}" if dist_name else ""
                    error = PluginLoadError(f"entry point {label!r}{where} failed to load: "
                                            f"{type(obj).__name__}: {obj}", label)
                    self._refuse(ep.name, label, dist_name, dist_version, "", error)
                    out.append(self._refused[(ep.name, label)])
                    continue
                try:
                    out.append(self.register(obj, ep.name, entry_point=label, distribution=dist_name,
                                             version=getattr(obj, "version", None) or dist_version))
                except PluginError:
                    out.append(self._refused[(ep.name, label)])
        return tuple(out)

    # --- lifecycle ----------------------------------------------------------------

    def init(self, name: str, config: PluginConfig = None) -> PluginStatus:
        """Initialise ``name`` with its settings: a mapping, or a function returning one (read now, so a
        watched configuration store can be passed as ``lambda: store.get(...)``)."""
        settings = _settings(name, config() if callable(config) else config)
        return self._step(name, "init", "ddia_ray_init", {"config": settings}, self.call_timeout_s)

    def start(self, name: str) -> PluginStatus:
        """Start ``name`` (after ``init``, or again after ``stop``)."""
        return self._step(name, "start", "ddia_ray_start", {}, self.call_timeout_s)

    def stop(self, name: str) -> PluginStatus:
        """Stop ``name``."""
        return self._step(name, "stop", "ddia_ray_stop", {}, self.call_timeout_s)

    def init_all(self, config: ConfigSource = None) -> tuple[PluginStatus, ...]:
        """Initialise every plugin that may be (not running, not failed). ``config`` maps plugin names to
        settings (a missing one gets ``{}``), or is a function of the plugin's name returning them."""
        if config is not None and not callable(config) and not isinstance(config, Mapping):
            raise InvalidArgumentError(f"config maps plugin names to settings, or is a function of the name; "
                                       f"got {type(config).__name__}")
        out = []
        with self._lock:
            for name, entry in list(self._plugins.items()):
                if entry.state in (PluginState.LOADED, PluginState.INITIALIZED, PluginState.STOPPED):
                    section = config(name) if callable(config) else (config or {}).get(name)
                    out.append(self.init(name, section))
        return tuple(out)

    def start_all(self) -> tuple[PluginStatus, ...]:
        """Start every initialised or stopped plugin, in registration order."""
        with self._lock:
            return tuple(self.start(n) for n, e in list(self._plugins.items())
                         if e.state in (PluginState.INITIALIZED, PluginState.STOPPED))

    def stop_all(self) -> tuple[PluginStatus, ...]:
        """Stop every running or initialised plugin, in reverse registration order."""
        with self._lock:
            return tuple(self.stop(n) for n, e in reversed(list(self._plugins.items()))
                         if e.state in (PluginState.INITIALIZED, PluginState.RUNNING))

    def health(self, name: str) -> PluginStatus:
        """Ask running plugin ``name`` for its health, within ``health_timeout_s``; its status holds the
        verdict (``healthy``, ``detail``). A plugin that is not running is not asked: ``healthy`` is False."""
        with self._lock:
            entry = self._entry(name)
            if entry.state is not PluginState.RUNNING:
                entry.healthy, entry.detail = False, f"not running ({entry.state.value})"
                return entry.status()
            impl = self._impl(entry.obj, "ddia_ray_health")
            if impl is None:
                entry.healthy, entry.detail = True, "running (no health hook)"
                return entry.status()
            ok, answer = self._guarded(entry, "ddia_ray_health", impl, {}, self.health_timeout_s)
            if ok:
                if answer is None or answer is True:
                    entry.healthy, entry.detail = True, "healthy"
                elif answer is False or isinstance(answer, str):
                    entry.healthy, entry.detail = False, answer or "reported unhealthy"
                else:
                    self._fail(entry, InvalidArgumentError(
                        f"ddia_ray_health must return a bool, a str or None, got {type(answer).__name__}"))
            return entry.status()

    def health_all(self) -> tuple[PluginStatus, ...]:
        """:meth:`health` of every registered plugin."""
        with self._lock:
            return tuple(self.health(n) for n in list(self._plugins))

    def call_hook(self, hook: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``hook`` on every active plugin implementing it, each guarded; returns plugin name ->
        answer of those that answered (a failing one is failed and left out)."""
        if not isinstance(hook, str) or not hook.startswith(HOOK_PREFIX) \
                or not getattr(self._hooks.hook, hook, None) or not getattr(self._hooks.hook, hook).has_spec():
            raise InvalidArgumentError(f"{hook!r} is not a hook of plugin API {format_version(self.api)}")
        out = {}
        with self._lock:
            for name, entry in list(self._plugins.items()):
                impl = self._impl(entry.obj, hook) if entry.state in ACTIVE else None
                if impl is not None:
                    missing = [a for a in impl.argnames if a not in kwargs]
                    if missing:
                        raise InvalidArgumentError(f"{hook} needs {missing}")
                    ok, answer = self._guarded(entry, hook, impl, kwargs, self.call_timeout_s)
                    if ok:
                        out[name] = answer
        return out

    def _step(self, name: str, action: str, hook: str, kwargs: dict, timeout_s: float) -> PluginStatus:
        with self._lock:
            entry = self._entry(name)
            to = next_state(name, entry.state, action)  # PluginStateError before any plugin code runs
            impl = self._impl(entry.obj, hook)
            if impl is not None:
                ok, _ = self._guarded(entry, hook, impl, kwargs, timeout_s)
                if not ok:
                    return entry.status()
            entry.state = to
            if to is not PluginState.RUNNING:
                entry.healthy, entry.detail = None, ""
            return entry.status()

    # --- isolation ----------------------------------------------------------------

    def _impl(self, plugin: Any, hook: str) -> Any:
        caller = getattr(self._hooks.hook, hook, None)
        if caller is None:
            return None
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                return impl
        return None

    def _guarded(self, entry: _Entry, hook: str, impl: Any, kwargs: dict, timeout_s: float) -> tuple[bool, Any]:
        """Run one hook of ``entry`` in a daemon thread for at most ``timeout_s``: ``(True, answer)``, or
        ``(False, None)`` after failing the plugin for what it raised or for not returning in time."""
        args = [kwargs[a] for a in impl.argnames]
        ok, answer = run_bounded(lambda: impl.function(*args), timeout_s, f"plugin {entry.name!r}: {hook}")
        if not ok:
            self._fail(entry, answer)
            return False, None
        return True, answer

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        entry.state = next_state(entry.name, entry.state, "fail")
        entry.error = ErrorRecord.of(exc, node=entry.name)
        entry.healthy, entry.detail = False, f"failed: {entry.error.message}"
        self._release_all(entry)


def _load(ep: importlib.metadata.EntryPoint) -> Any:
    """The plugin an entry point names: the object, instantiated when it is a class."""
    obj = ep.load()
    if obj is None:
        raise LookupError(f"{ep.value} is None")
    return obj() if inspect.isclass(obj) else obj


def _default_name(plugin: Any) -> str:
    name = getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name
    if inspect.ismodule(plugin):
        return plugin.__name__
    return type(plugin).__name__ if not inspect.isclass(plugin) else plugin.__name__


def _settings(name: str, section: Any) -> Mapping[str, Any]:
    """A plugin's settings as a read-only mapping; a section that is not a str-keyed mapping is the
    configuration's fault, raised to whoever initialises."""
    if section is None:
        return MappingProxyType({})
    if not isinstance(section, Mapping) or not all(isinstance(k, str) for k in section):
        raise InvalidArgumentError(f"plugin {name!r}: its settings must be a mapping with str keys, "
                                   f"got {type(section).__name__}")
    return MappingProxyType(dict(section))
