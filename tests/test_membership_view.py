"""Membership view: status machine, events in order, recovery, listeners, snapshots."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError, ListenerError, UnknownNodeError
from ddia_ray.membership import (
    TRANSITIONS,
    MemberEvent,
    MembershipView,
    MemberState,
    MemberStatus,
    Observation,
)

H, S, U = MemberStatus.HEALTHY, MemberStatus.SUSPECT, MemberStatus.UNREACHABLE


def warmed_view(nodes=("a",), beats: int = 10, **kw) -> MembershipView:
    """A view whose nodes sent a heartbeat every second from t=0 to t=beats-1."""
    view = MembershipView(**kw)
    for node in nodes:
        view.add(node, 0.0)
    for t in range(1, beats):
        for node in nodes:
            view.heartbeat(node, float(t))
    return view


def run_ticks(view: MembershipView, start_s: float, stop_s: float, step_s: float = 0.05) -> list[MemberEvent]:
    events: list[MemberEvent] = []
    steps = int(round((stop_s - start_s) / step_s))
    for i in range(steps + 1):
        events.extend(view.tick(start_s + i * step_s))
    return events


def test_transition_table_is_complete_and_sane():
    assert set(TRANSITIONS) == {(s, o) for s in MemberStatus for o in Observation}
    assert all(TRANSITIONS[(s, Observation.HEARTBEAT)] is H for s in MemberStatus)
    assert all(TRANSITIONS[(s, Observation.PHI_HIGH)] is U for s in MemberStatus)
    assert TRANSITIONS[(H, Observation.PHI_SUSPECT)] is S and TRANSITIONS[(S, Observation.PHI_LOW)] is H
    assert TRANSITIONS[(H, Observation.PHI_LOW)] is H and TRANSITIONS[(S, Observation.PHI_SUSPECT)] is S
    # UNREACHABLE is only left on a heartbeat.
    assert {TRANSITIONS[(U, o)] for o in Observation if o is not Observation.HEARTBEAT} == {U}
    with pytest.raises(TypeError):
        TRANSITIONS[(H, Observation.PHI_LOW)] = S


def test_regular_heartbeats_stay_healthy():
    view = MembershipView()
    view.add("a", 0.0)
    events = []
    for t in range(1, 200):
        events.extend(view.heartbeat("a", float(t)))
        # Ticks in between heartbeats, with some jitter in when they happen.
        events.extend(view.tick(t + 0.3 + (t % 5) * 0.1))
    assert events == []
    assert view.status("a") is H and view.healthy() == ("a",)


def test_silence_goes_suspect_then_unreachable_in_order():
    view = warmed_view()
    events = run_ticks(view, 9.0, 15.0)
    assert [(e.node, e.old, e.new) for e in events] == [("a", H, S), ("a", S, U)]
    suspect, unreachable = events
    assert 5.0 <= suspect.phi < 8.0 and unreachable.phi >= 8.0
    assert 9.0 < suspect.at_s < unreachable.at_s
    assert view.status("a") is U and view.healthy() == ()


def test_heartbeat_brings_an_unreachable_node_back():
    view = warmed_view()
    run_ticks(view, 9.0, 15.0)
    events = view.heartbeat("a", 15.5)
    assert [(e.old, e.new, e.at_s) for e in events] == [(U, H, 15.5)]
    assert events[0].phi < 1e-6
    later = []
    for t in range(16, 40):
        later.extend(view.heartbeat("a", float(t)))
        later.extend(view.tick(t + 0.5))
    assert later == [] and view.status("a") is H


def test_suspect_recovers_on_heartbeat():
    view = warmed_view()
    events = run_ticks(view, 9.0, 10.5)
    assert [(e.old, e.new) for e in events] == [(H, S)]
    assert [(e.old, e.new) for e in view.heartbeat("a", 10.55)] == [(S, H)]


def test_sparse_ticks_may_skip_suspect():
    view = warmed_view()
    (event,) = view.tick(30.0)
    assert (event.old, event.new) == (H, U)


def test_unreachable_is_sticky_without_heartbeat():
    view = warmed_view()
    view.tick(30.0)
    assert view.tick(30.0) == () and view.tick(1e6) == ()
    assert view.status("a") is U


def test_events_of_one_tick_are_ordered_by_node():
    view = warmed_view(nodes=("c", "a", "b"))
    events = view.tick(30.0)
    assert [e.node for e in events] == ["a", "b", "c"]
    assert view.nodes() == ("a", "b", "c") and len(view) == 3 and "b" in view


def test_only_the_silent_node_is_suspected():
    view = warmed_view(nodes=("a", "b"))
    events = []
    for t in range(10, 20):
        events.extend(view.heartbeat("a", float(t)))
        events.extend(view.tick(t + 0.5))
    assert {e.node for e in events} == {"b"}
    assert view.healthy() == ("a",) and view.status("b") is U


def test_listeners_see_each_transition_exactly_once():
    view = warmed_view(nodes=("a", "b"))
    first, second = [], []
    view.subscribe(first.append)
    unsubscribe = view.subscribe(second.append)
    returned = run_ticks(view, 9.0, 15.0)
    returned += view.heartbeat("a", 15.5)
    assert len(returned) == 5  # a and b: H->S, S->U; then a: U->H
    assert first == returned and second == returned
    unsubscribe()
    unsubscribe()  # idempotent
    returned2 = view.heartbeat("b", 16.0)
    assert len(returned2) == 1
    assert first == returned + list(returned2) and second == returned


def test_same_callback_subscribed_twice_is_called_twice():
    view = warmed_view()
    seen = []
    off = view.subscribe(seen.append)
    view.subscribe(seen.append)
    off()
    view.tick(30.0)
    assert len(seen) == 1


def test_failing_listener_does_not_break_view_or_other_listeners():
    view = warmed_view(nodes=("a", "b"))
    seen = []

    def boom(event):
        raise RuntimeError(f"listener bug on {event.node}")

    view.subscribe(boom)
    view.subscribe(seen.append)
    with pytest.raises(ListenerError) as info:
        view.tick(30.0)
    err = info.value
    assert [e.node for e in err.events] == ["a", "b"] and seen == list(err.events)
    assert [str(e) for e in err.errors] == ["listener bug on a", "listener bug on b"]
    assert err.__cause__ is err.errors[0]
    assert view.status("a") is U and view.status("b") is U  # state changed despite the failure
    assert view.tick(31.0) == ()  # and the view keeps working
    copy = pickle.loads(pickle.dumps(err))  # survives crossing a Ray boundary
    assert copy.events == err.events and str(copy) == str(err)


def test_snapshot_is_an_immutable_copy():
    view = warmed_view(nodes=("a", "b"))
    view.tick(9.5)
    snap = view.snapshot()
    assert set(snap) == {"a", "b"}
    assert snap["a"] == MemberState(H, view.phi("a", 9.5))
    status, phi = snap["b"]
    assert status is H and 0.0 <= phi < 5.0
    with pytest.raises(TypeError):
        snap["a"] = MemberState(U, 99.0)
    view.tick(30.0)
    assert snap["a"].status is H and view.snapshot()["a"].status is U


def test_add_and_remove():
    view = MembershipView()
    view.add("a", 0.0)
    with pytest.raises(ConfigError, match="already a member"):
        view.add("a", 1.0)
    view.remove("a")
    assert "a" not in view and view.snapshot() == {}
    view.add("a", 5.0)  # re-adding starts afresh
    assert view.status("a") is H


@pytest.mark.parametrize("call", ["status", "remove", "heartbeat", "phi"])
def test_unknown_node(call):
    view = warmed_view(nodes=("a",))
    args = {"status": (), "remove": (), "heartbeat": (3.0,), "phi": (3.0,)}[call]
    with pytest.raises(UnknownNodeError, match="'zz'") as info:
        getattr(view, call)("zz", *args)
    assert info.value.node == "zz" and isinstance(info.value, KeyError)


@settings(max_examples=100)
@given(
    st.text("abc", min_size=1, max_size=3),
    st.sampled_from(list(MemberStatus)),
    st.sampled_from(list(MemberStatus)),
    st.one_of(st.floats(0.0, 1e6), st.just(math.inf)),
    st.floats(-1e6, 1e6),
)
def test_member_event_codec_round_trip(node, old, new, phi, at_s):
    event = MemberEvent(node, old, new, phi, at_s)
    back = decode(encode(event), expect=MemberEvent)
    assert back == event
    assert back.old is old and back.new is new


def test_member_event_accepts_status_strings():
    assert MemberEvent("a", "healthy", "suspect", 5, 1.0).new is S


@pytest.mark.parametrize(
    "args, error",
    [
        (("a", "healthy", "dead", 1.0, 0.0), ConfigError),
        (("a", 1, "healthy", 1.0, 0.0), InvalidArgumentError),
        (("a", H, S, -0.5, 0.0), ConfigError),
        (("a", H, S, math.nan, 0.0), ConfigError),
        (("a", H, S, "1", 0.0), InvalidArgumentError),
        (("a", H, S, 1.0, math.inf), ConfigError),
        ((7, H, S, 1.0, 0.0), InvalidArgumentError),
    ],
)
def test_member_event_validation(args, error):
    with pytest.raises(error):
        MemberEvent(*args)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"suspect_threshold": 8.0, "threshold": 8.0}, ConfigError),
        ({"suspect_threshold": 9.0}, ConfigError),
        ({"suspect_threshold": 0.0}, ConfigError),
        ({"threshold": -1.0}, ConfigError),
        ({"history_size": 0}, ConfigError),
        ({"min_std_deviation_s": -1.0}, ConfigError),
        ({"threshold": None}, InvalidArgumentError),
    ],
)
def test_bad_view_parameters(kwargs, error):
    with pytest.raises(error):
        MembershipView(**kwargs)


def test_bad_view_arguments():
    view = MembershipView()
    with pytest.raises(InvalidArgumentError):
        view.add(3, 0.0)
    with pytest.raises(ConfigError):
        view.add("", 0.0)
    with pytest.raises(InvalidArgumentError):
        view.add("a", "now")
    with pytest.raises(InvalidArgumentError):
        view.subscribe("not callable")
    with pytest.raises(InvalidArgumentError):
        view.tick(None)
