"""Fuzz targets of the event store: its chunk rows, its consumer group rows and its archive files.

Theory of operation
-------------------
Each format is read back from storage (an LSM row, a file under the archive's
URL) or from the wire (a packed page of chunk rows a client decodes), so each
must decode to the data that was written or fail with a ``ddia_ray.errors``
exception; a wrong type in a decoded field counts as wrong data.

* ``event_chunk``: ``Chunk.header``, ``Chunk.of`` and ``keys.part_rows`` of a
  mutated chunk row. Every read row must have the field types a reader builds
  a ``RecordedEvent`` of; an unchanged row its own events.
* ``group_row``: a mutated consumer group row loaded as a ``Group``. What
  loads must write itself back as a row that loads to the same group (the
  group's row is rewritten by every ack), and an unchanged row its own state.
* ``event_archive``: an archive file mutated on disk under its manifest
  record, or the record's row mutated over the intact file, read through
  ``ArchiveReader.table``: the written rows, or ``ArchiveCorruptError`` (a
  record that does not decode as one is refused when its row is read).
"""

from __future__ import annotations

import random

from ddia_ray.errors import ArchiveCorruptError, CodecError, InvalidArgumentError

from .targets import Seed, SetupError, Target, Violation, drop_scratch

__all__ = ["EventChunkTarget", "GroupRowTarget", "EventArchiveTarget"]

_ROW_TYPES = (str, int, int, str, str, bytes, bytes, int)  # stream, version, position, id, type, data, meta, created


def _chunk(rng: random.Random, first_version: int, first_position: int, n: int, types: tuple) -> bytes:
    from ddia_ray.events import keys

    ids = tuple(f"id-{first_position + i}" for i in range(n))
    kinds = tuple(rng.choice(types) for _ in range(n))
    datas = tuple(rng.randbytes(rng.randint(0, 40)) for _ in range(n))
    metas = tuple(b"" if rng.random() < 0.7 else rng.randbytes(8) for _ in range(n))
    return keys.Chunk(first_version, first_position, 1_700_000_000_000, ids, kinds, datas, metas).row()


class EventChunkTarget(Target):
    """An event chunk row (``ddia_ray/events/keys.py``) mutated, read as a page part and as a chunk."""

    name = "event_chunk"
    allowed = (CodecError,)  # CorruptRecordError is one
    input_seconds = 0.5

    def build(self) -> list:
        from ddia_ray.events import keys

        rng = random.Random(21)
        out = []
        for i, (fv, fp, n, types) in enumerate(((0, 0, 1, ("Created",)), (5, 120, 3, ("A", "B")),
                                                (0, 1000, 40, ("OrderPlaced", "OrderPaid", "x" * 30)))):
            data = _chunk(rng, fv, fp, n, types)
            rows = keys.part_rows([("s-%d" % i, fp, fp + n - 1, data)])
            out.append(Seed(f"chunk{i}:{n}", data, (0, 1, 2, 3, 4, len(data) // 2), (f"s-{i}", fp, fp + n - 1, rows)))
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.events import keys

        stream, lo, hi, want = seed.context
        header = keys.Chunk.header(data)
        chunk = keys.Chunk.of(data)
        if header != (chunk.first_version, chunk.first_position, chunk.created_ms, len(chunk.ids)):
            raise Violation(f"the header {header} and the chunk disagree")
        rows = keys.part_rows([(stream, lo, hi, data)])
        for row in rows:
            if tuple(map(type, row)) != _ROW_TYPES:
                raise Violation(f"a chunk read as a row of types {[type(x).__name__ for x in row]}: {row!r:.200}")
        typed = keys.part_rows([(stream, lo, hi, data)], type_prefix="O")
        if typed != [r for r in rows if r[4].startswith("O")]:
            raise Violation("a type filter read other rows than the unfiltered read holds")
        if data == seed.data and rows != want:
            raise Violation(f"an unchanged chunk read as {rows!r:.200}")


class GroupRowTarget(Target):
    """A consumer group row (``ddia_ray/events/consumer_groups.py``) mutated and loaded as a ``Group``."""

    name = "group_row"
    allowed = (CodecError,)  # CorruptRecordError is one
    input_seconds = 0.5

    def build(self) -> list:
        from ddia_ray.events.consumer_groups import Group

        settings = (None, "", 500, 5, 30_000)
        out = [Seed("new", Group.new(settings, 0), (0, 1, 2), None)]
        g = Group(Group.new(settings, 100))
        g.inflight.add(100, 199, "c1", 1, 1_700_000_030_000)
        g.inflight.add(200, 200, "c2", 3, 1_700_000_031_000)
        g.inflight.add(205, 299, "c1", 1, 1_700_000_032_000)
        g.retry = {201: 2, 203: 1}
        g.cursor, g.parked = 300, 2
        g.counters.update(delivered=400, acked=100, retried=3, parks=2)
        out.append(Seed("busy", g.row(), (0, 1, 2, 3, 10, 20), None))
        # A row of the first layout (six fields, a tuple per event in flight), which loads are still given.
        from ddia_ray.events.keys import pack

        old = pack(settings, 50, ((40, "c1", 1, 1_700_000_000_000), (41, "c1", 2, 1_700_000_000_000)), ((42, 1),),
                   {"delivered": 3, "acked": 0, "retried": 1, "timed_out": 0, "parks": 0, "skipped": 0}, 0)
        out.append(Seed("layout1", old, (0, 1, 2, 3), None))
        return [Seed(s.name, s.data, s.hints, _state(Group(s.data))) for s in out]

    def execute(self, seed: Seed, data: bytes) -> None:
        from ddia_ray.events.consumer_groups import Group

        g = Group(data)
        state = _state(g)
        if _state(Group(g.row())) != state:
            raise Violation(f"a loaded group wrote a row that loads otherwise: {state!r:.200}")
        g.checkpoint  # noqa: B018 - a loaded group answers its checkpoint (a min over its parts)
        if data == seed.data and state != seed.context:
            raise Violation(f"an unchanged row loaded as {state!r:.200}")


def _state(g) -> tuple:
    return (g.settings, g.cursor, tuple(g.inflight.runs()), tuple(sorted(g.retry.items())),
            tuple(sorted(g.counters.items())), g.parked)


class EventArchiveTarget(Target):
    """An archive file (``ddia_ray/events/archive_files.py``) mutated on disk under its manifest record."""

    name = "event_archive"
    allowed = (ArchiveCorruptError, CodecError, InvalidArgumentError)
    input_seconds = 2.0

    def build(self) -> list:
        import fsspec

        from ddia_ray.events.archive_files import encode_file
        from ddia_ray.events.keys import pack

        rng = random.Random(31)
        self.root = self.scratch("archive")
        out = []
        first = 0
        for i, (n, group_rows) in enumerate(((3, 16), (60, 16))):
            rows = [(f"s-{p % 4}", p // 4, p, f"id-{p}", rng.choice(("A", "B")), rng.randbytes(rng.randint(0, 60)),
                     b"", 1_700_000_000_000 + p) for p in range(first, first + n)]
            data, record = encode_file(rows, group_rows, "zstd")
            if len(record.groups) < (1 if n < 16 else 2):
                raise SetupError(f"seed file {i} has {len(record.groups)} row groups")
            hints = (0, 4, record.footer[0], record.footer[0] + 4, len(data) - 8, len(data) - 4)
            out.append(Seed(f"file{i}:{n}", data, hints, (record, rows, data)))
            row = pack(record.row())  # the manifest's row, as the store keeps it (archive.py)
            out.append(Seed(f"record{i}:{n}", row, (0, 1, 2, 3, 10, len(row) // 2), (record, rows, data)))
            first += n
        fs, _ = fsspec.core.url_to_fs(self.root)
        fs.makedirs(self.root, exist_ok=True)
        return out

    def execute(self, seed: Seed, data: bytes) -> None:
        import fsspec

        from ddia_ray.events.archive_files import ArchiveFile, ArchiveReader, rows_of
        from ddia_ray.events.keys import unpack

        record, rows, file = seed.context
        if seed.name.startswith("record"):  # the record mutated, the file as written
            record = ArchiveFile.of(unpack(data, 1, "archive file")[0])
        else:
            file = data
        url = self.scratch("archive-trial")
        try:
            fs, root = fsspec.core.url_to_fs(url)
            fs.pipe_file(f"{root}/{record.name}", file)
            table = ArchiveReader(url).table(record)
            got = rows_of(table)
        finally:
            drop_scratch(url)
        if got != rows:
            raise Violation(f"a {'mutated' if data != seed.data else 'whole'} {seed.name.split(':')[0]} read as "
                            f"other rows: {got!r:.200}")
