"""The configuration store's writes, as procedures the Raft leader decides (every member, for an undecided entry).

Theory of operation
-------------------
Each write is decided where the replicated store decides a compare-and-set
(:mod:`ddia_ray.replication.procedures`): by the Raft leader as it proposes the
entry (every member at apply time where the leader cannot), against the state as
of its place in the log. So the global revision is a
counter in one row that only the log's order moves, a transaction's
comparisons and its writes happen at one point of that order (serializable
by construction, as etcd's are under its single writer), and no client ever
holds a lock. Everything here is a pure function of ``get`` and its
arguments; a value is handled as the bytes the client encoded.

The procedures (arguments, then result):

* ``config.put`` ``(key, value, lease)`` -> the new revision;
* ``config.delete`` ``(key,)`` -> ``(revision, deleted)``;
* ``config.delete_keys`` ``(prefix, read_revision, keys)``: a prefix delete.
  A procedure can only ``get``, so the client reads the prefix's keys at a
  revision first and names them; the procedure checks in the revision log
  that no key under the prefix changed since that read (optimistic
  concurrency control, DDIA 7.4) and refuses with
  :class:`~ddia_ray.errors.RevisionConflictError` if one did (the client reads
  again). -> ``(revision, deleted)``;
* ``config.txn`` ``(compares, success, failure)`` -> ``(succeeded, revision, responses)``;
* ``config.grant`` ``(ttl_ms,)`` -> the lease id; ``config.revoke`` ``(lease,)``
  -> the revision (its keys' deletes, one revision for them all);
* ``config.compact`` ``(revision,)`` -> ``(compacted, done)``: one step of at
  most :data:`COMPACT_STEP` revisions (a log entry stays small), repeated by
  the client until ``done`` (:mod:`.maintenance`);
* ``config.rollback`` ``(revision,)`` -> the new revision (:mod:`.maintenance`).

Bad input and refusals raise :mod:`ddia_ray.errors` exceptions, which the
writer receives in place of the result with nothing written.
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..errors import InvalidArgumentError, RevisionConflictError
from ..replication.procedures import procedure
from . import keys, maintenance
from .keys import unpack
from .mvcc import Revision, read_meta
from .records import COMPARE_RESULTS, COMPARE_TARGETS, check_key

__all__ = ["put", "delete", "delete_keys", "txn", "grant", "revoke", "compact", "rollback", "check_prefix",
           "MAX_TXN_OPS", "MAX_TTL_MS", "MIN_TTL_MS", "COMPACT_STEP", "CONFLICT_WINDOW"]

#: Operations (and comparisons) of one transaction, and keys of one prefix delete (etcd: 128 by default).
MAX_TXN_OPS = 10_000
#: A lease's time to live, in milliseconds (etcd's maximum is about 9.1e15 ms; a day is plenty here).
MAX_TTL_MS = 86_400_000
MIN_TTL_MS = 100
#: Revisions one compaction step removes (see the module docstring).
COMPACT_STEP = maintenance.COMPACT_STEP
#: Revisions a prefix delete looks back through for a conflicting change before it gives up (the
#: client then reads again, from a recent revision).
CONFLICT_WINDOW = 10_000


def check_prefix(prefix: Any) -> str:
    """``prefix`` if it is a valid key prefix: a str without NUL (``""``: every key)."""
    if not isinstance(prefix, str) or "\x00" in prefix:
        raise InvalidArgumentError(f"a prefix is a str without NUL, got {prefix!r:.80}")
    return prefix


def _lease_id(lease: Any) -> int:
    if type(lease) is not int or lease < 0:
        raise InvalidArgumentError(f"a lease id is an int >= 0, got {lease!r}")
    return lease


@procedure("config.put")
def put(get, args: Any) -> tuple[tuple, int]:
    """Set a key (attached to a lease, 0: none) at a new revision."""
    key, value, lease = args
    check_key(key)
    rev = Revision(get)
    revision = rev.put(key, value, _lease_id(lease))
    return rev.effects(), revision


@procedure("config.delete")
def delete(get, args: Any) -> tuple[tuple, tuple]:
    """Delete a key: ``(revision, 1)``, or ``(current revision, 0)`` with nothing written if it is absent."""
    (key,) = args
    check_key(key)
    rev = Revision(get)
    deleted = rev.delete(key)
    return rev.effects(), (rev.current, deleted)


@procedure("config.delete_keys")
def delete_keys(get, args: Any) -> tuple[tuple, tuple]:
    """Delete the live keys under ``prefix`` that the client read at ``read_revision`` (see the module
    docstring): ``(revision, deleted)``."""
    prefix, read_revision, names = args
    check_prefix(prefix)
    if type(read_revision) is not int or read_revision < 0:
        raise InvalidArgumentError(f"a read revision is an int >= 0, got {read_revision!r}")
    if not isinstance(names, tuple) or len(names) > MAX_TXN_OPS:
        raise InvalidArgumentError(f"a prefix delete names a tuple of at most {MAX_TXN_OPS} keys")
    for name in names:
        if not check_key(name).startswith(prefix):
            raise InvalidArgumentError(f"key {name!r:.80} is not under prefix {prefix!r:.80}")
    meta = read_meta(get)
    if read_revision > meta.revision:
        raise InvalidArgumentError(f"read revision {read_revision} is past the store's {meta.revision}")
    if meta.revision - read_revision > CONFLICT_WINDOW or read_revision < meta.compacted:
        raise RevisionConflictError(f"the read at revision {read_revision} is too old to check (the store is at "
                                    f"{meta.revision}); read again", read_revision=read_revision)
    for r in range(read_revision + 1, meta.revision + 1):
        row = get(keys.rev_key(r))
        changed = unpack(row, 1, "revision log")[0] if row is not None else ()
        hit = next((k for k in changed if k.startswith(prefix)), None)
        if hit is not None:
            raise RevisionConflictError(f"key {hit!r:.80} under prefix {prefix!r:.80} changed at revision {r}, "
                                        f"after the read at {read_revision}; read again", read_revision=read_revision)
    rev = Revision(get)
    deleted = sum(rev.delete(name) for name in sorted(set(names)))
    return rev.effects(), (rev.current, deleted)


def _compare(rev: Revision, compare: Any) -> bool:
    """Whether one ``(key, target, result, value)`` comparison holds (etcd's ``applyCompare``)."""
    if not (isinstance(compare, tuple) and len(compare) == 4):
        raise InvalidArgumentError("a comparison is (key, target, result, value)")
    key, target, result, wanted = compare
    check_key(key)
    if target not in COMPARE_TARGETS or result not in COMPARE_RESULTS:
        raise InvalidArgumentError(f"a comparison compares one of {COMPARE_TARGETS} with one of {COMPARE_RESULTS}")
    live = rev.live(key)
    if target == "value":
        if type(wanted) is not bytes:
            raise InvalidArgumentError("a value comparison carries the encoded value")
        if live is None:
            return False  # etcd: a value comparison on a missing key fails, whatever the operator
        have: Any = rev.value(key)
        if result in ("<", ">"):
            have, wanted = _ordered(codec.decode(have), codec.decode(wanted))
    else:
        if type(wanted) is not int:
            raise InvalidArgumentError(f"a {target} comparison carries an int")
        have = 0 if live is None else {"mod_revision": live.mod, "create_revision": live.create,
                                       "version": live.version, "lease": live.lease}[target]
    if result == "==":
        return have == wanted
    if result == "!=":
        return have != wanted
    return have < wanted if result == "<" else have > wanted


def _ordered(a: Any, b: Any) -> tuple:
    """``(a, b)`` if they compare by order (numbers with numbers, str with str, bytes with bytes)."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a, b
    if type(a) is type(b) and type(a) in (str, bytes):
        return a, b
    raise InvalidArgumentError(f"values of types {type(a).__name__} and {type(b).__name__} have no order: '<' and "
                               f"'>' compare numbers, str or bytes")


def _run_op(rev: Revision, op: Any) -> Any:
    """One ``(kind, key, value, lease)`` operation of a transaction; its response."""
    if not (isinstance(op, tuple) and len(op) == 4):
        raise InvalidArgumentError("a transaction's operation is (kind, key, value, lease)")
    kind, key, value, lease = op
    check_key(key)
    if kind == "put":
        return rev.put(key, value, _lease_id(lease))
    if kind == "delete":
        return rev.delete(key)
    if kind == "get":
        return rev.kv(key)
    raise InvalidArgumentError(f"a transaction's operation is a put, a delete or a get, got {kind!r}")


@procedure("config.txn")
def txn(get, args: Any) -> tuple[tuple, tuple]:
    """If every comparison holds run ``success``, else ``failure``, all at one revision:
    ``(succeeded, revision, responses)`` (see :class:`~.records.TxnResult`)."""
    compares, success, failure = args
    for part in (compares, success, failure):
        if not isinstance(part, tuple) or len(part) > MAX_TXN_OPS:
            raise InvalidArgumentError(f"a transaction's comparisons and operations are tuples of at most "
                                       f"{MAX_TXN_OPS}")
    for branch in (success, failure):
        written = [op[1] for op in branch if isinstance(op, tuple) and len(op) == 4 and op[0] in ("put", "delete")]
        if len(set(written)) != len(written):
            # etcd refuses it too ("duplicate key given in txn request"): which write would win is unclear.
            raise InvalidArgumentError("a transaction branch writes (puts or deletes) one key at most once")
    rev = Revision(get)
    succeeded = all([_compare(rev, c) for c in compares])  # every one evaluated: a bad one is refused
    responses = tuple(_run_op(rev, op) for op in (success if succeeded else failure))
    return rev.effects(), (succeeded, rev.current, responses)


@procedure("config.grant")
def grant(get, args: Any) -> tuple[tuple, tuple]:
    """A new lease of ``ttl_ms``: ``(id, ttl_ms)``. Its deadline is the lessor's (:mod:`.lessor`)."""
    (ttl_ms,) = args
    if type(ttl_ms) is not int or not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
        raise InvalidArgumentError(f"a lease's TTL is {MIN_TTL_MS / 1000}..{MAX_TTL_MS // 1000} s, got "
                                   f"{ttl_ms!r} ms")
    rev = Revision(get)
    lease = rev.grant(ttl_ms)
    return rev.effects(), (lease, ttl_ms)


@procedure("config.revoke")
def revoke(get, args: Any) -> tuple[tuple, tuple]:
    """Revoke a lease (by its holder, or by the lessor once it expired): its keys are deleted at one
    new revision, which watchers see as deletes. ``(revision, keys deleted)``."""
    (lease,) = args
    if type(lease) is not int or lease < 1:
        raise InvalidArgumentError(f"a lease id is an int >= 1, got {lease!r}")
    rev = Revision(get)
    deleted = rev.revoke(lease)
    return rev.effects(), (rev.current, deleted)


@procedure("config.compact")
def compact(get, args: Any) -> tuple[tuple, tuple]:
    """One step of compacting the history below ``revision``: ``(compacted, done)``."""
    (revision,) = args
    return maintenance.compact_step(get, revision)


@procedure("config.rollback")
def rollback(get, args: Any) -> tuple[tuple, int]:
    """Write, as one new revision, every key as it was at ``revision``: the new revision."""
    (revision,) = args
    return maintenance.rollback(get, revision)


# The queries register with these: the store is launched with this one module.
from . import queries  # noqa: E402, F401
