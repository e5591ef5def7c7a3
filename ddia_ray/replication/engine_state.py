"""A replica state kept in a storage engine (LSM-tree or B+tree): data larger than memory.

Theory of operation
-------------------
The engine holds the data and, in the same atomic write batch as every entry's
operations, the position ``(lsn, epoch)`` of that entry under one reserved key
(:data:`APPLIED_KEY`). After a crash the engine therefore says exactly which
entry it reflects, whatever its own write-ahead log kept, and the replica
replays its log from there (the Raft "applied index stored with the data" rule
that etcd and TiKV follow). Clients may not write keys under
:data:`RESERVED_PREFIX`, and scans never return them.

Client sessions (the answers a client may ask for again, for exactly-once
writes) live in the engine too, one reserved key per client written in the same
batch as the entry that changed it, so they are exactly as durable as the data
and travel with a checkpoint; they are read on first use and cached. An index
of every session's last write (in cluster time) is kept in memory, built by one
scan of the session rows at open, so sessions idle past the group's TTL are
found without reading their rows; their rows are deleted in the batch of the
write that expired them (:class:`~ddia_ray.consensus.sessions.Sessions`). A
snapshot of this state is therefore only its position: the engine is durable
on its own. A replica that recovers checks the engine against its log; an
engine that is *behind* a snapshot it once wrote has lost data and refuses to
open (:class:`~ddia_ray.errors.CorruptionError`).

**Checkpoints** are files, not messages. :meth:`EngineState.export` asks the
engine for a point-in-time copy of its files (immutable SSTables plus a
manifest, or the B-tree's pages) under ``checkpoints_url`` and returns a small
record naming it; a lagging or new follower's :meth:`EngineState.prepare`
copies that directory through fsspec into a fresh engine directory of its own
(before its Raft core takes the snapshot, so a copy that fails changes
nothing), and :meth:`EngineState.install` switches to it and deletes the old one. Which directory is current is named by
a ``CURRENT`` file (RocksDB's name for the same idea), replaced only after the
new directory is complete, so a crash during an install leaves the old engine
in use and an orphan that the next open deletes. A leader keeps its two newest
checkpoints and those its followers are copying; a follower that asks for an
older one gets a newer one on its next request.

The engine runs inside the replica's actor, so its reads and writes happen in
the replica's event loop; an install copies files there too (a pause as long
as the copy, documented in docs/replication.md).
"""

from __future__ import annotations


import collections
import contextlib
from typing import Any

from .. import codec
from ..errors import ConfigError, CorruptionError, CorruptRecordError, NotADatabaseError, StorageError
from ..storage.engine import WriteBatch, open_engine
from .ingest import decode_ingest, ingest_puts
from .arrow_pages import page_bytes, scanned_page
from .records import AFTER_RESERVED, INGEST, RESERVED_PREFIX
from ..consensus.sessions import Sessions
from .state import decide

__all__ = ["EngineState", "APPLIED_KEY", "RESERVED_PREFIX", "ENGINE_NAMES", "SMALL_INGEST_ROWS", "SMALL_INGEST_BYTES"]

#: An ingest this small goes through the engine's write path (:meth:`EngineState._ingest`).
SMALL_INGEST_ROWS = 1 << 14
SMALL_INGEST_BYTES = 4 << 20

#: The key holding the position ``(lsn, epoch)`` of the last entry the engine applied.
APPLIED_KEY = RESERVED_PREFIX + b"applied"
#: Client ``c``'s session answers live under ``SESSION_PREFIX + c``.
SESSION_PREFIX = RESERVED_PREFIX + b"session/"
ENGINE_NAMES = ("lsm", "btree")
_FORMAT = 1
_KEEP_CHECKPOINTS = 2


def _decode_position(raw: bytes | None) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    try:
        value = codec.decode(raw)
    except Exception as e:  # noqa: BLE001 - any decode failure of this key is damage, reported as such
        raise CorruptionError(f"the engine's applied position is unreadable: {e}") from e
    if not (isinstance(value, tuple) and len(value) == 2 and all(type(v) is int and v >= 0 for v in value)):
        raise CorruptionError(f"the engine's applied position is {value!r}, not (lsn, epoch)")
    return value


class EngineState:
    """Replica state in an engine at ``url``/``engine-N`` (see the module docstring).

    ``engine`` is ``"lsm"`` or ``"btree"``; ``options`` go to the engine's ``open``;
    ``checkpoints_url`` is where :meth:`export` writes checkpoints (a place every replica of the
    group can read: the group's root). ``sync=True`` makes every applied entry durable in the
    engine before the call returns (the group's ``sync``).
    """

    def __init__(self, url: str, *, engine: str = "lsm", options: dict | None = None,
                 checkpoints_url: str | None = None, sync: bool = False, session_ttl_ms: int = 0):
        import fsspec

        if engine not in ENGINE_NAMES:
            raise ConfigError(f"unknown storage engine {engine!r} for a replica; use one of {ENGINE_NAMES}")
        self.url = url.rstrip("/")
        self.kind = engine
        self.options = dict(options or {})
        if engine == "lsm":
            # The replica's log is the log of record: the engine skips its own WAL unless told
            # otherwise, and a crash costs only a replay from the engine's durable position.
            self.options.setdefault("wal", False)
            if sync and self.options["wal"]:
                self.options.setdefault("sync", "batch")
        self.checkpoints_url = (checkpoints_url or f"{self.url}/checkpoints").rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(self.path, exist_ok=True)
        self.generation = self._current()
        self._drop_orphans()
        self.engine = open_engine(self._engine_url(self.generation), engine, **self.options)
        self._checked = hasattr(self.engine, "write_checked")
        self.applied, self.applied_epoch = _decode_position(self.engine.get(APPLIED_KEY))
        self._track_durability()
        self.session_ttl_ms = session_ttl_ms
        self.sessions = self._index_sessions()
        self.exported: list[str] = []
        self.installs = 0
        # (checkpoint, engine directory, its engine opened and checked) of prepare()
        self._staged: tuple[str, str, Any] | None = None

    # --- what a crash keeps ------------------------------------------------------------------

    def _track_durability(self) -> None:
        """Start tracking, from the position the engine is at now (durable: it was just opened)."""
        self._logless = getattr(self.engine, "durable_seq", None) is not None and not self.options.get("wal", True)
        self._durable = (self.applied, self.applied_epoch)
        self._pending: collections.deque = collections.deque()  # (engine seq, lsn, epoch) not yet durable
        self._flush_asked = -1  # engine seq up to which a flush was requested

    def durable_lsn(self) -> int:
        """The newest lsn a crash of this process keeps in the engine: ``applied`` with an engine WAL
        (or the B-tree), else the newest entry whose writes are in flushed SSTables. The replica's
        own log must keep every entry after it."""
        return self._durable_position()[0]

    def _durable_position(self) -> tuple[int, int]:
        if not self._logless:
            return self.applied, self.applied_epoch
        if self._pending:
            flushed = self.engine.durable_seq
            pending = self._pending
            while pending and pending[0][0] <= flushed:
                _, lsn, epoch = pending.popleft()
                self._durable = (lsn, epoch)
        return self._durable

    def request_durable(self) -> None:
        """Ask the engine to flush in the background, so that :meth:`durable_lsn` reaches ``applied``
        (once per flush: asking again while one is under way does nothing)."""
        if self._pending and self._flush_asked < self._pending[-1][0] and \
                self._flush_asked <= self.engine.durable_seq:
            self._flush_asked = self._pending[-1][0]
            self.engine.request_flush()

    # --- where the engine lives --------------------------------------------------------------

    def _engine_url(self, generation: int) -> str:
        return f"{self.url}/engine-{generation}"

    def _current(self) -> int:
        path = f"{self.path}/CURRENT"
        if not self.fs.exists(path):
            return 1
        text = self.fs.cat_file(path).decode("ascii", "replace").strip()
        if not text.startswith("engine-") or not text[7:].isdigit():
            raise CorruptionError(f"{self.url}/CURRENT names {text!r}, not an engine directory")
        return int(text[7:])

    def _set_current(self, generation: int) -> None:
        tmp, path = f"{self.path}/CURRENT.tmp", f"{self.path}/CURRENT"
        with self.fs.open(tmp, "wb") as f:
            f.write(f"engine-{generation}\n".encode("ascii"))
        self.fs.mv(tmp, path)  # a rename: readers see the old name or the new one, never half of one

    def _drop_orphans(self) -> None:
        for entry in self.fs.ls(self.path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("engine-") and name != f"engine-{self.generation}":
                self.fs.rm(entry, recursive=True)  # an install that did not finish, or one it replaced

    # --- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _decode_session(client: str, raw: bytes) -> tuple[tuple[int, dict], int]:
        try:
            ((_, (row, last)),) = Sessions.decode_rows(codec.decode(raw)).items()
        except Exception as e:  # noqa: BLE001 - any malformed row is damage, reported as such
            raise CorruptionError(f"the session row of client {client!r} is unreadable: {e}") from e
        return row, last

    def _index_sessions(self) -> Sessions:
        """A session table that knows every session's last write (for expiry) and loads answers
        on first use. One scan of the session rows, at open and after an install: the rows are
        few (sessions expire) and small once their clients have acknowledged their answers."""
        sessions = Sessions(self.session_ttl_ms)
        end = SESSION_PREFIX[:-1] + bytes([SESSION_PREFIX[-1] + 1])
        with self._scanning(SESSION_PREFIX, end) as rows:
            for key, raw in rows:
                client = key[len(SESSION_PREFIX):].decode("utf-8", "replace")
                sessions.note(client, self._decode_session(client, raw)[1])
        sessions.reorder()
        return sessions

    def _load_session(self, client: str) -> None:
        if client in self.sessions.table or client not in self.sessions.active:
            return  # cached, or no row in the engine (the index names every row)
        raw = self.engine.get(SESSION_PREFIX + client.encode())
        if raw is None:
            return
        row, last = self._decode_session(client, raw)
        self.sessions.load(client, row, last)

    def answered(self, client: str, seq: int):
        """See :meth:`~ddia_ray.consensus.sessions.Sessions.answered` (the client's row is read from the
        engine once)."""
        self._load_session(client)
        return self.sessions.answered(client, seq)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        return self.engine.get(key)

    def get_many(self, keys: tuple) -> tuple:
        """The values of ``keys`` (None where absent)."""
        return tuple(self.engine.get_many(list(keys)))

    def scan(self, start: bytes, end: bytes | None, limit: int, pin=None) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)`` in order (reserved keys skipped), and their values
        (as of ``pin``, an engine snapshot, when given)."""
        keys: list[bytes] = []
        values: list[bytes] = []
        with self._scanning(start, end, pin) as rows:
            for k, v in rows:
                if k.startswith(RESERVED_PREFIX):
                    continue
                keys.append(k)
                values.append(v)
                if len(keys) >= limit:
                    break
        return tuple(keys), tuple(values)

    def scan_arrow(self, start: bytes, end: bytes | None, limit: int, pin=None) -> tuple[bytes, int]:
        """:meth:`scan` as an Arrow page (:mod:`.arrow_pages`) and its row count. An engine with
        Arrow scans (the LSM) serves it from its columns around the reserved keys' range, with no
        Python object per row; any other from the rows it scans."""
        scan_batches = getattr(self.engine, "scan_batches", None)
        if scan_batches is None:
            return scanned_page(self, start, end, limit, pin)
        # [start, end) without [RESERVED_PREFIX, AFTER_RESERVED): at most two pieces.
        ranges: list[tuple[bytes, bytes | None]] = []
        if start < RESERVED_PREFIX:
            ranges.append((start, RESERVED_PREFIX if end is None else min(end, RESERVED_PREFIX)))
        if end is None or end > AFTER_RESERVED:
            ranges.append((max(start, AFTER_RESERVED), end))
        batches, rows = [], 0
        for s, e in ranges:
            if rows >= limit or (e is not None and s >= e):
                continue
            it = scan_batches(s, e, snapshot=pin, limit=limit - rows, batch_rows=limit)
            try:
                for batch in it:
                    batches.append(batch)
                    rows += batch.num_rows
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        return page_bytes(batches), rows

    def scan_rows(self, start: bytes, end: bytes, limit: int) -> tuple[tuple, tuple]:
        """Up to ``limit`` keys of ``[start, end)``, reserved ones included, and their values."""
        keys: list[bytes] = []
        values: list[bytes] = []
        with self._scanning(start, end) as rows:
            for k, v in rows:
                keys.append(k)
                values.append(v)
                if len(keys) >= limit:
                    break
        return tuple(keys), tuple(values)

    def pin(self):
        """An engine snapshot: pinned scans read it (old versions stay until :meth:`unpin`)."""
        return self.engine.snapshot()

    def unpin(self, view) -> None:
        """Release a snapshot of :meth:`pin` (already released with its engine after an install)."""
        with contextlib.suppress(StorageError):
            view.release()

    @contextlib.contextmanager
    def _scanning(self, start: bytes, end: bytes | None, snapshot=None):
        """The engine's scan of ``[start, end)``, closed on leaving (it releases the files the scan
        pinned, also when the caller stopped early)."""
        it = self.engine.scan(start, end) if snapshot is None else self.engine.scan(start, end, snapshot=snapshot)
        try:
            yield it
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def decide(self, ops: tuple) -> tuple[tuple, tuple]:
        """See :func:`~.state.decide`."""
        return decide(ops, self.engine.get, self.scan, self.get_many)

    # --- writes ---------------------------------------------------------------------------------

    def apply(self, lsn: int, ops: tuple, origin: tuple = (), epoch: int = 0) -> None:
        """Apply the decided ops of entry ``lsn`` and its position in one atomic engine batch (an
        ingest: one atomic engine ingest, see :meth:`_ingest`)."""
        extra_keys: tuple = (APPLIED_KEY,)
        extra_values: tuple = (codec.encode((lsn, epoch)),)
        extra_kinds = b"\x00"
        if origin:
            client = origin[0]
            self._load_session(client)
            sessions = self.sessions
            gone = sessions.remember(lsn, origin)
            # Expired sessions' rows are deleted in the same batch (kind 1: a delete).
            keys, values = [SESSION_PREFIX + c.encode() for c in gone], [b""] * len(gone)
            if client in sessions.table:
                keys.append(SESSION_PREFIX + client.encode())
                values.append(codec.encode(Sessions.encode_rows({client: sessions.table[client]}, sessions.active)))
            extra_keys = (*keys, APPLIED_KEY)
            extra_values = (*values, extra_values[0])
            extra_kinds = b"\x01" * len(gone) + bytes(len(keys) - len(gone) + 1)
        if ops and ops[0][0] == INGEST:
            self._ingest(ops, extra_kinds, extra_keys, extra_values)
        else:
            self._write(ops, extra_kinds, extra_keys, extra_values)
        self.applied, self.applied_epoch = lsn, epoch
        if self._logless:
            self._pending.append((self.engine.last_seq, lsn, epoch))
            if len(self._pending) > 4096:
                self._durable_position()  # drop what the engine has flushed (Raft never asks otherwise)

    def _write(self, ops: tuple, extra_kinds: bytes, extra_keys: tuple, extra_values: tuple) -> None:
        """Decided ``ops`` and the entry's own rows (``extra_*``: kind 0 a put, 1 a delete) as one batch."""
        if self._checked:  # the entry's ops were checked on arrival (records.check_ops): as they are
            self.engine.write_checked(ops, tuple(zip(extra_kinds, extra_keys, extra_values)))
        else:
            batch = WriteBatch()
            for code, key, tail in ops:
                if code == 0:
                    batch.put(key, tail)
                elif code == 1:
                    batch.delete(key)
                else:
                    batch.delete_range(key, tail)
            for kind, key, value in zip(extra_kinds, extra_keys, extra_values):
                if kind:
                    batch.delete(key)
                else:
                    batch.put(key, value)  # last: a range above cannot delete them
            self.engine.write(batch)

    def _ingest(self, ops: tuple, extra_kinds: bytes, extra_keys: tuple, extra_values: tuple) -> None:
        """Apply a bulk load (:mod:`.ingest`) with the entry's own rows.

        A small one (at most :data:`SMALL_INGEST_ROWS` rows and :data:`SMALL_INGEST_BYTES`: a
        client's batch of puts, which it sends in this form) goes through the engine's write path
        as columns (the LSM's ``write_puts``), as one atomic batch with those rows: an SSTable per
        thousand rows would leave compaction a file per write to merge (RocksDB also ingests
        files only for bulk loads).

        On the LSM engine the batch and the entry's position and session rows are one table that
        the engine's ``ingest`` adds in one manifest commit, so they are durable together, as a
        write batch's would be. Deletes of expired sessions cannot be rows of an ingest: they go
        first, in a batch of their own. That is safe to repeat: if the process dies between the two,
        the entry is applied again after the restart and the sessions are found expired again (or
        already gone). Engines without ``ingest`` (the B-tree) take the rows as one write batch.
        """
        rows = decode_ingest(ops[0][2])
        write_puts = getattr(self.engine, "write_puts", None)
        if write_puts is not None and rows.count <= SMALL_INGEST_ROWS and len(ops[0][2]) <= SMALL_INGEST_BYTES:
            # A client's batch of puts sent as columns (client.py): the memtable takes the arrays.
            write_puts(rows.keys, rows.values, tuple(zip(extra_kinds, extra_keys, extra_values)))
            return
        ingest = getattr(self.engine, "ingest", None)
        if ingest is None:
            self._write(ingest_puts(ops), extra_kinds, extra_keys, extra_values)
            return
        gone = extra_kinds.count(1)  # deletes come first in the extra rows (see apply)
        if gone:
            self._write((), extra_kinds[:gone], extra_keys[:gone], extra_values[:gone])
        import pyarrow as pa

        # The entry's own rows go where they sort among the batch's: they never share a key with it
        # (reserved keys are refused in a batch) and, all starting with the reserved prefix, no key
        # of the batch sorts between two of them. A batch in key order (a partitioned bulk load's
        # is) then makes the whole table ordered, which the engine takes without sorting it again.
        import pyarrow.compute as pc

        mine = sorted(zip(extra_keys[gone:], extra_values[gone:]))
        own = pa.table({"key": pa.array([k for k, _ in mine], pa.binary()),
                        "value": pa.array([v for _, v in mine], pa.binary())})
        batch = rows.table()
        at = 0
        if mine:
            at = pc.sum(pc.less(rows.keys, pa.scalar(mine[0][0], pa.binary()))).as_py() or 0
        ingest(pa.concat_tables([batch.slice(0, at), own, batch.slice(at)]))

    def remember(self, lsn: int, origin: tuple) -> None:
        """An entry the engine applied before a restart, replayed: its session row is in the engine already."""

    # --- snapshots and checkpoints ------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The durable position (data and sessions stay in the engine; without an engine WAL the
        entries after this position are replayed from the replica's log after a crash)."""
        return codec.encode(("engine", _FORMAT, *self._durable_position()))

    def restore(self, data: bytes) -> None:
        """Recover from a :meth:`snapshot` (or an :meth:`export`) this replica wrote: the engine holds the
        data, so only check that it has applied at least as far as the record says."""
        lsn = self._position_of(data)[0]
        if self.applied < lsn:
            raise CorruptionError(f"the engine at {self.url} has applied lsn {self.applied}, but the replica "
                                  f"recorded lsn {lsn} as applied: the engine lost data")
        self.sessions = self._index_sessions()  # answers read again from the engine on first use

    @staticmethod
    def _record_of(data: bytes) -> tuple:
        """A snapshot record ``("engine", format, lsn, epoch)`` or a checkpoint record
        ``("engine-checkpoint", format, url, lsn, epoch)``, decoded once and checked."""
        decoded = codec.decode(data)
        if isinstance(decoded, tuple) and len(decoded) == 4 and decoded[:2] == ("engine", _FORMAT) \
                and type(decoded[2]) is int and type(decoded[3]) is int:
            return decoded
        if isinstance(decoded, tuple) and len(decoded) == 5 and decoded[:2] == ("engine-checkpoint", _FORMAT) \
                and isinstance(decoded[2], str) and type(decoded[3]) is int and type(decoded[4]) is int:
            return decoded
        raise CorruptRecordError("not an engine replica snapshot or checkpoint record (or one of an unknown format)")

    @classmethod
    def _position_of(cls, data: bytes) -> tuple[int, int]:
        record = cls._record_of(data)
        return (record[2], record[3]) if record[0] == "engine" else (record[3], record[4])

    @classmethod
    def _checkpoint_of(cls, data: bytes) -> tuple[str, int, int]:
        """``(checkpoint url, lsn, epoch)`` of a checkpoint record."""
        record = cls._record_of(data)
        if record[0] != "engine-checkpoint":
            raise CorruptRecordError("a replica installs a checkpoint record, not a snapshot")
        return record[2], record[3], record[4]

    def export(self, name: str, keep: frozenset = frozenset()) -> bytes:
        """Write a checkpoint of the engine under ``checkpoints_url``/``name``; the record naming it.

        The newest :data:`_KEEP_CHECKPOINTS` stay, and so do the older ones named in ``keep``: a
        follower may still be copying them. Pruning those made a follower's copy fail whenever a
        checkpoint took longer to copy than the leader took to export two more (a loaded machine,
        a small ``snapshot_entries``, a slow store such as S3), and the follower stopped."""
        from ..storage import checkpoint

        dst = f"{self.checkpoints_url}/{name}"
        if dst not in self.exported:
            if _exists(dst):
                _remove(dst)  # a leftover of a crash during an earlier export of the same name
            checkpoint(self.engine, dst)
            self.exported.append(dst)
            kept = {f"{self.checkpoints_url}/{k}" for k in keep}
            for old in [d for d in self.exported[:-_KEEP_CHECKPOINTS] if d not in kept]:
                self.exported.remove(old)
                _remove(old)
        return codec.encode(("engine-checkpoint", _FORMAT, dst, self.applied, self.applied_epoch))

    def prepare(self, data: bytes) -> None:
        """Copy the checkpoint a leader's snapshot record names into this state's next engine
        directory and open it, before the replica's Raft core accepts the snapshot. A copy or an
        open that fails (the files are gone, damaged on the way, or at another position than the
        record says) raises :class:`~ddia_ray.errors.StorageError` and changes nothing: the replica
        drops the snapshot, and the leader sends a newer one. :meth:`install` then only swaps the
        engine it opened, so it has nothing left to fail on. (It opened the copy itself before, and
        a copy that opened damaged stopped the member: its Raft log had taken the snapshot.)"""
        src, lsn, epoch = self._checkpoint_of(data)
        target = self._engine_url(self.generation + 1)
        self._unstage()
        self._copy(src, target)
        self._staged = (src, target, self._open_copy(src, target, lsn, epoch))

    def _unstage(self) -> None:
        """Close and forget an engine :meth:`prepare` staged and no install took."""
        staged, self._staged = self._staged, None
        if staged is not None:
            try:
                staged[2].close()
            except StorageError:
                pass

    def _open_copy(self, src: str, target: str, lsn: int, epoch: int) -> Any:
        """The engine copied to ``target``, opened and at ``(lsn, epoch)``; else removed and a
        :class:`~ddia_ray.errors.StorageError`."""
        try:
            fresh = open_engine(target, self.kind, **self.options)
        except (StorageError, OSError, ValueError) as e:
            _remove(target)
            raise StorageError(f"checkpoint {src} was copied but does not open ({type(e).__name__}: {e}); "
                               f"ask the leader again") from e
        position = _decode_position(fresh.get(APPLIED_KEY))
        if position != (lsn, epoch):
            fresh.close()
            _remove(target)
            raise CorruptionError(f"checkpoint {src} is at {position}, its record says {(lsn, epoch)}")
        return fresh

    @staticmethod
    def _copy(src: str, target: str) -> None:
        from ..storage import copy_checkpoint

        if _exists(target):
            _remove(target)
        try:
            copy_checkpoint(src, target)
        except (NotADatabaseError, CorruptionError, FileNotFoundError) as e:
            # Gone (pruned by a member that is no longer the leader) or damaged on the way.
            _remove(target)
            raise StorageError(f"checkpoint {src} could not be copied ({type(e).__name__}: {e}); "
                               f"ask the leader again") from e

    def install(self, data: bytes) -> None:
        """Replace this state by the checkpoint a leader's :meth:`export` names (copied by
        :meth:`prepare` already, or copied now)."""
        src, lsn, epoch = self._checkpoint_of(data)
        generation = self.generation + 1
        target = self._engine_url(generation)
        if self._staged is None or self._staged[:2] != (src, target):
            self.prepare(data)  # not staged for this snapshot (a restart replaying it): copied and opened now
        assert self._staged is not None  # prepare staged it, or raised
        fresh, self._staged = self._staged[2], None
        position = lsn, epoch
        old, self.engine = self.engine, fresh
        self._set_current(generation)
        old.close()
        _remove(self._engine_url(self.generation))
        self.generation = generation
        self.applied, self.applied_epoch = position
        self._track_durability()  # a checkpoint's files are durable
        self.sessions = self._index_sessions()  # the checkpoint's rows are in the new engine
        self.installs += 1

    def describe(self) -> dict:
        """Figures for status: the engine, its generation, sessions and installs."""
        return {"engine": self.kind, "generation": self.generation, "sessions": len(self.sessions.active),
                "sessions_expired": self.sessions.expired,
                "installs": self.installs}

    def close(self) -> None:
        """Close the engine, and one staged for a snapshot (idempotent)."""
        self._unstage()
        try:
            self.engine.close()
        except StorageError:
            pass


def _exists(url: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))


def _remove(url: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)

