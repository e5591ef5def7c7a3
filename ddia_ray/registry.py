"""Names that a process looks things up by: storage engines, pickers, resolvers, handlers, procedures.

Theory of operation
-------------------
Much of ddia-ray is chosen by name: ``engine="lsm"``, ``picker="power_of_two"``,
``resolution="resolver:set_union"``, a bus handler, a replicated procedure, a schema
conversion, a CRDT kind. The name travels (in a spec, a message, a log entry) and each
process that receives it looks it up in its own table. A :class:`Registry` is one such
table, with the rules every one of them follows:

* a name is a non-empty str, and what it names is checked on the way in (``check``), so
  a lookup never finds a bad entry;
* a name that is taken by something else is refused (``taken``): two processes that
  disagree on what a name means would diverge (two replicas applying different
  procedures, or resolving one conflict two ways). Registering the same thing again
  (``same``) is a no-op, so a module imported twice, or a plugin loaded in a process that
  already has it, is harmless;
* :meth:`Registry.unregister` removes a name only for the thing it names, so a plugin
  withdrawing its own entry never removes another's;
* readers get a read-only view (:attr:`Registry.view`); a lookup of an unknown name
  raises ``missing`` naming every known one, and a hint of how to provide it.

Registration takes a lock: plugins may load from a worker's setup hook while another
thread looks names up.
"""

from __future__ import annotations

import operator
import threading
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from .errors import ConfigError, InvalidArgumentError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named things (see the module docstring).

    ``what`` names the kind in messages ("storage engine"); ``initial`` the built-in entries;
    ``check(name, thing)`` validates (and may wrap) what is registered and returns what to keep;
    ``same(old, new)`` says whether a registration repeats the current one (identity by default);
    ``taken`` and ``missing`` are the exception classes for a name taken by something else and for
    an unknown name; ``hint`` ends the message of an unknown name."""

    def __init__(self, what: str, initial: Mapping[str, T] | None = None, *,
                 check: Callable[[str, Any], T] | None = None,
                 same: Callable[[T, T], bool] = operator.is_,
                 taken: Callable[[str], Exception] | None = None,
                 missing: Callable[[str], Exception] | None = None, hint: str = ""):
        self.what = what
        self._items: dict[str, T] = dict(initial or {})
        #: The entries, read-only: add one with :meth:`register`.
        self.view: Mapping[str, T] = MappingProxyType(self._items)
        self._check = check
        self._same = same
        self._taken = taken or ConfigError
        self._missing = missing or ConfigError
        self.hint = hint
        self._lock = threading.Lock()

    def register(self, name: str, thing: Any, *, replace: bool = False) -> T:
        """Make ``name`` mean ``thing`` (after ``check``); returns what was kept. A name taken by
        something else is refused unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a {self.what} name is a non-empty str, got {name!r}")
        kept = self._check(name, thing) if self._check is not None else thing
        with self._lock:
            old = self._items.get(name)
            if old is not None and not replace and not self._same(old, kept):
                raise self._taken(f"{self.what} {name!r} is already registered{_by(old)}")
            self._items[name] = kept
        return kept

    def unregister(self, name: str, thing: Any) -> bool:
        """Forget ``name`` if it means ``thing`` (as registered, or as ``check`` kept it); returns
        whether it was removed."""
        with self._lock:
            old = self._items.get(name)
            if old is None or not (old is thing or self._same(old, thing) or self._same_kept(name, old, thing)):
                return False
            del self._items[name]
            return True

    def _same_kept(self, name: str, old: T, thing: Any) -> bool:
        """Whether ``thing`` is what ``check`` turned into ``old`` (a function wrapped as a resolver)."""
        if self._check is None:
            return False
        try:
            kept = self._check(name, thing)
        except Exception:  # noqa: BLE001 - not checkable: not what was registered
            return False
        return self._same(old, kept)

    def get(self, name: str) -> T:
        """What ``name`` means; ``missing`` naming the known names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self._missing(f"unknown {self.what} {name!r}; known: {self.names()}{self.hint}") from None

    def names(self, extra: Iterable[str] = ()) -> list[str]:
        """The registered names (and ``extra`` ones, e.g. built-ins not loaded yet), sorted."""
        return sorted(set(self._items) | set(extra))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


def _by(thing: Any) -> str:
    module = getattr(thing, "__module__", None)
    return f" (by {module})" if isinstance(module, str) and module else ""

