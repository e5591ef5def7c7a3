"""Merkle-tree anti-entropy between two replicas: find the keys whose versions differ, then swap them.

Theory of operation
-------------------
Two replicas of a leaderless or multi-leader group repair what they missed by comparing their
:class:`~.merkle.MerkleTree` (same shape on both) and exchanging only what differs (DDIA 5.5,
"Read repair and anti-entropy"; DeCandia et al. 2007, "Dynamo", 4.7; Riak's AAE). The initiator
runs an :class:`AntiEntropySession`; the responder is stateless: :func:`answer` turns each message
into its reply from the responder's tree. The callers carry the messages and merge the values.

The messages, their byte formats and the round trips they make are in
:mod:`.anti_entropy_messages`; the responder is :mod:`.anti_entropy_responder`. The responder's
caller merges the pushed pairs of every AeFetch it answers (:func:`pushed_pairs`); the initiator's
caller merges ``session.received`` once ``done``.

A few keys: power sums. Every tree also keeps the power sums of its keys (:mod:`.power_sums`):
``2t + 1`` of them name up to ``t`` differing keys with no round in between. The first probe of a
session carries the initiator's first :data:`PROBE_SUMS` (5: up to 2 keys, 20 bytes); when they
name the keys, the responder answers with those keys' values at once (and the ids of those it lacks,
for the initiator to push): one round trip for a key only the responder holds, two when something
must be pushed. Otherwise its answer carries its first :data:`ANSWER_SUMS` sums (25: up to 12 keys)
beside the descent's first hashes, and the next probe asks for the rest (61 in all: up to 30 keys);
when the initiator's decode names every differing key, it abandons the descent, fetches their keys
by id and pushes its own versions in the same message. Past 30 keys, the sums decode nothing and
cost 244 bytes; the descent goes on as below. A tree of fewer than :data:`SUMS_MIN_KEYS` (1,024)
keys skips the sums: its descent is a few short rounds, and decoding costs CPU (below), which in
the seeded simulations of a few dozen keys was a quarter of the run time.

Descent. The initiator asks only for the descendants of nodes whose hashes differ. Node hashes
are additive (see :mod:`.merkle`), so hashes travel truncated to their low ``8 * width`` bits
(``width`` = 2 bytes in the first pass) and the last child of each node is never sent: it is the
parent's hash minus its siblings'. A difference at a parent therefore always shows in at least one
child. Where a node holds at most ``lmax`` keys (the responder knows its own counts), the responder
lists the prefixes of its entry hashes instead of descending: an adaptive leaf size. The initiator
matches them against its own entries under the node: its own unmatched entries are to be pushed,
the responder's unmatched ones are fetched by prefix (not by position, so a write meanwhile cannot
make the responder send the wrong key). When few nodes differ, a round expands two or three
levels at once (the ``step``), trading hash bytes for rounds by a cost model of a round's framing
(:data:`_ROUND_BYTES`: a probe and its answer take about 78 bytes of framing in the compact
layout of :mod:`.anti_entropy_messages`, but the model prices a round at 180, which measured fewer
rounds for no more bytes).

Verification. Truncated hashes and prefixes can hide a difference (probability 2**-16 per
differing node, about ``lmax * 2**-32`` per differing entry), and power sums can name wrong keys
(probability about 2**-32). The initiator checks what it found against the responder's full 64-bit
root: its own root, minus the entries it pushes, plus the entries it gets, must equal the
responder's root. If not, it runs another pass with wider hashes (4, then 8 bytes; no power sums)
comparing the responder's tree with that corrected view, so only the missed keys are searched
again (at 10% of 1M keys differing a second pass is the rule and adds ~1%). Pushes wait for the
verification, so the responder's tree does not change under it, except after a decode of the
power sums, whose pushes ride with the fetch. When the listings of a pass carried full 8-byte
hashes (the initiator asks for them while few nodes differ, as they cost less than the round they
save), the check needs no values: the pushes ride with the fetch. A third pass that still disagrees
(a replica was written meanwhile) ends the session with ``verified = False``; the next session
finds the rest.

Cost and the 2x bound. Let ``d`` keys differ among ``n``, ``minimal`` = the key and value bytes of
the versions that must cross (one per key present on one side only, two per key both sides
changed). Up to 30 keys, the exchange adds to ``minimal`` the sums (20 to 264 bytes), 4 bytes an id
and the framing of 2 to 3 round trips (about 30 bytes a message). Past 30, it adds 244 bytes of
sums, per differing key about ``(fanout - 1) * width + 2`` bytes for each level it is descended
alone (``log_fanout(n / d)`` levels), 4 to 8 bytes per listed entry (up to ``lmax`` a key), 4 to 8
bytes to fetch it and ~5 bytes of framing for its pair; and per round about 78 bytes, over
``~depth / step + 1`` rounds. With the shapes of :meth:`~.merkle.MerkleTree.shape_for` (fanout 4,
~2 keys a leaf), 16-byte keys and 100-byte values (bench/conflicts_antientropy.py, 2026-12-05;
ratio = total bytes both ways / minimal; before the power sums and the compact layout: 6.3 / 11.5
for one key of 1M, 2.5 / 3.3 for ten)::

    divergent keys   1      2      3      10     30     40     100    1000   1%     10%
    10K keys       1.76   1.53   1.70   1.21   1.20   1.41   1.27   1.16   (=100) (=1000)
                   1.93   1.48   1.93   1.32   1.30   1.61   1.41   1.25
    100K keys      1.76   1.53   1.70   1.21   1.16   1.48   1.36   1.24   (=1000) 1.16
                   1.93   1.48   1.93   1.32   1.23   1.72   1.55   1.37           1.25
    1M keys        1.76   1.53   1.70   1.21   1.15   1.57   1.45   1.31   1.23   1.16
                   1.93   1.48   1.93   1.32   1.23   1.86   1.68   1.48   1.36   1.24
    (first line of a size: the "mixed" divergence; second: the "one-sided" one, see the bench's doc)

So the bound holds from one differing key up (for trees of at least :data:`SUMS_MIN_KEYS` keys; a
smaller one may pay the few hundred bytes of a descent for its first keys). The tightest points
are one key only the responder holds (224 bytes against 116: the probe and the answer's framing),
three such keys (the answer's 25 sums and a second round trip) and, at 1M keys, 31 to 40 keys only
the responder holds (the descent begins there, and pays the 244 bytes of sums that named
nothing): 1.86 to 1.94.
Decoding costs CPU: about 1 ms for 3 keys, 8 ms for 12, 30 ms for 30 (pure Python).

Pure: no Ray, no clock, no randomness.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from ..codec import encode
from ..errors import CorruptRecordError, InvalidArgumentError
from .anti_entropy_messages import (
    SESSION_ID_MAX,
    STEP_DESCENDANTS_MAX,
    AeFetch,
    AeNodes,
    AeProbe,
    AeValues,
    node_offset,
    read_fixed,
    read_gaps,
    read_varints,
    step_for,
    write_gaps,
    write_varints,
)
from .anti_entropy_responder import ANSWER_SUMS, PROBE_SUMS, Lookup, answer, pushed_pairs
from .power_sums import ID_BITS, SUMS, P, decode, key_id, read_sums
from .merkle import MerkleTree, entry_hash, key_hash

__all__ = ["AeProbe", "AeNodes", "AeFetch", "AeValues", "AntiEntropySession", "answer", "pushed_pairs",
           "PROBE_SUMS", "ANSWER_SUMS", "SUMS_MIN_KEYS",
           "SESSION_ID_MAX", "STEP_DESCENDANTS_MAX", "PASSES_MAX"]

#: Trees of fewer keys skip the power sums: their descent is short (a few rounds of a few hundred bytes
#: in all), and decoding costs milliseconds of CPU (see the module doc).
SUMS_MIN_KEYS = 1024

#: Passes a session may run: hash widths (2, 4, 8) and prefix widths (4, 8, 8) bytes.
PASSES_MAX = 3
_WIDTHS = ((2, 4), (4, 8), (8, 8))
_MASK64 = (1 << 64) - 1

# --- the initiator ------------------------------------------------------------------


def _framing_bytes() -> int:
    """What one probe and its answer cost beyond their payload: the cost model's price of a round."""
    return len(encode(AeProbe.of(1 << 40, 5, b"", root=None))) + len(encode(AeNodes.of(1 << 40, 5)))


_FRAMING_BYTES = _framing_bytes()
#: The price of a round in the cost model. Its framing is ~78 bytes (:func:`_framing_bytes`), but
#: pricing it at 180 (what it cost before the compact layout) measured fewer rounds and no more bytes
#: (1M keys, 31 to 10,000 differing: 1 round fewer, ratios equal or up to 0.02 lower), since the
#: model leaves out the rest of a round (node lists, counts); and fewer rounds is less latency.
_ROUND_BYTES = max(_FRAMING_BYTES, 180)


@dataclasses.dataclass(frozen=True)
class _Pass:
    width: int
    ewidth: int


class AntiEntropySession:
    """The initiator's side of one anti-entropy exchange with ``peer`` over ``tree`` (see the module doc).

    ``start()`` gives the first messages to send; each reply goes to ``on_message``, which gives the
    next ones; ``done`` turns true when the exchange is over. Outcome: ``received`` (the peer's
    ``(key, value)`` pairs of the differing keys, for the caller to merge), ``to_push`` (this replica's
    differing keys the peer lacks or holds another version of), ``differing_keys``, ``verified`` and the
    byte counts ``bytes_sent`` / ``bytes_received`` (encoded sizes of every message each way).

    ``sums_min_keys``: below this many keys in ``tree``, the session skips the power sums.
    ``lookup(keys)`` gives this replica's values of keys to push; without it the session sends no
    values and the caller pushes ``to_push`` itself. ``tree`` must not be written during the session
    (use :meth:`MerkleTree.copy`), or the verification may take extra passes.
    """

    def __init__(self, tree: MerkleTree, *, peer: str, session_id: int, lookup: Lookup | None = None,
                 lmax: int = 4, step_max: int = 3, passes_max: int = PASSES_MAX,
                 sums_min_keys: int = SUMS_MIN_KEYS):
        if not isinstance(tree, MerkleTree):
            raise InvalidArgumentError(f"tree must be a MerkleTree, got {type(tree).__name__}")
        for name, value, low, high in (("session_id", session_id, 0, SESSION_ID_MAX - 1),
                                       ("lmax", lmax, 0, (1 << 32) - 1), ("step_max", step_max, 1, 8),
                                       ("passes_max", passes_max, 1, PASSES_MAX),
                                       ("sums_min_keys", sums_min_keys, 0, 1 << 63)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(f"{name} must be an int within [{low}, {high}], got {value!r:.60}")
        self.tree, self.peer, self.session_id, self.lookup = tree, peer, session_id, lookup
        self.sums_min_keys = sums_min_keys
        self.lmax, self.step_max, self.passes_max = lmax, step_max, passes_max
        self.received: list[tuple[bytes, bytes]] = []
        self.pushed = 0
        self.bytes_sent = self.bytes_received = self.messages_sent = self.messages_received = 0
        self.rounds = 0
        self.passes = 0
        self.verified = False
        self.done = False
        self._phase = "new"
        self._pass = _Pass(*_WIDTHS[0])
        self._level = 0
        self._step = 1
        self._asked: list[tuple[int, int]] = []  # (index, the peer's hash truncated), of the probe in flight
        self._their_root: int | None = None
        self._want: dict[int, list[int]] = {}  # breadth-first node id -> wanted prefixes, aligned to 64 bits
        self._want_width = 8  # the narrowest prefix width listed this pass
        self._ewidth = 8  # the prefix width of the probe in flight
        self._push: dict[bytes, None] = {}  # keys to push, in the order found
        self._overlay: dict[bytes, int | None] = {}  # key -> entry hash the peer holds (None: none)
        self._overlay_leaves: dict[int, set[bytes]] = {}
        # The corrected view's deltas: of the root always, of every node from the second pass on (the
        # first pass never looks again at a node whose keys it has judged, so it needs only the root).
        self._root_delta = 0
        self._adjust: list[dict[int, int]] = [{} for _ in range(tree.depth + 1)]  # node -> hash delta
        self._adjust_built = False
        self._pushed_keys: set[bytes] = set()  # keys whose values went with a fetch already
        self._fetch_ids: list[int] = []  # sketch ids of the fetch in flight
        self._their_sums: list[int] = []  # the peer's power sums received so far (first pass)
        self._ask: tuple[int, int] | None = None  # the range of them the probe in flight asks for

    # --- driving -------------------------------------------------------------

    def start(self) -> list:
        """The first message(s) to send to the peer."""
        if self._phase != "new":
            raise InvalidArgumentError("an anti-entropy session starts once")
        return self._send([self._begin_pass()])

    def on_message(self, message) -> list:
        """Take the peer's reply; return the next message(s) to send (empty when the exchange is over or
        ``message`` is a stale duplicate, which is ignored)."""
        if getattr(message, "sid", None) != self.session_id:
            raise InvalidArgumentError(f"message of session {getattr(message, 'sid', None)!r} given to session "
                                       f"{self.session_id}: route replies by their sid")
        view: Any = message.view() if isinstance(message, (AeNodes, AeValues)) else None  # parsed once
        if isinstance(message, AeNodes) and self._phase == "probing" and view.level == self._level:
            self._count_received(message)
            return self._send(self._on_nodes(view))
        if isinstance(message, AeValues) and self._phase in ("fetching", "final"):
            self._count_received(message)
            got = self._take_values(view.pairs)
            for kid in self._fetch_ids:  # our keys of a fetched id that the peer did not send: it lacks them
                for key, _ in self.tree.entries_with_id(kid):
                    if key not in got:
                        self._set_overlay(key, None)
            self._fetch_ids = []
            if self._phase == "final":  # verified before the fetch, pushes sent with it: over
                self.verified = self._virtual_root() == self._their_root  # unless the peer changed meanwhile
                self._finish()
                return []
            return self._send(self._verify())
        if isinstance(message, AeValues) and self._phase == "pushing":
            self._count_received(message)
            self._finish()
            return []
        if isinstance(message, (AeNodes, AeValues)):
            return []  # a duplicate or a reply to an earlier pass
        raise InvalidArgumentError(f"an anti-entropy initiator takes AeNodes and AeValues, got "
                                   f"{type(message).__name__}")

    def _take_values(self, flat: tuple) -> dict[bytes, int]:
        """Take the peer's versions (flat key, value, ...) into the corrected view; their entry hashes."""
        got = {}
        for key, value in zip(flat[0::2], flat[1::2]):
            h = got[key] = entry_hash(key, value)
            self._set_overlay(key, h)
            if h == self.tree.entry(key):
                # Our own entry, taken for a difference when narrow prefixes matched the wrong way
                # round (two entries of one node sharing a prefix): no difference, nothing to push.
                self._push.pop(key, None)
                continue
            self.received.append((key, value))
        return got

    @property
    def to_push(self) -> list[bytes]:
        """This replica's keys the peer lacks or holds another version of, in the order found."""
        return list(self._push)

    @property
    def differing_keys(self) -> list[bytes]:
        """Every key found to differ, sorted: the ones received and the ones to push."""
        return sorted({k for k, _ in self.received} | self._push.keys())

    def statistics(self) -> dict:
        """Bytes, messages, rounds and passes of the session so far."""
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "messages_sent": self.messages_sent, "messages_received": self.messages_received,
                "rounds": self.rounds, "passes": self.passes, "received": len(self.received),
                "to_push": len(self.to_push), "verified": self.verified, "done": self.done}

    def _send(self, messages: list) -> list:
        for m in messages:
            self.bytes_sent += len(encode(m))
            self.messages_sent += 1
        return messages

    def _count_received(self, message) -> None:
        self.bytes_received += len(encode(message))
        self.messages_received += 1

    # --- passes --------------------------------------------------------------

    def _begin_pass(self) -> AeProbe:
        if self.passes and not self._adjust_built:
            self._build_adjust()
        self._pass = _Pass(*_WIDTHS[self.passes])
        self.passes += 1
        self._phase, self._level, self._want, self._want_width = "probing", 0, {}, 8
        tree = self.tree
        # The first pass sends the first power sums: if at most 2 keys differ, the answer names them.
        use = self.passes == 1 and len(tree) >= self.sums_min_keys
        sums = tree.sketch.to_bytes(0, PROBE_SUMS) if use else b""
        self._ask = (0, ANSWER_SUMS) if sums else None
        # With sums, the first answer's hashes are likely wasted (the sums name up to 30 keys): priced
        # at the real framing, the model expands fewer levels there.
        self._step = self._choose_step(0, 1, _FRAMING_BYTES if sums else _ROUND_BYTES)
        self._ewidth = self._choose_ewidth(1)
        self._asked = [(0, 0)]  # the peer's root arrives with the answer
        self.rounds += 1
        return AeProbe.of(self.session_id, 0, write_gaps([0]), step=self._step, width=self._pass.width,
                          ewidth=self._ewidth, lmax=self.lmax, root=self._virtual_root(),
                          shape=(tree.fanout, tree.depth), sums=sums)

    def _choose_ewidth(self, frontier: int) -> int:
        """Prefix width of the listings this round. Full 8-byte entry hashes let the pass be verified
        before the values are fetched, so the pushes ride with the fetch and a round trip is saved:
        worth it while the listings (about ``lmax`` entries a node) cost less extra than a round."""
        narrow = self._pass.ewidth
        if narrow < 8 and frontier * max(self.lmax, 1) * (8 - narrow) <= _ROUND_BYTES:
            return 8
        return narrow

    def _choose_step(self, level: int, frontier: int, round_bytes: int = _ROUND_BYTES) -> int:
        """Levels to expand this round: few differing nodes make rounds dear and hashes cheap."""
        fanout, width, best, best_cost = self.tree.fanout, self._pass.width, 1, None
        for step in range(1, min(self.step_max, self.tree.depth - level) + 1):
            if fanout ** step > STEP_DESCENDANTS_MAX:
                break
            cost = (round_bytes + frontier * ((fanout ** step - 1) * width + 2)) / step
            if best_cost is None or cost < best_cost:
                best, best_cost = step, cost
        return best

    def _on_nodes(self, m) -> list:
        """The next messages after an answer of the descent (``m``: the :class:`AeNodes`, parsed)."""
        tree, level = self.tree, self._level
        fanout, depth = tree.fanout, tree.depth
        if level == 0:
            if m.root is None:
                raise CorruptRecordError("anti-entropy: the answer to a level-0 probe lacks the root")
            self._their_root = m.root
            if m.root == self._virtual_root():
                return self._verify()
            if (m.pairs or m.ids) and self._ask is None:
                raise CorruptRecordError("anti-entropy: keys named in answer to a probe that sent no sums")
            if m.pairs or m.ids:
                return self._on_found(m.pairs, read_fixed(m.ids, 4, "found ids"))
            self._asked = [(0, m.root & ((1 << (8 * self._pass.width)) - 1))]
        if self._ask is not None or m.sums:
            items = self._take_sums(m.sums)
            if items:
                self._want = {}  # every difference is named: what the listings found is among them
                return self._fetch_found(items)
        width, ewidth = self._pass.width, self._ewidth
        mask = (1 << (8 * width)) - 1
        listed = read_gaps(m.listed, len(self._asked), "listed positions")
        counts = read_varints(m.counts, "listed counts")
        if len(counts) != len(listed) or sum(counts) * ewidth != len(m.entries):
            raise CorruptRecordError("anti-entropy: the listed counts do not match the listed entries")
        step = step_for(fanout, depth, level, self._step)
        span = fanout ** step
        expanded = len(self._asked) - len(listed)
        if level == depth and expanded:
            raise CorruptRecordError("anti-entropy: leaves must be listed, not expanded")
        if len(m.hashes) != expanded * (span - 1) * width:
            raise CorruptRecordError(f"anti-entropy: {len(m.hashes)} bytes of hashes for {expanded} nodes "
                                     f"of {span - 1} hashes of {width} bytes")
        theirs = read_fixed(m.hashes, width, "hashes")
        prefixes = read_fixed(m.entries, ewidth, "entries")
        listed_at = dict(zip(listed, range(len(listed))))
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        below = level + step
        mine = tree.level_sums(below) if expanded else None
        adjust = self._adjust[below] if expanded else {}
        frontier: list[tuple[int, int]] = []
        at = 0
        for position, (index, their_hash) in enumerate(self._asked):
            k = listed_at.get(position)
            if k is not None:
                self._compare_listing(level, index, prefixes[starts[k]:starts[k + 1]], ewidth)
                continue
            assert mine is not None
            children = theirs[at:at + span - 1]
            at += span - 1
            children.append((their_hash - sum(children)) & mask)  # the sums are additive: the last is implied
            first = index * span
            for j, h in enumerate(children):
                node = first + j
                if ((mine[node] + adjust.get(node, 0)) & mask) != h:
                    frontier.append((node, h))
        if frontier:
            self._level, self._asked = below, frontier
            self._step = self._choose_step(below, len(frontier))
            self._ewidth = self._choose_ewidth(len(frontier))
            self.rounds += 1
            # A first pass whose sums named no keys asks once for the rest of them: up to SUMS // 2 keys.
            ask = None
            if self.passes == 1 and 0 < len(self._their_sums) < SUMS:
                ask = self._ask = (len(self._their_sums), SUMS)
            return [AeProbe.of(self.session_id, below, write_gaps([i for i, _ in frontier]), step=self._step,
                               width=width, ewidth=self._ewidth, lmax=self.lmax, ask=ask)]
        return self._after_descent()

    def _take_sums(self, data: bytes) -> list[tuple[int, int]] | None:
        """The peer's power sums the probe asked for: the differing keys, if they name them all."""
        ask, self._ask = self._ask, None
        if ask is None or len(data) != (ask[1] - ask[0]) * 4:
            raise CorruptRecordError(f"anti-entropy: {len(data)} bytes of power sums, asked for the range {ask}")
        self._their_sums += read_sums(data, "answer sums")
        theirs = self._their_sums
        return decode(self.tree.sketch.sums(0, len(theirs)), theirs)

    def _on_found(self, flat: tuple, ids: list[int]) -> list:
        """The probe's power sums named the differing keys (up to 2) at the peer: it sent its versions
        of their ids (``flat``) and the ``ids`` it holds no key of; ours of those ids are to be pushed."""
        got = self._take_values(flat)
        kids = set(ids) | {key_id(key_hash(k)) for k in got}
        for kid in kids:
            if kid >> ID_BITS:
                raise CorruptRecordError(f"anti-entropy: key id {kid} is not below 2**{ID_BITS}")
            for key, h in self.tree.entries_with_id(kid):
                if key not in got:
                    self._push[key] = None
                    self._set_overlay(key, None)
                elif got[key] != h:
                    self._push[key] = None
        return self._verify()

    def _fetch_found(self, items: list[tuple[int, int]]) -> list:
        """The power sums named every differing key: fetch the keys of the ids the peer holds, and push
        ours in the same message (a wrong decode, probability about 2**-32, is caught by the root
        check when the values arrive, and searched again by a descent)."""
        fetch: list[int] = []
        for kid, v in items:
            mine = self.tree.entries_with_id(kid)
            if len(mine) == 1 and mine[0][1] % P == v:  # the difference is our whole value: the peer lacks it
                self._push[mine[0][0]] = None
                self._set_overlay(mine[0][0], None)
            else:
                fetch.append(kid)
                for key, _ in mine:
                    self._push[key] = None
        if not fetch:
            return self._verify()
        self._fetch_ids = fetch
        self._phase = "fetching"
        self.rounds += 1
        return [AeFetch.of(self.session_id, ids=b"".join(k.to_bytes(4, "big") for k in fetch),
                           pairs=self._pairs_to_push())]

    def _compare_listing(self, level: int, index: int, prefixes: list[int], ewidth: int) -> None:
        pshift = 64 - 8 * ewidth
        left = Counter(prefixes)
        for key, h, mine in self._virtual_entries(level, index):
            p = h >> pshift
            if left.get(p):
                left[p] -= 1
            elif mine:  # not the peer's version this session received already
                self._push[key] = None
                self._set_overlay(key, None)
        wanted = [p << pshift for p, c in left.items() for _ in range(c)]
        if wanted:
            self._want[node_offset(self.tree.fanout, level) + index] = wanted
            self._want_width = min(self._want_width, ewidth)

    def _after_descent(self) -> list:
        if not self._want:
            return self._verify()
        self.rounds += 1
        gids = sorted(self._want)
        ew = self._want_width
        shift = 64 - 8 * ew
        nodes, counts = write_gaps(gids), write_varints(len(self._want[g]) for g in gids)
        want = b"".join((p >> shift).to_bytes(ew, "big") for g in gids for p in self._want[g])
        pairs: tuple = ()
        if ew == 8 and self._their_root == (self._virtual_root() + sum(
                p for wanted in self._want.values() for p in wanted)) & _MASK64:
            # Every wanted entry's full hash is known and the sums check out: the pass is verified
            # before the values arrive, so the pushes ride with this fetch and its answer ends it.
            self.verified = True
            self._phase = "final"
            pairs = self._pairs_to_push()
        else:
            self._phase = "fetching"
        return [AeFetch.of(self.session_id, nodes=nodes, counts=counts, want=want, ewidth=ew, pairs=pairs)]

    def _verify(self) -> list:
        if self._their_root is not None and self._virtual_root() == self._their_root:
            self.verified = True
        elif self.passes < self.passes_max:
            return [self._begin_pass()]
        return self._push_values()

    def _push_values(self) -> list:
        if not self._push.keys() - self._pushed_keys or self.lookup is None:
            self._finish()
            return []
        pairs = self._pairs_to_push()
        self._phase = "pushing"
        self.rounds += 1
        return [AeFetch.of(self.session_id, pairs=pairs)]

    def _pairs_to_push(self) -> tuple:
        """Flat key, value, ... of ``to_push`` from ``lookup`` (none without one)."""
        keys = [k for k in self._push if k not in self._pushed_keys]
        if not keys or self.lookup is None:
            return ()
        self._pushed_keys.update(keys)
        values = list(self.lookup(keys))
        if len(values) != len(keys):
            raise InvalidArgumentError(f"lookup returned {len(values)} values for {len(keys)} keys")
        pairs: list[bytes] = []
        for key, value in zip(keys, values):
            if value is not None:
                if not isinstance(value, bytes):
                    raise InvalidArgumentError(f"lookup returns bytes or None, got {type(value).__name__}")
                pairs += (key, value)
        self.pushed += len(pairs) // 2
        return tuple(pairs)

    def _finish(self) -> None:
        self._phase, self.done = "done", True

    # --- the corrected view: this tree as the peer's should be, given what was found ---------

    def _virtual_root(self) -> int:
        return (self.tree.root_int() + self._root_delta) & _MASK64

    def _set_overlay(self, key: bytes, h: int | None) -> None:
        before = self._overlay[key] if key in self._overlay else self.tree.entry(key)
        if before == h:
            return
        self._overlay[key] = h
        self._root_delta += (h or 0) - (before or 0)
        if self._adjust_built:
            self._adjust_key(key, (h or 0) - (before or 0))

    def _adjust_key(self, key: bytes, delta: int) -> None:
        tree = self.tree
        leaf = index = tree.leaf_of(key)
        self._overlay_leaves.setdefault(leaf, set()).add(key)
        for level in range(tree.depth, -1, -1):
            adjust = self._adjust[level]
            adjust[index] = (adjust.get(index, 0) + delta) & _MASK64
            index //= tree.fanout

    def _build_adjust(self) -> None:
        """Every node's delta, from the overlay, before a second pass compares nodes with it."""
        for key, h in self._overlay.items():
            self._adjust_key(key, (h or 0) - (self.tree.entry(key) or 0))
        self._adjust_built = True

    def _virtual_entries(self, level: int, index: int) -> list[tuple[bytes, int, bool]]:
        """``(key, entry hash, is this replica's own)`` under a node, the found differences applied."""
        tree = self.tree
        if not self._adjust_built:  # first pass: no key under this node has been judged yet
            return [(k, h, True) for k, h in tree.entries_under(level, index)]
        entries = {k: (h, True) for k, h in tree.entries_under(level, index)}
        span = tree.fanout ** (tree.depth - level)
        first = index * span
        if span < len(self._overlay_leaves):
            leaves = [leaf for leaf in range(first, first + span) if leaf in self._overlay_leaves]
        else:
            leaves = [leaf for leaf in self._overlay_leaves if first <= leaf < first + span]
        for leaf in leaves:
            for key in self._overlay_leaves[leaf]:
                h = self._overlay[key]
                entries.pop(key, None)
                if h is not None:
                    entries[key] = (h, False)
        return [(k, h, mine) for k, (h, mine) in entries.items()]
