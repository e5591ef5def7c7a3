"""What a log reader may return for damaged bytes: the oracle shared by the durable log and the LSM WAL.

Theory of operation
-------------------
The oracle knows no byte format. It is given the original log as its
*frames*: the exact bytes each record occupies, measured while the seed was
written through the public API (the file size after each append). A mutated
file is then parsed *honestly* by matching those frames from the start:

* ``intact`` - the records of the original frames found back to back from byte 0;
* ``stop``   - where that match ends (``len(data)`` when the whole file is frames).

What a correct reader may do follows from that alone:

===================================  ==================================================
the file                             a reader that returns must return
===================================  ==================================================
is only whole original frames        exactly ``intact`` (splices of whole frames are
                                     undetectable by design, so they count as data)
is damaged at ``stop``, and no        exactly ``intact``: a torn tail (a truncation, a
original frame starts after it        damaged last frame, zeros to the end) loses only
                                     the damaged tail frame
is damaged at ``stop``, and a whole   nothing: it must raise. Returning ``intact`` would
original frame follows the damage     silently shorten the log after damage in the middle
``stop`` holds an original frame's   ``intact`` or raise: such a frame says it runs past
header, and that frame ends past      the end of the file, exactly what a torn append
the file's end                        leaves (bytes deleted or inserted in the middle of
                                     a file cannot be told from it without reading the
                                     user's bytes as frames)
===================================  ==================================================

The last row needs the size of the format's frame header (``frame_header_bytes``,
given by the target); it is off when that is 0.

Raising a ``ddia_ray.errors`` exception is always allowed, except that the
unchanged file and a pure truncation (a torn append: the most common crash
there is) must be read back: a log that refuses its own torn tail can never
restart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogShape", "HonestParse", "parse", "log_verdict", "runs_past_the_end"]


@dataclass(frozen=True)
class LogShape:
    """An original log: its bytes, the byte span of each frame, and the record each frame holds."""

    data: bytes
    frames: tuple        # bytes of each frame, in order
    records: tuple       # what each frame decodes to
    header: bytes = b""  # bytes before the first frame (a file magic), if the format has any
    frame_header_bytes: int = 0  # each frame's own header (its length and checksums), if known

    @classmethod
    def from_sizes(cls, data: bytes, sizes: list, records: list, *, frame_header_bytes: int = 0) -> "LogShape":
        """Cut ``data`` at the file sizes observed after each append (``sizes[0]``: before the first)."""
        if len(sizes) != len(records) + 1 or sizes[-1] != len(data):
            raise ValueError(f"inconsistent log shape: sizes {sizes} for {len(records)} records, {len(data)} bytes")
        frames = tuple(data[a:b] for a, b in zip(sizes, sizes[1:]))
        return cls(data, frames, tuple(records), data[:sizes[0]], frame_header_bytes)

    def offsets(self) -> tuple:
        """Where each frame starts, plus the end (mutation hints: boundaries are where parsers break)."""
        out, pos = [], len(self.header)
        for f in self.frames:
            out.append(pos)
            pos += len(f)
        out.append(pos)
        return tuple(out)


@dataclass(frozen=True)
class HonestParse:
    """The original frames found back to back from the start of a (mutated) file."""

    indices: tuple       # which original frame each match is
    stop: int            # where matching ended
    whole: bool          # the file is nothing but whole original frames
    tail_only: bool      # damaged, but no whole original frame starts after the damage
    truncation: bool     # the file is a proper prefix of the original


def parse(shape: LogShape, data: bytes) -> HonestParse:
    """Match ``shape``'s frames greedily from the start of ``data`` (see the module docstring)."""
    truncation = len(data) < len(shape.data) and shape.data.startswith(data)
    if not data.startswith(shape.header):
        # A damaged file header with no whole frame after it is a torn tail like any other (a
        # reader cannot tell it from an older format's torn first frame); with one, it must raise.
        return HonestParse((), 0, False, not _frame_after(shape, data, 0), truncation)
    pos, indices = len(shape.header), []
    by_first = {}
    for i, f in enumerate(shape.frames):
        by_first.setdefault(f, i)
    while pos < len(data):
        # Longest frame first, so a frame that is a prefix of another never steals its match.
        hit = next((i for f, i in sorted(by_first.items(), key=lambda kv: -len(kv[0]))
                    if data.startswith(f, pos)), None)
        if hit is None:
            break
        indices.append(hit)
        pos += len(shape.frames[hit])
    whole = pos == len(data)
    return HonestParse(tuple(indices), pos, whole, not whole and not _frame_after(shape, data, pos), truncation)


def _frame_after(shape: LogShape, data: bytes, pos: int) -> bool:
    """Whether a whole original frame starts anywhere after ``pos`` (then the damage is not a tail)."""
    return any(data.find(f, pos + 1) != -1 for f in set(shape.frames))


def log_verdict(shape: LogShape, data: bytes, got: list | None, error: BaseException | None) -> str | None:
    """None if a reader's outcome is allowed for ``data``, else what is wrong with it (one line)."""
    hp = parse(shape, data)
    expected = [shape.records[i] for i in hp.indices]
    if error is not None:
        if data == shape.data:
            return f"the unchanged log raised {type(error).__name__}: {error}"
        if hp.truncation:
            return (f"a log truncated to {len(data)} of {len(shape.data)} bytes (a torn tail) raised "
                    f"{type(error).__name__} instead of returning its {len(expected)} whole records: {error}")
        return None
    got = list(got)
    if hp.whole or hp.tail_only:
        if got != expected:
            return (f"returned {_summary(got, shape)} but the file holds {len(expected)} intact records "
                    f"{list(hp.indices)} then {'nothing' if hp.whole else 'a torn tail at byte ' + str(hp.stop)}")
        return None
    if runs_past_the_end(shape, data, hp):
        if got != expected:
            return (f"returned {_summary(got, shape)} but the file holds {len(expected)} intact records "
                    f"{list(hp.indices)} then a frame that runs past the end of the file")
        return None
    return (f"returned {_summary(got, shape)} although byte {hp.stop} is damaged and whole records follow "
            f"it: damage in the middle must raise, never shorten the log silently")


def runs_past_the_end(shape: LogShape, data: bytes, hp: HonestParse) -> bool:
    """Whether the damaged frame at ``hp.stop`` starts with an original frame's intact header and that
    frame would end past the end of the file: what a torn append looks like, whatever bytes lie inside
    its extent (a record may hold bytes that look like frames, so a reader must not look there)."""
    h = shape.frame_header_bytes
    if not h or hp.indices != tuple(range(len(hp.indices))):
        return False
    head = data[hp.stop:hp.stop + h]
    return any(f[:h] == head and hp.stop + len(f) > len(data) for f in shape.frames)


def _summary(got: list, shape: LogShape) -> str:
    idx = []
    for rec in got:
        idx.append(shape.records.index(rec) if rec in shape.records else "?")
    return f"{len(got)} records {idx}"
