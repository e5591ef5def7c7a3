"""Index functions that ship with ddia-ray: value -> index terms, named in an index's definition.

An index names its function as ``"module:callable"`` and plain ``options`` (the function is called
as ``function(value, **options)`` on every replica, so it must be importable there and
deterministic). These cover the common cases; a function of your own works the same way when its
module is importable on the Ray workers (a package of your job, or ``runtime_env``'s
``py_modules``).
"""

from __future__ import annotations

from .. import codec
from ..errors import InvalidArgumentError

__all__ = ["field", "prefix", "words"]


def field(value: bytes, *, name: str) -> tuple:
    """The ``name`` field of a value that is a codec-encoded map (``codec.encode({...})``), as its
    UTF-8 text; lists give one term per element; a missing field gives none."""
    doc = codec.decode(value)
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"the value is a {type(doc).__name__}, not a map with a {name!r} field")
    got = doc.get(name)
    if got is None:
        return ()
    items = got if isinstance(got, (list, tuple)) else (got,)
    return tuple(i if type(i) is bytes else str(i).encode() for i in items)


def prefix(value: bytes, *, length: int) -> tuple:
    """The first ``length`` bytes of the value (one term)."""
    return (value[:length],)


def words(value: bytes) -> tuple:
    """The lower-cased whitespace-separated words of a UTF-8 value (a small full-text index)."""
    return tuple({w.lower().encode() for w in value.decode("utf-8", "replace").split()})
