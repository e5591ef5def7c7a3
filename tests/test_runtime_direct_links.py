"""Direct links (runtime.direct_links): a caller thread's blocking requests to a shell's link server,
and every way they give up (returning None for the routed path) without a wrong answer."""

from __future__ import annotations

import asyncio
import random
import socket
import threading

import pytest

from ddia_ray.runtime import links as L
from ddia_ray.runtime.direct_links import DirectLinks
from ddia_ray.runtime.links import LinkServer, endpoint_record


class _Shell:
    """A LinkServer on loopback, served by an asyncio loop in a thread of its own, whose client
    requests ``answers(src, data)`` (a coroutine) answers."""

    def __init__(self, answers):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def deliver(src, data):
            raise AssertionError("no peer packets here")

        self.server = LinkServer(deliver, answers)
        self.run(self.server.start("127.0.0.1"))

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def endpoint(self) -> dict:
        return endpoint_record(self.server, "ray-node-1", "127.0.0.1")

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Endpoints:
    """The blocking endpoint fetch DirectLinks makes (a Ray call in a client), counted."""

    def __init__(self, shell: _Shell):
        self.shell = shell
        self.calls = 0
        self.fail = False

    def __call__(self, handle, timeout_s):
        self.calls += 1
        if self.fail:
            raise ConnectionError("the actor is gone")
        return self.shell.endpoint()


@pytest.fixture
def echo():
    async def answers(src, data):
        if data == b"lost":
            return None  # the fault model lost it: never answered
        if data.startswith(b"slow"):
            await asyncio.sleep(0.01 * random.random())
        if data == b"big":
            return b"x" * (L.MAX_FRAME_BYTES + 1)
        return src.encode() + b":" + data

    shell = _Shell(answers)
    yield shell
    shell.close()


def test_each_thread_sends_on_its_own_link_and_gets_its_own_replies(echo):
    eps = _Endpoints(echo)
    direct = DirectLinks("client-7", "ray-node-1", eps)
    wrong: list = []

    def worker(t: int) -> None:
        for i in range(50):
            data = b"slow-%d-%d" % (t, i)
            got = direct.request("m1", None, data, 5.0)
            if got != b"client-7:" + data:
                wrong.append((data, got))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert wrong == []
    assert direct.counters["links_opened"] == 6 and direct.counters["requests_sent"] == 300
    assert eps.calls == 1  # the endpoint is fetched once, and shared
    assert echo.server.counters["accepted_client_links"] == 6
    direct.close()
    assert direct.request("m1", None, b"after", 5.0) is None  # closed: the routed path


def test_a_reply_too_large_for_a_link_returns_none_and_the_link_lives_on(echo, monkeypatch):
    monkeypatch.setattr(L, "MAX_FRAME_BYTES", 64)
    direct = DirectLinks("c", "ray-node-1", _Endpoints(echo))
    assert direct.request("m1", None, b"big", 5.0) is None
    assert direct.request("m1", None, b"small", 5.0) == b"c:small"
    assert direct.counters["replies_too_large"] == 1 and direct.counters["links_opened"] == 1
    assert direct.request("m1", None, b"y" * 65, 5.0) is None  # a request past the bound is not sent
    direct.close()


def test_an_unanswered_request_times_out_and_its_late_reply_is_never_taken_for_the_next(echo):
    held = threading.Event()

    async def answers(src, data):
        if data == b"held":
            await asyncio.get_running_loop().run_in_executor(None, held.wait, 5)
            return b"late answer"
        return b"answer to " + data

    shell = _Shell(answers)
    direct = DirectLinks("c", "ray-node-1", _Endpoints(shell))
    assert direct.request("m1", None, b"held", 0.2) is None  # no reply in time: the routed path sends it again
    held.set()
    assert direct.request("m1", None, b"next", 5.0) == b"answer to next"  # on a new connection
    assert direct.counters["requests_lost"] == 1 and direct.counters["links_opened"] == 2
    direct.close()
    shell.close()


def test_a_restarted_shell_is_found_at_its_new_endpoint(echo):
    eps = _Endpoints(echo)
    direct = DirectLinks("c", "ray-node-1", eps)
    assert direct.request("m1", None, b"one", 5.0) == b"c:one"

    async def answers(src, data):
        return b"new:" + data

    restarted = _Shell(answers)
    echo.run(echo.server.close())  # the old actor died: its connections end
    eps.shell = restarted  # the endpoint call now reaches the new actor (a new port, a new token)
    assert direct.request("m1", None, b"two", 5.0) is None  # the broken link: this read goes the routed way
    assert direct.request("m1", None, b"three", 5.0) == b"new:three"
    assert eps.calls == 2
    direct.close()
    restarted.close()


def test_an_unreachable_shell_is_not_tried_again_before_the_retry_interval(echo, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("ddia_ray.runtime.direct_links.time.monotonic", lambda: now[0])
    eps = _Endpoints(echo)
    eps.fail = True
    direct = DirectLinks("c", "ray-node-1", eps)
    assert direct.request("m1", None, b"a", 5.0) is None
    assert direct.request("m1", None, b"b", 5.0) is None
    assert eps.calls == 1  # no endpoint call per read while the shell is down
    eps.fail = False
    now[0] += L.RETRY_S + 0.01
    assert direct.request("m1", None, b"c", 5.0) == b"c:c"
    assert eps.calls == 2 and direct.counters["link_failures"] == 1
    direct.close()


def _raw_shell(reply_for):
    """A listener that takes a client link's hello and one request frame, then writes
    ``reply_for(request id)`` and closes: a misbehaving shell."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    token = b"t" * L.TOKEN_BYTES

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(len(L.CLIENT_MAGIC) + L.TOKEN_BYTES + 3)
                    head = conn.recv(L._REQUEST.size)
                    size, rid = L._REQUEST.unpack(head)
                    conn.recv(size)
                    conn.sendall(reply_for(rid))
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    ep = {"node": "ray-node-1", "ip": "127.0.0.1", "ports": {"127.0.0.1": port}, "token": token}
    return listener, (lambda handle, timeout_s: ep)


@pytest.mark.parametrize("reply", [
    lambda rid: L._REQUEST.pack(3, rid + 1) + b"abc",  # another request's id
    lambda rid: L._REQUEST.pack(0xFFFFFFFE, rid),  # a length past the bound: nothing allocated for it
    lambda rid: L._REQUEST.pack(10, rid) + b"short",  # the connection ends mid-reply
    lambda rid: b"\x01\x02",  # half a header
], ids=["wrong-id", "oversized", "truncated", "half-header"])
def test_a_malformed_reply_returns_none_and_closes_the_link(reply):
    listener, endpoint = _raw_shell(reply)
    direct = DirectLinks("c", "ray-node-1", endpoint)
    assert direct.request("m1", None, b"q", 2.0) is None
    assert direct.counters["requests_lost"] == 1
    direct.close()
    listener.close()


def test_random_reply_bytes_never_escape_as_an_error():
    rng = random.Random(7)
    for _ in range(40):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
        listener, endpoint = _raw_shell(lambda rid, junk=junk: junk)
        direct = DirectLinks("c", "ray-node-1", endpoint)
        got = direct.request("m1", None, b"q", 2.0)
        assert got is None or len(got) <= len(junk)
        direct.close()
        listener.close()


def test_links_stay_within_their_bound_and_ended_threads_give_theirs_back(echo, monkeypatch):
    from ddia_ray.runtime import direct_links

    monkeypatch.setattr(direct_links, "MAX_LINKS", 3)
    direct = DirectLinks("c", "ray-node-1", _Endpoints(echo))
    for i in range(10):  # a thread per request, each ending after it: their links are taken back
        got: list = []
        t = threading.Thread(target=lambda i=i: got.append(direct.request("m1", None, b"t%d" % i, 5.0)))
        t.start()
        t.join(10)
        assert got == [b"c:t%d" % i]
    assert len(direct._open) <= 3 and direct.counters["links_of_ended_threads_closed"] >= 7

    release = threading.Event()
    all_held = threading.Barrier(4)
    held: list = []

    def holder(i):  # alive, each with its link open
        held.append(direct.request("m1", None, b"h%d" % i, 5.0))
        all_held.wait(10)
        release.wait(10)

    holders = [threading.Thread(target=holder, args=(i,)) for i in range(3)]
    for t in holders:
        t.start()
    all_held.wait(10)
    assert sorted(held) == [b"c:h0", b"c:h1", b"c:h2"]
    assert direct.request("m1", None, b"more", 5.0) is None  # the bound is reached: the routed path
    assert direct.counters["links_refused_at_bound"] >= 1
    release.set()
    for t in holders:
        t.join(10)
    assert direct.request("m1", None, b"after", 5.0) == b"c:after"  # their links closed, room again
    direct.close()
