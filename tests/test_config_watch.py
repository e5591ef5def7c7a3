"""Watches of one client (in one process): one long poll feeds many watches, each at its own
revision; a failing callback stops only its own watch; a watch that falls behind a compaction stops
with CompactedError naming the oldest revision kept; a new client resumes from ``revision + 1``."""

from __future__ import annotations

import threading

import pytest

from ddia_ray.config import LocalConfig
from ddia_ray.config.client import ConfigClient
from ddia_ray.config.local import LocalBackend
from ddia_ray.errors import CompactedError, InvalidArgumentError


def test_many_watches_share_one_poll_and_each_keeps_its_own_revision():
    c = LocalConfig(watch_wait_s=0.5)
    try:
        for i in range(5):
            c.put(f"k{i % 3}", i)
        seen: dict[str, list] = {}
        watches = []
        for key in ("k0", "k1", "k2"):
            seen[key] = []
            watches.append(c.watch(key, seen[key].extend, start_revision=1))
        late: list = []
        watches.append(c.watch("k", late.extend, prefix=True, start_revision=4))  # starts behind, catches up
        for i in range(5, 30):
            c.put(f"k{i % 3}", i)
        for w in watches:
            assert w.wait_revision(c.revision(), 10.0)
        for key, events in seen.items():
            assert [e.kv.value for e in events] == [i for i in range(30) if f"k{i % 3}" == key]
        assert [e.revision for e in late] == list(range(4, 31))
        assert c._hub.rounds < 40  # one poll served every watch: not one per watch per change
    finally:
        c.close()


def test_a_failing_callback_stops_only_its_own_watch():
    c = LocalConfig(watch_wait_s=0.5)
    try:
        errors: list = []

        def broken(events):
            raise ValueError("bad handler")

        bad = c.watch("k", broken, on_error=errors.append)
        good: list = []
        ok = c.watch("k", good.extend)
        c.put("k", 1)
        c.put("k", 2)
        assert ok.wait_revision(2, 10.0)
        assert [e.kv.value for e in good] == [1, 2]
        assert isinstance(bad.error, ValueError) and errors == [bad.error] and bad.cancelled
        assert c.watches() == [ok]
    finally:
        c.close()


def test_a_watch_that_falls_behind_a_compaction_stops_with_compacted_error():
    c = ConfigClient(LocalBackend(), watch_wait_s=0.5, watch_page=1)
    try:
        for i in range(6):
            c.put("k", i)
        inside, release, stopped = threading.Event(), threading.Event(), threading.Event()
        errors: list = []
        got: list = []

        def failed(error):
            errors.append(error)
            stopped.set()

        def slow(events):
            got.extend(events)
            inside.set()
            release.wait(10)

        w = c.watch("k", slow, start_revision=1, on_error=failed)
        assert inside.wait(10)
        c.compact(5)  # while the watch is at revision 1
        release.set()
        assert stopped.wait(10)
        assert len(errors) == 1 and isinstance(errors[0], CompactedError)
        assert (errors[0].requested, errors[0].oldest_kept) == (2, 5)
        assert w.error is errors[0] and [e.revision for e in got] == [1]
    finally:
        c.close()


def test_a_new_client_resumes_after_the_last_revision_without_gap_or_repeat():
    backend = LocalBackend()
    first = ConfigClient(backend, watch_wait_s=0.5)
    a: list = []
    w = first.watch("app/", a.extend, prefix=True, start_revision=1)
    for i in range(10):
        first.put(f"app/{i % 2}", i)
    assert w.wait_revision(10, 10.0)
    resume = w.revision + 1
    first._hub.close()  # the watching process goes away (the rows stay)
    for i in range(10, 20):
        first.put(f"app/{i % 2}", i)
    second = ConfigClient(backend, watch_wait_s=0.5)
    try:
        b: list = []
        w2 = second.watch("app/", b.extend, prefix=True, start_revision=resume)
        assert w2.wait_revision(20, 10.0)
        assert [e.revision for e in a + b] == list(range(1, 21))
        assert [e.kv.value for e in a + b] == list(range(20))
    finally:
        second.close()


@pytest.mark.parametrize("start", [0, -1, "1"])
def test_bad_start_revisions_are_refused(start):
    from ddia_ray.errors import InvalidArgumentError

    c = LocalConfig()
    try:
        with pytest.raises(InvalidArgumentError):
            c.watch("k", print, start_revision=start)
    finally:
        c.close()


def test_puts_in_flight_together_each_get_their_own_revision_and_every_watcher_sees_each_once():
    c = LocalConfig()
    try:
        seen: list = []
        w = c.watch("k/", seen.extend, prefix=True)
        futures = [c.put_nowait(f"k/{i % 3}", i) for i in range(30)]
        revisions = [c.wait(f) for f in futures]
        assert sorted(revisions) == list(range(1, 31))  # one revision per put, none shared, none skipped
        assert w.wait_revision(30)
        assert sorted(e.kv.mod_revision for e in seen) == list(range(1, 31))
        assert {c.get(f"k/{j}").value for j in range(3)} == {27, 28, 29}  # the last put to each key
        with pytest.raises(InvalidArgumentError, match="key"):
            c.put_nowait("", 1)  # refused before it is sent
    finally:
        c.close()
