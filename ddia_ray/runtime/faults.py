"""The fault model every ddia-ray network applies: pure, seeded, shared by simulation and Ray.

Theory of operation
-------------------
A :class:`NetworkConfig` is plain, codec-encodable data: default
:class:`LinkSettings`, per-link overrides, partitions (named groups), one-way
cuts and paused nodes. A :class:`FaultModel` combines a config with a seeded
``random.Random`` and answers one question, :meth:`FaultModel.route`: *when a
message leaves ``src`` for ``dst``, after which delays (seconds) do copies of
it arrive?* An empty answer means the message is lost; two delays mean it was
duplicated; a random extra hold-back lets later messages overtake it
(reordering).

The simulated network (:mod:`ddia_ray.runtime.simnet`) calls ``route`` with
virtual time; every Ray node shell calls it on the messages and requests it
receives, so both see exactly the same rules. Because the model is consulted
by the *receiver* for requests and by the receiver again (reversed) for the
reply, a one-way cut ``a -> b`` lets ``b`` hear nothing from ``a`` while ``a``
still hears ``b``, as with an asymmetric firewall rule.

Partition semantics (as in Jepsen): ``partition([["a"], ["b", "c"]])`` cuts
every link between nodes of different groups, both ways. The member ``"*"``
stands for "every node not named in another group", so
``partition([["a"], ["*"]])`` isolates ``a`` from everyone, clients included.
Nodes named in no group and with no ``"*"`` group keep all their links.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Iterable, Mapping

from .._validate import non_negative, probability
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError

__all__ = ["ANY", "LinkSettings", "NetworkConfig", "FaultModel"]

#: Wildcard node name in partitions, cuts and link overrides.
ANY = "*"


@record("net.link", version=1)
class LinkSettings:
    """How one directed link misbehaves. All probabilities are per message.

    ``delay_s`` is the base one-way latency added by the network, ``jitter_s``
    a uniform random extra in ``[0, jitter_s]``; ``reorder`` is the chance a
    message is held back an extra uniform ``[0, reorder_window_s]`` so that
    messages sent after it may arrive first.
    """

    drop: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_window_s: float = 0.05

    def __post_init__(self):
        probability("drop", self.drop)
        probability("duplicate", self.duplicate)
        probability("reorder", self.reorder)
        non_negative("delay_s", self.delay_s)
        non_negative("jitter_s", self.jitter_s)
        non_negative("reorder_window_s", self.reorder_window_s)

    @property
    def perfect(self) -> bool:
        """True when the link neither loses, delays, duplicates nor reorders."""
        return not (self.drop or self.delay_s or self.jitter_s or self.duplicate or self.reorder)


PERFECT = LinkSettings()


def _names(name: str, value) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a sequence of node ids, not a single string {value!r}")
    out = tuple(value)
    for v in out:
        if not isinstance(v, str) or not v:
            raise InvalidArgumentError(f"{name} must hold non-empty str node ids, got {v!r}")
    return out


@record("net.config", version=1)
class NetworkConfig:
    """Everything the nemesis controls, as plain data. ``epoch`` grows with each change.

    ``links`` holds ``(src, dst, LinkSettings)`` overrides (either end may be
    ``"*"``; the most specific match wins), ``groups`` the current partition,
    ``cuts`` one-way ``(src, dst)`` cuts, ``paused`` the paused nodes.
    """

    default: LinkSettings = PERFECT
    links: tuple = ()
    groups: tuple = ()
    cuts: tuple = ()
    paused: tuple = ()
    epoch: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.default, LinkSettings):
            raise InvalidArgumentError("default must be LinkSettings")
        for item in self.links:
            if len(item) != 3 or not isinstance(item[2], LinkSettings):
                raise InvalidArgumentError(f"links entries are (src, dst, LinkSettings), got {item!r}")
            _names("link ends", item[:2])
        seen: set[str] = set()
        for group in self.groups:
            for node in _names("partition group", group):
                if node in seen:
                    raise ConfigError(f"node {node!r} appears in two partition groups")
                seen.add(node)
        for cut in self.cuts:
            if len(_names("cut", cut)) != 2:
                raise InvalidArgumentError(f"a cut is (src, dst), got {cut!r}")
        _names("paused", self.paused)

    # --- pure updates used by the nemesis; each returns a new config ---------

    def with_partition(self, groups: Iterable[Iterable[str]]) -> "NetworkConfig":
        """Replace the partition by ``groups`` (see the module docstring)."""
        if isinstance(groups, str):
            raise InvalidArgumentError("groups must be a sequence of sequences of node ids")
        gs = tuple(_names("partition group", g) for g in groups)
        if len(gs) < 2:
            raise ConfigError("a partition needs at least two groups")
        return replace(self, groups=gs, epoch=self.epoch + 1)

    def with_cut(self, src: str, dst: str) -> "NetworkConfig":
        """Add the one-way cut ``src -> dst``."""
        cut = _names("cut", (src, dst))
        return replace(self, cuts=tuple(sorted(set(self.cuts) | {cut})), epoch=self.epoch + 1)

    def healed(self) -> "NetworkConfig":
        """Remove every partition and cut; link settings and pauses stay."""
        return replace(self, groups=(), cuts=(), epoch=self.epoch + 1)

    def with_link(self, src: str = ANY, dst: str = ANY, **settings) -> "NetworkConfig":
        """Override the settings of ``src -> dst`` (``"*"`` for any); ``"*", "*"`` sets the default."""
        _names("link ends", (src, dst))
        if src == ANY and dst == ANY:
            return replace(self, default=replace(self.default, **settings), epoch=self.epoch + 1)
        base = self._override(src, dst) or self.default
        rest = tuple(item for item in self.links if (item[0], item[1]) != (src, dst))
        return replace(self, links=rest + ((src, dst, replace(base, **settings)),), epoch=self.epoch + 1)

    def with_paused(self, node: str, paused: bool) -> "NetworkConfig":
        """Mark ``node`` paused or running."""
        now = set(self.paused) | {node} if paused else set(self.paused) - {node}
        return replace(self, paused=tuple(sorted(now)), epoch=self.epoch + 1)

    def reset(self) -> "NetworkConfig":
        """A perfect network again (pauses are kept: resume nodes explicitly)."""
        return NetworkConfig(paused=self.paused, epoch=self.epoch + 1)

    # --- queries ----------------------------------------------------------

    def _override(self, src: str, dst: str) -> LinkSettings | None:
        best, score = None, -1
        for s, d, settings in self.links:
            if s in (src, ANY) and d in (dst, ANY):
                specificity = (s == src) * 2 + (d == dst)
                if specificity > score:
                    best, score = settings, specificity
        return best

    def settings(self, src: str, dst: str) -> LinkSettings:
        """The effective settings of the directed link ``src -> dst``."""
        return self._override(src, dst) or self.default

    def _group_of(self, node: str) -> int | None:
        wildcard = None
        for i, group in enumerate(self.groups):
            if node in group:
                return i
            if ANY in group:
                wildcard = i
        return wildcard

    def is_cut(self, src: str, dst: str) -> bool:
        """True when no message from ``src`` can reach ``dst`` (a node always reaches itself)."""
        if src == dst:
            return False
        for s, d in self.cuts:
            if s in (src, ANY) and d in (dst, ANY):
                return True
        if self.groups:
            gs, gd = self._group_of(src), self._group_of(dst)
            if gs is not None and gd is not None and gs != gd:
                return True
        return False

    def is_paused(self, node: str) -> bool:
        """True when ``node`` is paused."""
        return node in self.paused


class FaultModel:
    """Applies a :class:`NetworkConfig` to messages with a seeded random source.

    The only source of randomness is ``rng``; with the same seed, config and
    sequence of calls the answers are the same, which is what makes a
    simulated run replayable from its seed.
    """

    __slots__ = ("config", "rng", "_counters")

    def __init__(self, config: NetworkConfig | None = None, rng: random.Random | None = None):
        self.config = config or NetworkConfig()
        if rng is not None and not isinstance(rng, random.Random):
            raise InvalidArgumentError("rng must be a random.Random")
        self.rng = rng or random.Random(0)
        self._counters: dict[str, int] = {"sent": 0, "dropped": 0, "cut": 0, "duplicated": 0, "reordered": 0}

    def route(self, src: str, dst: str) -> tuple[float, ...]:
        """Delays (s) after which copies of one ``src -> dst`` message arrive; ``()`` if lost."""
        c = self._counters
        c["sent"] += 1
        if self.config.is_cut(src, dst):
            c["cut"] += 1
            return ()
        s = self.config.settings(src, dst)
        if s.perfect:
            return (0.0,)
        rng = self.rng
        if s.drop and rng.random() < s.drop:
            c["dropped"] += 1
            return ()
        copies = 1
        if s.duplicate and rng.random() < s.duplicate:
            copies = 2
            c["duplicated"] += 1
        delays = []
        for _ in range(copies):
            d = s.delay_s + (rng.uniform(0.0, s.jitter_s) if s.jitter_s else 0.0)
            if s.reorder and rng.random() < s.reorder:
                d += rng.uniform(0.0, s.reorder_window_s)
                c["reordered"] += 1
            delays.append(d)
        return tuple(delays)

    def counters(self) -> Mapping[str, int]:
        """How many messages were routed, dropped at random, cut, duplicated, reordered."""
        return dict(self._counters)
