"""Where a key lives: its routing key under a partitioning scheme (DDIA 6.2).

Theory of operation
-------------------
Every partition owns a half-open range ``[start, end)`` of *routing keys*, and one map
describes both schemes the same way:

* ``"range"``: the routing key is the key itself. Neighbouring keys share a partition, so a
  range scan visits only the partitions it overlaps, in order; skewed keys make hot spots,
  which splits answer.
* ``"hash"``: the routing key is the first 8 bytes of the key's BLAKE2b digest, big-endian,
  so a partition owns a range of hashes. Keys spread evenly whatever their shape; a range scan
  must ask every partition. The store starts with a fixed number of partitions, many more than
  replica groups, and rebalancing moves whole partitions (Riak, Couchbase's vBuckets,
  Elasticsearch's shards), so no key is ever rehashed.

Why hash ranges and not consistent hashing with virtual nodes: with the hash space cut into
explicit ranges, a partition is one contiguous interval whose data an engine scans in order, a
split is one more boundary (DynamoDB splits hash partitions this way), and the map is small and
exact. A ring of virtual nodes gives each node many small arcs, which is what moving whole
partitions gives too, with less bookkeeping. docs/partitioning.md has the longer rationale.

The digest is BLAKE2b, not Python's ``hash()``: the routing of a key must be the same in every
process and every version, and ``hash()`` of bytes is salted per process.
"""

from __future__ import annotations

import hashlib

from ..errors import ConfigError, InvalidArgumentError

__all__ = ["SCHEMES", "HASH_BYTES", "hash_of", "routing_key", "stored_key", "user_key", "hash_boundaries",
           "sample_boundaries"]

SCHEMES = ("range", "hash")
#: Length of a hash-scheme routing key.
HASH_BYTES = 8


def hash_of(key: bytes) -> bytes:
    """The hash-scheme routing key of ``key``: 8 bytes of its BLAKE2b digest."""
    return hashlib.blake2b(key, digest_size=HASH_BYTES).digest()


def routing_key(scheme: str, key: bytes) -> bytes:
    """Where ``key`` sorts among the partitions of a ``scheme`` map."""
    if type(key) is not bytes:
        raise InvalidArgumentError(f"keys are bytes, got {type(key).__name__}")
    if scheme == "range":
        return key
    if scheme == "hash":
        return hash_of(key)
    raise ConfigError(f"unknown partitioning scheme {scheme!r}; choose one of {SCHEMES}")


def stored_key(scheme: str, key: bytes) -> bytes:
    """The key a replica group stores ``key`` under: the key itself (``"range"``), or its routing key
    followed by the key (``"hash"``). A group then keeps each hash partition's keys together, in
    one contiguous range of its engine, so a move copies a range and a cleanup deletes one, as
    Cassandra orders rows by token."""
    if scheme == "hash":
        if type(key) is not bytes:
            raise InvalidArgumentError(f"keys are bytes, got {type(key).__name__}")
        return hash_of(key) + key
    return routing_key(scheme, key)


def user_key(scheme: str, stored: bytes) -> bytes:
    """The user's key of a :func:`stored_key`."""
    return stored[HASH_BYTES:] if scheme == "hash" else stored


def hash_boundaries(partitions: int) -> tuple[bytes, ...]:
    """The ``partitions - 1`` boundaries that cut the hash space into equal ranges."""
    if type(partitions) is not int or not 1 <= partitions <= 1 << 16:
        raise ConfigError(f"a hash-partitioned store has 1 to 65536 partitions, got {partitions!r}")
    space = 1 << (8 * HASH_BYTES)
    return tuple((space * i // partitions).to_bytes(HASH_BYTES, "big") for i in range(1, partitions))


def sample_boundaries(sample, partitions: int) -> tuple[bytes, ...]:
    """Boundaries that split the keys in ``sample`` into ``partitions`` ranges of about equal count
    (the key-range scheme's boundaries chosen from the data, as HBase's pre-splitting does).

    Fewer boundaries come back when the sample has fewer distinct keys than that: a boundary is
    always a key of the sample and no two are equal."""
    if type(partitions) is not int or not 1 <= partitions <= 1 << 16:
        raise ConfigError(f"a store has 1 to 65536 partitions, got {partitions!r}")
    keys = sorted(set(sample))
    if not all(type(k) is bytes for k in keys):
        raise InvalidArgumentError("a sample of keys holds bytes only")
    out: list[bytes] = []
    for i in range(1, partitions):
        k = keys[len(keys) * i // partitions] if keys else b""
        if k and (not out or k > out[-1]):  # b"" is where the first partition starts already
            out.append(k)
    return tuple(out)
