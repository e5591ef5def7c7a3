"""Errors that cross actor boundaries as typed records, never as text to parse.

Theory of operation
-------------------
A component that refuses a request answers with an :class:`ErrorRecord`: the
name of the :mod:`ddia_ray.errors` class it raised, its message, where it was
raised, and the exception's plain attributes (``leader_hint``, ``path``,
``retry_after_s``, ...). The caller turns the record back into an exception
of that class with :meth:`ErrorRecord.exception`, so ``except NotLeaderError
as e: retry(e.leader_hint)`` works across actors exactly as it does in one
process (before, the hint travelled as ``"not_leader:<hint>"`` and callers
searched the text for it).

Only the :class:`~ddia_ray.errors.DdiaRayError` subclasses that
:mod:`ddia_ray.errors` defines are rebuilt; any other name (a newer peer's new
error, an unexpected built-in exception on the remote side) becomes a
:class:`~ddia_ray.errors.RemoteError` that keeps the name in ``kind``. Decoding
a record therefore never imports or calls anything chosen by the sender: the
class comes from a fixed table and is built with ``Exception.__new__`` plus
attribute assignment, not through its ``__init__``.

Only scalar attributes travel (str, bytes, int, float, bool, None): an
exception's chained cause, a tuple of events, or anything else stays behind,
and its text is already part of the message.
"""

from __future__ import annotations

import functools
import inspect

from . import errors
from .codec import record
from .errors import DdiaRayError, InvalidArgumentError, RemoteError

__all__ = ["ErrorRecord"]

_SCALARS = (str, bytes, int, float, bool, type(None))
#: Names that a record may rebuild: the error classes ddia_ray.errors defines, nothing else.
_CLASSES: dict[str, type[DdiaRayError]] = {
    name: cls for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, DdiaRayError) and cls.__module__ == errors.__name__
}
_MESSAGE_MAX = 4096  # characters of a message that travel: a refusal explains itself in far fewer


@record("error.record", version=1, fields_checked=True)
class ErrorRecord:
    """An exception as data: ``kind`` (its class name), ``message``, ``node`` (where), ``attrs``."""

    kind: str
    message: str = ""
    node: str = ""
    attrs: dict | None = None

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind:
            raise InvalidArgumentError("an error record names its error class (a non-empty str)")
        if not isinstance(self.message, str) or not isinstance(self.node, str):
            raise InvalidArgumentError("an error record's message and node are str")
        if self.attrs is not None and not (
                isinstance(self.attrs, dict)
                and all(type(k) is str and isinstance(v, _SCALARS) for k, v in self.attrs.items())):
            raise InvalidArgumentError("an error record's attrs map str names to scalars")

    @classmethod
    def of(cls, exc: BaseException, node: str = "") -> "ErrorRecord":
        """The record of ``exc`` raised at ``node``: its class name if ddia-ray defines it, else RemoteError.

        An exception that was itself rebuilt from a record (a cache relaying its store's refusal)
        keeps the node where it was first raised.
        """
        node = getattr(exc, "remote_node", "") or node
        name = type(exc).__name__
        ours = _CLASSES.get(name) is type(exc)
        message = (str(exc) if ours else f"{name}: {exc}")[:_MESSAGE_MAX]  # not ours: its name in the text
        if isinstance(exc, RemoteError):  # relayed: keep where it first failed and what it was there
            return cls("RemoteError", message, exc.node or node, {"kind": exc.kind} if exc.kind else None)
        if not ours:
            return cls("RemoteError", message, node, {"kind": name})
        attrs = {k: v for k, v in vars(exc).items() if not k.startswith("_") and isinstance(v, _SCALARS)}
        return cls(name, message, node, attrs or None)

    def exception(self, where: str = "") -> DdiaRayError:
        """This record as an exception of its class (``RemoteError`` for a name not known here).

        ``where`` (the caller's name for the component, e.g. ``"kv/m1"``) prefixes the message.
        Every rebuilt exception has ``remote_node``: the node that raised it (``""`` if unknown),
        which also tells a caller that the error was a component's answer, not a local failure.
        """
        cls = _CLASSES.get(self.kind)
        text = f"{where}: {self.message}" if where else self.message
        attrs = self.attrs or {}
        exc: DdiaRayError
        if cls is None or cls is RemoteError:  # unknown here, or relayed: the kind it had where it failed
            exc = RemoteError(text, kind=self.kind if cls is None else attrs.get("kind", ""), node=self.node)
        else:
            exc = cls.__new__(cls)
            Exception.__init__(exc, text)
            for k, v in _init_defaults(self.kind).items():  # what did not travel (a chained cause...): its default
                setattr(exc, k, v)
            for k, v in attrs.items():
                setattr(exc, k, v)
        exc.remote_node = self.node  # type: ignore[attr-defined]
        return exc

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" + (f" (at {self.node})" if self.node else "")


@functools.lru_cache(maxsize=None)
def _init_defaults(kind: str) -> dict:
    """The attributes the ``__init__`` of error class ``kind`` (a name in ``_CLASSES``) sets from its
    parameters, at their defaults (None without one).

    A rebuilt exception skips ``__init__``; every class in :mod:`ddia_ray.errors` stores each
    parameter but the message under the parameter's name, so this gives the copy every attribute
    the original had, holding the travelled value or the default.
    """
    cls = _CLASSES[kind]
    if cls.__init__ is Exception.__init__:
        return {}
    out = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.name != "message" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            out[p.name] = None if p.default is p.empty else p.default
    return out

