"""Direct peer links (runtime.links): framing, the token, bounds, failures, and the fallback to Ray."""

from __future__ import annotations

import asyncio
import random

import pytest

from ddia_ray.errors import CallTimeoutError
from ddia_ray.runtime import links as L
from ddia_ray.runtime.links import MAGIC, LinkServer, Links, encode_frame, endpoint_record


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _until(cond, what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class _Peer:
    """A listening shell stand-in: records what its link server delivers."""

    def __init__(self, fail_on: bytes | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.fail_on = fail_on
        self.server = LinkServer(self.deliver)

    async def deliver(self, src: str, data: bytes) -> None:
        if data == self.fail_on:
            raise ValueError("undecodable packet")
        self.got.append((src, data))

    def endpoint(self) -> dict:
        return endpoint_record(self.server, "ray-node-1", "127.0.0.1")


def test_packets_arrive_in_order_with_their_source_and_the_link_is_reused():
    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")
        asked = []

        async def endpoint(dst):
            asked.append(dst)
            return peer.endpoint()

        links = Links("a", "ray-node-1", endpoint)
        assert links.send("b", b"first") is False  # no link yet: the caller sends it through Ray
        await _until(lambda: links.up() == ["b"], "the link to open")
        for i in range(200):
            assert links.send("b", b"packet %d" % i) is True
        await _until(lambda: len(peer.got) == 200, "200 packets")
        assert peer.got == [("a", b"packet %d" % i) for i in range(200)]
        assert asked == ["b"]  # one endpoint lookup: the connection stays open
        assert links.counters["links_opened"] == 1 and peer.server.counters["accepted_links"] == 1
        await links.close()
        await peer.server.close()
    _run(main())


def test_a_wrong_token_is_refused_and_nothing_is_delivered():
    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")
        port = peer.server.ports["127.0.0.1"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(MAGIC + bytes(32) + encode_frame(b"x", b"forged"))
        await writer.drain()
        assert await reader.read() == b""  # the listener closed the connection
        assert peer.got == [] and peer.server.counters["refused_links"] == 1
        writer.close()
        await peer.server.close()
    _run(main())


@pytest.mark.parametrize("frame", [
    L._HEADER.pack(L.MAX_FRAME_BYTES + 1, 1) + b"x",  # claims more than the bound
    L._HEADER.pack(3, 2) + b"\xff\xfe" + b"abc",  # a source id that is not UTF-8
])
def test_a_bad_frame_ends_the_connection_without_a_delivery(frame):
    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", peer.server.ports["127.0.0.1"])
        writer.write(MAGIC + peer.server.token + encode_frame(b"a", b"good") + frame + encode_frame(b"a", b"after"))
        await writer.drain()
        assert await reader.read() == b""
        assert peer.got == [("a", b"good")]
        c = peer.server.counters
        assert c["oversized_frames"] + c["bad_frames"] == 1
        writer.close()
        await peer.server.close()
    _run(main())


def test_a_packet_the_receiver_cannot_decode_is_lost_alone():
    async def main():
        peer = _Peer(fail_on=b"poison")
        await peer.server.start("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", peer.server.ports["127.0.0.1"])
        writer.write(MAGIC + peer.server.token + b"".join(encode_frame(b"a", d) for d in (b"1", b"poison", b"2")))
        await writer.drain()
        await _until(lambda: len(peer.got) == 2, "the packets around the bad one")
        assert peer.got == [("a", b"1"), ("a", b"2")] and peer.server.counters["bad_packets"] == 1
        writer.close()
        await peer.server.close()
    _run(main())


def test_random_bytes_after_the_hello_never_escape_as_an_error():
    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")
        rng = random.Random(5)
        for _ in range(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.server.ports["127.0.0.1"])
            writer.write(MAGIC + peer.server.token + rng.randbytes(rng.randrange(1, 400)))
            await writer.drain()
            writer.close()
        await _until(lambda: not peer.server._tasks, "every connection to end")
        assert peer.server.counters["accepted_links"] == 30
        await peer.server.close()
    _run(main())


def test_a_failed_link_falls_back_to_ray_and_is_retried_later(monkeypatch):
    monkeypatch.setattr(L, "FIRST_RETRY_S", 0.2)
    monkeypatch.setattr(L, "RETRY_S", 0.5)

    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")
        calls = []

        async def endpoint(dst):
            calls.append(asyncio.get_running_loop().time())
            if len(calls) <= 3:
                raise ConnectionError("not started yet")
            return peer.endpoint()

        links = Links("a", "ray-node-1", endpoint)
        assert links.send("b", b"1") is False
        await _until(lambda: links.counters["link_failures"] == 1, "the first attempt to fail")
        assert links.send("b", b"2") is False and len(calls) == 1  # within the backoff: no new attempt
        waits = {}
        while not links.up():  # a sender keeps sending (through Ray) while the link is down
            failures = links.counters["link_failures"]
            if failures and failures not in waits:  # the next attempt's time, set as the attempt failed
                waits[failures] = links._links["b"].retry_at - calls[failures - 1]
            assert links.send("b", b"x") is False
            await asyncio.sleep(0.01)
        # The waits after failures double from FIRST_RETRY_S and stop at RETRY_S (0.5, not 0.8).
        assert len(calls) == 4, calls
        assert all(abs(waits[n] - want) < 0.01 for n, want in ((1, 0.2), (2, 0.4), (3, 0.5))), waits
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.5, gaps
        assert links.send("b", b"4") is True
        await _until(lambda: peer.got == [("a", b"4")], "the packet on the link")
        await links.close()
        await peer.server.close()
    _run(main())


def test_a_broken_link_is_noticed_and_reopened_to_the_new_listener():
    async def main():
        old = _Peer()
        await old.server.start("127.0.0.1")
        current = {"peer": old}

        async def endpoint(dst):
            return current["peer"].endpoint()

        links = Links("a", "ray-node-1", endpoint)
        links.send("b", b"x")
        await _until(lambda: links.up() == ["b"], "the first link")
        await old.server.close()  # the peer died; a new one listens elsewhere
        new = _Peer()
        await new.server.start("127.0.0.1")
        current["peer"] = new
        await _until(lambda: links.up() == [], "the broken link to be noticed")
        assert links.send("b", b"probe") is False  # no link: Ray carries it, and a new one opens
        await _until(lambda: links.up() == ["b"], "a new link")
        assert links.send("b", b"y") is True
        await _until(lambda: ("a", b"y") in new.got, "the packet at the new listener")
        assert links.counters["links_opened"] == 2
        await links.close()
        await new.server.close()
    _run(main())


def test_a_packet_past_the_frame_bound_goes_through_ray(monkeypatch):
    monkeypatch.setattr(L, "MAX_FRAME_BYTES", 10)

    async def main():
        peer = _Peer()
        await peer.server.start("127.0.0.1")

        async def endpoint(dst):
            return peer.endpoint()

        links = Links("a", "ray-node-1", endpoint)
        links.send("b", b"x")
        await _until(lambda: links.up() == ["b"], "the link")
        assert links.send("b", b"y" * 11) is False and links.counters["oversized_via_ray"] == 1
        await links.close()
        await peer.server.close()
    _run(main())


def test_closing_ends_a_delivery_that_waits_for_ever():
    async def main():
        stuck = asyncio.Event()

        async def deliver(src, data):
            stuck.set()
            await asyncio.Event().wait()  # a paused shell: this never returns

        server = LinkServer(deliver)
        await server.start("127.0.0.1")
        _, writer = await asyncio.open_connection("127.0.0.1", server.ports["127.0.0.1"])
        writer.write(MAGIC + server.token + encode_frame(b"a", b"x"))
        await asyncio.wait_for(stuck.wait(), 5)
        await asyncio.wait_for(server.close(), 5)  # must not wait for the delivery
        assert not server._tasks
        writer.close()
    _run(main())


def test_raft_members_talk_over_links_and_relink_after_a_restart(ray_session, tmp_path):
    import ray

    from ddia_ray.kv import RaftKV
    from raywait import wait_for

    kv = RaftKV.launch(3, root=f"file://{tmp_path}/raft")
    try:
        def shell(node):
            return ray.get(kv.group.handle(node).status.remote())

        with kv.client(timeout_s=10.0) as c:
            for i in range(50):
                c.put(f"a{i}", b"%d" % i)
            leader = kv.leader()
            follower = next(m for m in kv.members if m != leader)
            wait_for(lambda: sorted(shell(leader)["links"]["up"]) == sorted(m for m in kv.members if m != leader),
                     what="the leader's links to both followers")
            assert shell(leader)["counters"]["sent_by_link"] > 0
            for i in range(20):  # the client's requests moved to its own link to the leader
                c.put(f"c{i}", b"%d" % i)
            assert shell(leader)["links"]["counters"].get("requests_received", 0) > 0
            assert shell(follower)["links"]["counters"]["frames_received"] > 0

            kv.kill(follower)
            kv.restart(follower)
            for i in range(50):
                c.put(f"b{i}", b"%d" % i)
            # The old connection broke with the old process; the leader opened one to the new shell.
            wait_for(lambda: shell(follower)["links"]["counters"].get("frames_received", 0) > 0,
                     what="the restarted follower to receive on a link")
            wait_for(lambda: shell(follower)["core"]["applied"] >= shell(leader)["core"]["commit"],
                     what="the restarted follower to catch up")

            kv.partition([[m] for m in kv.members])  # no two members can talk: no quorum anywhere
            with pytest.raises(CallTimeoutError):
                c.put("cut", b"x", timeout_s=1.0)  # the links are up, but a cut drops their packets too
            assert all(shell(m)["faults"]["cut"] > 0 for m in kv.members)
            kv.heal()
            wait_for(lambda: _put_ok(c), what="a write after healing")
    finally:
        kv.shutdown(destroy_data=True)


def _put_ok(c) -> bool:
    try:
        c.put("healed", b"y", timeout_s=2.0)
        return True
    except Exception:  # noqa: BLE001 - an election may still be under way
        return False


class _Handle:
    """The two things a client link asks of an actor handle: ``endpoint.remote()``."""

    def __init__(self, ep):
        outer = self

        class _Endpoint:
            @staticmethod
            def remote():
                async def answer():
                    return outer.ep
                return answer()

        self.ep = ep
        self.endpoint = _Endpoint()


async def _client_link(answers, name: str = "c"):
    """A listening LinkServer whose requests ``answers(src, data)`` (a coroutine) answers, and a
    client's open link to it: ``(server, handle, links)``."""
    async def deliver(src, data):
        raise AssertionError("no peer packets here")

    server = LinkServer(deliver, answers)
    await server.start("127.0.0.1")
    handle = _Handle(endpoint_record(server, "ray-node-1", "127.0.0.1"))
    links = L.ClientLinks(name, "ray-node-1")
    assert links.request("m1", handle, b"-") is None  # not up yet: the caller makes a Ray call
    await _until(lambda: links.counters["links_opened"] == 1, "the client link")
    return server, handle, links


def test_a_client_link_carries_requests_and_matches_replies_out_of_order():
    async def main():
        async def answers(src, data):
            await asyncio.sleep(0.05 if data == b"slow" else 0)
            return src.encode() + b":" + data

        server, handle, links = await _client_link(answers, "client-7")
        slow = links.request("m1", handle, b"slow")
        fast = links.request("m1", handle, b"fast")
        assert await asyncio.wait_for(fast, 5) == b"client-7:fast"
        assert not slow.done()  # the fast reply overtook it
        assert await asyncio.wait_for(slow, 5) == b"client-7:slow"
        assert server.counters["accepted_client_links"] == 1
        links.close()
        await server.close()
    _run(main())


def test_a_lost_request_is_never_answered_and_a_broken_link_fails_what_waits():
    async def main():
        hold = asyncio.Event()

        async def answers(src, data):
            if data == b"lost":
                return None  # the fault model lost it: no reply, the caller times out
            await hold.wait()
            return b"late"

        server, handle, links = await _client_link(answers)
        lost = links.request("m1", handle, b"lost")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(lost), 0.2)
        waiting = links.request("m1", handle, b"held")
        await server.close()  # the node died with the request unanswered
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 5)
        links.close()
    _run(main())


def test_a_shell_without_a_request_handler_refuses_client_links():
    async def main():
        peer = _Peer()  # peer packets only
        await peer.server.start("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", peer.server.ports["127.0.0.1"])
        writer.write(L.CLIENT_MAGIC + peer.server.token + b"\x01\x00c")
        await writer.drain()
        assert await reader.read() == b""
        assert peer.server.counters["refused_links"] == 1
        writer.close()
        await peer.server.close()
    _run(main())


def test_a_reply_too_large_for_a_link_tells_the_client_to_ask_over_ray(monkeypatch):
    monkeypatch.setattr(L, "MAX_FRAME_BYTES", 64)

    async def main():
        async def answers(src, data):
            return data * 100 if data == b"big" else data

        server, handle, links = await _client_link(answers)
        big = links.request("m1", handle, b"big")
        with pytest.raises(L.ReplyTooLarge):
            await asyncio.wait_for(big, 5)
        assert await asyncio.wait_for(links.request("m1", handle, b"small"), 5) == b"small"  # the link lives on
        assert server.counters["replies_too_large"] == 1
        links.close()
        await server.close()
    _run(main())
