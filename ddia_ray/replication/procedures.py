"""Procedures: deterministic functions a replicated store runs inside its write path.

Theory of operation
-------------------
Some writes cannot be expressed as puts and compare-and-sets decided one key at a
time: an event store's append checks a stream's expected version, rejects the
whole batch on a mismatch, recognises event ids it has seen, and numbers the
events with the next positions of a global sequence. Doing that from a client
with reads and cas retries would serialise every appender on the global counter
through round trips. Instead the store runs a *procedure* where a cas is decided
(:func:`~.state.decide`): on the leader before an entry is ordered
(leader-follower), or by the Raft leader as it proposes the entry (:mod:`.speculation`;
at apply time on every member where the leader cannot, see :mod:`.raft_replica`). A procedure sees the
state as of its place in the log, returns the puts and deletes it decided plus a
result, and the log records only those effects (a row-based log, DDIA 5.1), so
followers never run it again. This is Redis's "effects replication" of scripts
and VoltDB's deterministic stored procedures.

An operation ``(CALL, name, args)`` names a procedure registered in this process
with :func:`procedure` and carries its arguments as versioned msgpack. A
procedure is ``fn(get, args) -> (ops, result)``:

* ``get(key)`` reads the state with the effects of the batch's earlier
  operations (another caller's writes packed into the same entry), and
  ``get.seek(start, end)`` its first live ``(key, value)`` in ``[start, end)``
  (None: none), the same way (a row keyed by the last position of what it
  covers is found so), and ``get.many(keys)`` the values of several keys (a
  list, None where absent), the same way, reading the state's part in one call;
* ``ops`` are ``(PUT, key, value)``, ``(DELETE, key, b"")`` or
  ``(DELETE_RANGE, start, end)`` tuples, never on the replicas' reserved keys;
* ``result`` is any value :func:`ddia_ray.codec.encode` takes; the writer
  receives it, and a retried write receives it again from the session table.

A procedure must be deterministic: no clock, no randomness, no I/O, no state
outside ``get`` (under Raft a member that applies an undecided entry runs it and must reach the same
decision). A :class:`~ddia_ray.errors.DdiaRayError` it raises is the caller's
answer (an :class:`~ddia_ray.error_record.ErrorRecord` in place of the result,
no effects); any other exception is a bug in the procedure and answers the same
way, as a ``RemoteError``, rather than stopping the replica. An unknown name
answers :class:`~ddia_ray.errors.UnknownProcedureError`.

A *query* is the read-only sibling (:func:`query`): ``fn(state, args) -> result``
run by the one replica that serves a :class:`~.records.ReplQuery` under the
client's read mode, with ``state.get``, ``state.get_many`` and ``state.scan``
(``scan(start, end, limit)``: keys and values of ``[start, end)``) to read. It
answers in one call what would take a client several reads (an event stream's
head and its events), and its result travels as a :class:`~.records.QueryResult`.
It must bound its own work (read pages, not ranges of unknown size).

The modules that register procedures are named when the store is launched
(``ReplicatedStore.launch(procedures=(...))``) and imported by every replica as
it starts; a name read from the wire is only ever looked up in the registry,
never imported.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .. import codec
from ..error_record import ErrorRecord
from ..errors import DdiaRayError, InvalidArgumentError, UnknownProcedureError
from ..registry import Registry
from .records import CALL, DELETE, DELETE_RANGE, PUT, RESERVED_PREFIX

__all__ = ["procedure", "query", "call_op", "run", "run_query", "load", "registered_procedures",
           "result_or_raise"]

Get = Callable[[bytes], "bytes | None"]
Procedure = Callable[[Get, Any], "tuple[tuple, Any]"]

def _same_function(a: Callable, b: Callable) -> bool:
    """One function, maybe loaded twice (a module imported again): the same module and name."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


# A taken name is refused with InvalidArgumentError: two replicas that disagree on what a name does
# would diverge.
_REGISTRY: Registry[Procedure] = Registry("procedure", same=_same_function, taken=InvalidArgumentError)
_QUERIES: Registry[Callable[[Any, Any], Any]] = Registry("query", same=_same_function, taken=InvalidArgumentError)
#: A procedure's name (the op's key): short, printable, dotted like a module path.
_NAME_MAX = 128


def procedure(name: str) -> Callable[[Procedure], Procedure]:
    """Register the decorated function as the procedure ``name`` in this process.

    Registering one name twice with different functions is refused: two replicas that disagree on
    what a name does would diverge."""
    return _registrar(_REGISTRY, name)


def query(name: str) -> Callable:
    """Register the decorated function as the read-only query ``name`` (see the module docstring)."""
    return _registrar(_QUERIES, name)


def _registrar(registry: Registry, name: str) -> Callable:
    """The decorator that registers a function under ``name`` in ``registry`` (once: the same function
    again, a module imported twice, is fine; another one is refused)."""
    _check_name(name)

    def wrap(fn):
        registry.register(name, fn)
        return fn

    return wrap


def run_query(name: str, args: bytes, state: Any) -> Any:
    """Run query ``name`` against ``state``: its result, or the ErrorRecord it refused or failed with."""
    try:
        fn = _QUERIES.view.get(name)
        if fn is None:
            raise UnknownProcedureError(f"no query {name!r} in this store (it knows {tuple(_QUERIES.names())}); "
                                        f"launch the store with the module that registers it in procedures=",
                                        name=name)
        result = fn(state, codec.decode(args))
        codec.check_value(result, f"the result of query {name!r}")
        return result
    except DdiaRayError as e:
        return ErrorRecord.of(e)
    except Exception as e:  # noqa: BLE001 - a query's bug answers its caller; the replica goes on
        return ErrorRecord.of(e)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidArgumentError(f"a procedure's name is a printable str of 1..{_NAME_MAX} characters, "
                                   f"got {name!r:.80}")


def registered_procedures() -> tuple[str, ...]:
    """The procedure and query names this process knows."""
    return tuple(_REGISTRY.names(_QUERIES.view))


def load(modules: Any) -> None:
    """Import the modules that register procedures (named by the store's launcher, never by a peer)."""
    if not isinstance(modules, (tuple, list)) or not all(isinstance(m, str) and m for m in modules):
        raise InvalidArgumentError(f"procedures is a tuple of module names, got {modules!r}")
    for module in modules:
        importlib.import_module(module)


def call_op(name: str, args: Any, *, checked: bool = False) -> tuple:
    """The write operation that runs procedure ``name`` with ``args`` (plain data or records).

    ``checked``: the caller built ``args`` itself of ints, strs, bytes and tuples of them, a few
    levels deep, and checked their types, so :func:`codec.check_value`'s walk is skipped (an event
    store append of 100 events spent a third of its client time in it)."""
    _check_name(name)
    if not checked:
        codec.check_value(args, f"the arguments of procedure {name!r}")
    return (CALL, name.encode(), codec.encode(args))


def run(op: tuple, get: Get) -> tuple[tuple, Any]:
    """Run the procedure of ``op`` against ``get``: ``(ops, result)``, or ``((), ErrorRecord)`` when it
    refused or failed. Never raises, so a bad call cannot stop a replica's apply loop."""
    try:
        name = op[1].decode()
        fn = _REGISTRY.view.get(name)
        if fn is None:
            raise UnknownProcedureError(f"no procedure {name!r} in this store (it knows {registered_procedures()}); "
                                        f"launch the store with the module that registers it in procedures=",
                                        name=name)
        ops, result = fn(get, codec.decode(op[2]))
        _check_effects(name, ops)
        codec.check_value(result, f"the result of procedure {name!r}")
        return ops, result
    except DdiaRayError as e:
        return (), ErrorRecord.of(e)
    except Exception as e:  # noqa: BLE001 - a procedure's bug answers its caller; the replica goes on
        return (), ErrorRecord.of(e)


def _check_effects(name: str, ops: Any) -> None:
    if not isinstance(ops, tuple):
        raise InvalidArgumentError(f"procedure {name!r} returned {type(ops).__name__} effects, not a tuple")
    for op in ops:
        if (not isinstance(op, tuple) or len(op) != 3 or op[0] not in (PUT, DELETE, DELETE_RANGE)
                or type(op[1]) is not bytes or type(op[2]) is not bytes):
            raise InvalidArgumentError(f"procedure {name!r} returned {op!r:.120}: effects are (PUT|DELETE|"
                                       f"DELETE_RANGE, bytes key, bytes value/end)")
        if op[1].startswith(RESERVED_PREFIX) or (op[0] == DELETE_RANGE and op[1] < RESERVED_PREFIX < op[2]):
            raise InvalidArgumentError(f"procedure {name!r} wrote the replicas' reserved keys")


def result_or_raise(result: Any, where: str = "") -> Any:
    """A procedure's answer as its caller sees it: the result, or the exception it refused with."""
    if type(result) is ErrorRecord:
        raise result.exception(where)
    return result
