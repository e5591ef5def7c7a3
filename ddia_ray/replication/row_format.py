"""The value format of a service's rows in the replicated store: a format number, then the fields.

Theory of operation
-------------------
A service built on procedures (the event store, the schema registry, the
configuration store) keeps its rows in the replicated store's key space, and
its values outlive the code that wrote them: a member restarted on a newer
version reads rows an older one wrote. So every value is versioned msgpack
(:mod:`ddia_ray.codec`) of a tuple that starts with the service's row format
number::

    value := msgpack([format, field_1, ..., field_n])

:meth:`RowFormat.unpack` checks the number and the field count and refuses
anything else with a :class:`~ddia_ray.errors.CorruptRecordError` that names
the service and the kind of row, rather than handing a procedure a tuple of
the wrong shape (DDIA 4.1: a reader must recognise what it cannot read).
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..errors import CorruptRecordError

__all__ = ["RowFormat"]


class RowFormat:
    """Row values of format ``number`` of ``service`` (its name with an article, ``"an event store"``,
    as the refusals say it). Pure: no clock, no I/O."""

    __slots__ = ("number", "service")

    def __init__(self, number: int, service: str) -> None:
        self.number = number
        self.service = service

    def pack(self, *fields: Any) -> bytes:
        """A row value: the format number, then ``fields``, as versioned msgpack."""
        return codec.encode((self.number, *fields))

    def unpack(self, value: bytes, n: int | tuple[int, ...], what: str) -> tuple:
        """The ``n`` fields of a row value written by :meth:`pack` (``n`` a tuple: any of those
        counts, for a row that gained fields); a clear error for anything else (``what``: the kind
        of row, for the error)."""
        got = codec.decode(value)
        if not isinstance(got, tuple) or not got or got[0] != self.number:
            found = got[0] if isinstance(got, tuple) and got else got
            raise CorruptRecordError(f"{self.service} {what} row has format {found!r:.40}; this version reads "
                                     f"format {self.number}")
        if len(got) - 1 not in ((n,) if isinstance(n, int) else n):
            raise CorruptRecordError(f"{self.service} {what} row has {len(got) - 1} fields, expected {n}")
        return got[1:]

    def __repr__(self) -> str:
        return f"RowFormat({self.number}, {self.service!r})"
