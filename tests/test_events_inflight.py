"""A consumer group's events in flight as runs (ddia_ray.events.inflight): a model-based
hypothesis test against a dict with an entry per position, and what a damaged row or a bad
settling call gets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ddia_ray.errors import CorruptRecordError, InvalidArgumentError
from ddia_ray.events import keys
from ddia_ray.events.consumer_groups import MAX_SETTLE, Group, runs_of, spans_of
from ddia_ray.events.inflight import InFlight

_HELD = st.tuples(st.sampled_from(["c1", "c2"]), st.integers(1, 2), st.sampled_from([100, 200]))


class InFlightMachine(RuleBasedStateMachine):
    """Runs against a dict position -> (consumer, attempts, deadline)."""

    def __init__(self):
        super().__init__()
        self.runs = InFlight()
        self.model: dict[int, tuple] = {}

    @rule(first=st.integers(0, 80), n=st.integers(1, 12), held=_HELD)
    def add(self, first, n, held):
        last = first + n - 1
        if any(p in self.model for p in range(first, last + 1)):
            with pytest.raises(ValueError):
                self.runs.add(first, last, *held)
            return
        self.runs.add(first, last, *held)
        self.model.update(dict.fromkeys(range(first, last + 1), held))

    @rule(position=st.integers(0, 95))
    def pop(self, position):
        if position in self.model:
            assert self.runs.pop(position) == self.model.pop(position)
        else:
            with pytest.raises(KeyError):
                self.runs.pop(position)

    @rule(first=st.integers(0, 95), n=st.integers(1, 12))
    def take_span(self, first, n):
        last = first + n - 1
        span = range(first, last + 1)
        # One run holds all of it exactly when every position is in flight with one value and the
        # runs, maximal, do not break inside it.
        values = {self.model.get(p) for p in span}
        got = self.runs.take_span(first, last)
        if got is None:
            assert None in values or len(values) > 1 or any(self._break_inside(first, last))
        else:
            assert len(values) == 1 and got == values.pop()[1]
            for p in span:
                del self.model[p]

    def _break_inside(self, first, last):
        return (r[1] < last for r in self.runs.runs() if r[0] <= first <= r[1])

    @rule(now=st.sampled_from([50, 100, 150, 200]))
    def take_expired(self, now):
        gone = {p for first, last, *_ in self.runs.take_expired(now) for p in range(first, last + 1)}
        assert gone == {p for p, (_, _, d) in self.model.items() if d <= now}
        for p in gone:
            del self.model[p]

    @invariant()
    def same_as_the_model(self):
        assert dict(self.runs.items()) == self.model and len(self.runs) == len(self.model)
        assert self.runs.lowest() == (min(self.model) if self.model else None)
        runs = self.runs.runs()
        assert all(a[1] < b[0] for a, b in zip(runs, runs[1:])), "runs overlap or are out of order"
        for p in (0, 7, 40, 93):
            assert (p in self.runs) == (p in self.model) and self.runs.get(p) == self.model.get(p)


TestInFlight = InFlightMachine.TestCase
TestInFlight.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


_SETTINGS = (None, "", 1000, 5, 30000)


@pytest.mark.parametrize("runs, why", [
    (((5, 3, "c", 1, 9),), "first <= last"),
    (((0, 9, "c", 1, 9), (5, 12, "c", 1, 9)), "overlap"),
    ((("0", 9, "c", 1, 9),), "first <= last"),
    (((-1, 2, "c", 1, 9),), "first <= last"),
])
def test_a_group_row_whose_runs_in_flight_are_damaged_is_refused(runs, why):
    row = keys.pack(_SETTINGS, 20, (), (), {}, 0, runs)
    with pytest.raises(CorruptRecordError, match=why):
        Group(row)


@pytest.mark.parametrize("fields", [
    (_SETTINGS, 20, (), 5, {}, 0, ()),                         # a retry queue that is an int
    (_SETTINGS, 20, (), ((1, "x"),), {}, 0, ()),               # attempts that are not an int
    (_SETTINGS, 20, (), ((("a",), 1),), {}, 0, ()),            # a position that is not an int
    (_SETTINGS, 20, (), (), {"acked": "many"}, 0, ()),         # a counter that is not an int
    (_SETTINGS, 20, (), (), 3, 0, ()),                         # counters that are not a map
    (_SETTINGS, "20", (), (), {}, 0, ()),                      # a cursor that is not an int
    ((None, "", 1000, 5), 20, (), (), {}, 0, ()),              # settings one short
    (("other", "", 1000, 5, 30000), 20, (), (), {}, 0, ()),    # a filter kind no group has
    (_SETTINGS, 20, 9, (), {}, 0, ()),                         # events in flight that are an int
])
def test_a_group_row_with_a_field_of_another_shape_is_refused(fields):
    # Found by fuzzing (group_row): a retry queue that was an int raised TypeError from dict(), and
    # one holding a tuple for a position raised TypeError from the checkpoint's min().
    with pytest.raises(CorruptRecordError):
        Group(keys.pack(*fields)).checkpoint


def test_a_group_row_with_an_event_both_in_flight_and_waiting_is_refused():
    with pytest.raises(CorruptRecordError, match="both in flight and in its retry queue"):
        Group(keys.pack(_SETTINGS, 20, (), ((3, 1),), {}, 0, ((0, 9, "c", 1, 9),)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=40))
def test_a_consumers_runs_name_exactly_its_positions(positions):
    runs = runs_of(positions)
    named = [p for first, last in spans_of(runs) for p in range(first, last + 1)]
    assert named == sorted(set(positions))
    assert all(b[0] > a[1] + 1 for a, b in zip(spans_of(runs), spans_of(runs)[1:])), "runs not maximal"


def test_settling_calls_name_positions_or_runs_and_are_bounded():
    assert spans_of((3, (5, 9), 12)) == [(3, 3), (5, 9), (12, 12)]
    assert runs_of([9, 3, 4, 5, 7, 8]) == ((3, 5), (7, 9)) and runs_of([4]) == (4,) and runs_of([]) == ()
    assert runs_of([1.0, 2]) == (1.0, 2)  # not ints: sent as they are, for the store to refuse
    for bad in ([1, 2], (-1,), ((5, 3),), ((1, 2, 3),), ((1.0, 2),), ("7",), ((0, MAX_SETTLE),)):
        with pytest.raises(InvalidArgumentError):
            spans_of(bad)

