"""Property tests: every clock against true happens-before in simulated executions.

Hypothesis generates a message-passing run among a few processes (local
events, sends, receives of a message sent earlier and not yet delivered). The
test tracks each event's transitive causal past as a bitmask and checks the
clock conditions:

* Lamport: ``a -> b`` implies ``L(a) < L(b)``;
* vector: ``a -> b`` iff ``V(a)`` compares BEFORE ``V(b)``, concurrent otherwise;
* HLC: ``a -> b`` implies ``hlc(a) < hlc(b)``, and ``l - pt`` stays within the
  physical clocks' skew (Kulkarni et al. 2014, Theorem 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from ddia_ray.clocks import HLCTimestamp, HybridClock, LamportClock, LamportTimestamp, Ordering, VectorClock

MAX_SKEW_NS = 50


@dataclass
class _Event:
    process: int
    past: int  # bitmask of the ids of events that happened before this one
    lamport: LamportTimestamp
    vector: VectorClock
    hlc: HLCTimestamp


class _Sim:
    """N processes, each with all three clocks and a skewed fake physical clock."""

    def __init__(self, offsets_ns: list[int]) -> None:
        self.true_ns = 10_000
        self.offsets_ns = offsets_ns
        n = len(offsets_ns)
        names = [f"p{i}" for i in range(n)]
        self.names = names
        self.lamport = [LamportClock(name) for name in names]
        self.vector = [VectorClock() for _ in names]
        self.hlc = [
            HybridClock(name, (lambda i=i: self.physical_ns(i)), max_drift_ns=2 * MAX_SKEW_NS)
            for i, name in enumerate(names)
        ]
        self.last_event: list[int | None] = [None] * n
        self.events: list[_Event] = []
        self.in_flight: list[tuple[int, int]] = []  # (send event id, destination)

    def physical_ns(self, i: int) -> int:
        return self.true_ns + self.offsets_ns[i]

    def _past_of_process(self, p: int) -> int:
        last = self.last_event[p]
        return 0 if last is None else self.events[last].past | (1 << last)

    def _record(self, p: int, past: int, lamport: int, hlc: HLCTimestamp) -> int:
        event_id = len(self.events)
        self.events.append(_Event(p, past, LamportTimestamp(lamport, self.names[p]), self.vector[p], hlc))
        self.last_event[p] = event_id
        # HLC invariant: l never runs further ahead of pt than the clocks' skew.
        skew = max(self.offsets_ns) - min(self.offsets_ns)
        assert hlc.wall_ns - self.physical_ns(p) <= skew
        assert hlc.wall_ns >= self.physical_ns(p)
        return event_id

    def local(self, p: int) -> int:
        self.vector[p] = self.vector[p].increment(self.names[p])
        return self._record(p, self._past_of_process(p), self.lamport[p].tick(), self.hlc[p].now())

    def send(self, p: int, dest: int) -> None:
        self.in_flight.append((self.local(p), dest))

    def receive(self, pick: int) -> None:
        send_id, dest = self.in_flight.pop(pick % len(self.in_flight))
        sent = self.events[send_id]
        past = self._past_of_process(dest) | sent.past | (1 << send_id)
        self.vector[dest] = self.vector[dest].merge(sent.vector).increment(self.names[dest])
        lamport = self.lamport[dest].observe(sent.lamport.time)
        self._record(dest, past, lamport, self.hlc[dest].update(sent.hlc))


_steps = st.lists(
    st.tuples(
        st.sampled_from(["local", "send", "receive"]),
        st.integers(0, 3),  # process (or which in-flight message to deliver)
        st.integers(0, 3),  # destination of a send
        st.sampled_from([0, 0, 1, 7, 40, 200]),  # true time advance, often 0 to exercise the counters
    ),
    min_size=1,
    max_size=60,
)


def _run(n: int, offsets: list[int], steps) -> _Sim:
    sim = _Sim(offsets[:n])
    for kind, p, dest, advance_ns in steps:
        sim.true_ns += advance_ns
        p %= n
        if kind == "receive" and sim.in_flight:
            sim.receive(p)
        elif kind == "send":
            sim.send(p, dest % n)
        else:
            sim.local(p)
    return sim


_offsets = st.lists(st.integers(-MAX_SKEW_NS // 2, MAX_SKEW_NS // 2), min_size=4, max_size=4)


@settings(max_examples=120, deadline=None)
@given(st.integers(2, 4), _offsets, _steps)
def test_clocks_agree_with_happens_before(n, offsets, steps):
    sim = _run(n, offsets, steps)
    events = sim.events
    for b_id, b in enumerate(events):
        for a_id, a in enumerate(events):
            if a_id == b_id:
                assert a.vector.compare(b.vector) is Ordering.EQUAL
                continue
            a_before_b = bool(b.past >> a_id & 1)
            b_before_a = bool(a.past >> b_id & 1)
            if a_before_b:
                assert a.lamport < b.lamport and a.lamport.time < b.lamport.time
                assert a.hlc < b.hlc and (a.hlc.wall_ns, a.hlc.logical) < (b.hlc.wall_ns, b.hlc.logical)
                assert a.vector.compare(b.vector) is Ordering.BEFORE
            elif b_before_a:
                assert a.vector.compare(b.vector) is Ordering.AFTER
            else:
                assert a.vector.concurrent_with(b.vector), (a_id, b_id)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 4), _offsets, _steps)
def test_timestamps_are_unique_and_total(n, offsets, steps):
    sim = _run(n, offsets, steps)
    lamports = [e.lamport for e in sim.events]
    hlcs = [e.hlc for e in sim.events]
    # Tie-breaking by node makes every event's timestamp distinct.
    assert len(set(lamports)) == len(lamports)
    assert len(set(hlcs)) == len(hlcs)
    # Per process, timestamps strictly increase in program order.
    for p in range(n):
        mine = [e for e in sim.events if e.process == p]
        assert all(x.hlc < y.hlc and x.lamport < y.lamport for x, y in zip(mine, mine[1:]))
