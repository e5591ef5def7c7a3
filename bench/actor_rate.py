"""How many messages per second an actor boundary carries on this machine.

Sizes every later design: a blocking call per item, pipelined calls with many
in flight, and batches of messages in one call. Each is measured on a bare
Ray actor (the floor), on a ddia-ray node shell hosting a pure core (codec +
fault model + core), and on a shell hosting a service (a storage node on the
memory engine: fault model, pause gate, a worker-thread hop, the service
method; a batch is one ``get_many`` of absent keys), so the cost of our layer
is visible as a ratio.

Run: ``python bench/actor_rate.py [--calls N] [--batch 10,100,1000]``
"""

from __future__ import annotations

import argparse
import platform
import time

import ray

from ddia_ray.codec import encode
from ddia_ray.demo.replica import Ping
from ddia_ray.runtime import CoreSpec, NodeGroup, ensure_ray
from ddia_ray.storage.node import StorageNode


@ray.remote(num_cpus=0)
class Bare:
    """A no-op actor: the cost of Ray alone."""

    def noop(self, x=None):
        return x

    def batch(self, xs):
        return xs


def _rate(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    ap.add_argument("--batch", default="10,100,1000", help="batch sizes for batched messages")
    args = ap.parse_args(argv)
    n = args.calls
    ensure_ray()
    bare = Bare.remote()
    ray.get(bare.noop.remote())
    group = NodeGroup.launch("bench", {"s": CoreSpec("ddia_ray.demo.replica:ReplicaCore", {})}, tick_s=0.05)
    shell = group.handle("s")
    ping = encode(Ping(1))
    ray.get(shell.request.remote("client", ping))
    node = StorageNode.launch("bench-service", None, engine="memory")
    svc = node.group.handle(node.node)
    ray.get(svc.call.remote("client", "ping", ()))

    rows = []
    b_block = _rate(n, lambda: [ray.get(bare.noop.remote(i)) for i in range(n)])
    s_block = _rate(n, lambda: [ray.get(shell.request.remote("client", ping)) for _ in range(n)])
    v_block = _rate(n, lambda: [ray.get(svc.call.remote("client", "ping", ())) for _ in range(n)])
    rows.append(("blocking call", b_block, s_block, v_block))
    b_pipe = _rate(n, lambda: ray.get([bare.noop.remote(i) for i in range(n)]))
    s_pipe = _rate(n, lambda: ray.get([shell.request.remote("client", ping) for _ in range(n)]))
    v_pipe = _rate(n, lambda: ray.get([svc.call.remote("client", "ping", ()) for _ in range(n)]))
    rows.append(("pipelined calls", b_pipe, s_pipe, v_pipe))
    for size in [int(x) for x in args.batch.split(",")]:
        calls = max(5, n // size)
        payload = encode(tuple(Ping(i) for i in range(size)))
        b = _rate(calls * size, lambda: ray.get([bare.batch.remote(list(range(size))) for _ in range(calls)]))
        s = _rate(calls * size, lambda: ray.get([shell.request_batch.remote("client", payload) for _ in range(calls)]))
        keys = (encode(tuple(b"k%d" % i for i in range(size))),)
        v = _rate(calls * size, lambda: ray.get([svc.call.remote("client", "get_many", keys) for _ in range(calls)]))
        rows.append((f"batched x{size}", b, s, v))
    group.shutdown()
    node.shutdown()

    print(f"machine: {platform.machine()}, {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}, ray {ray.__version__}, cpus {ray.cluster_resources().get('CPU')}")
    print(f"{'pattern':<18}{'bare Ray msg/s':>16}{'node shell msg/s':>18}{'shell/bare':>12}"
          f"{'service msg/s':>15}{'service/bare':>14}")
    for name, b, s, v in rows:
        print(f"{name:<18}{b:>16,.0f}{s:>18,.0f}{s / b:>12.2f}{v:>15,.0f}{v / b:>14.2f}")


if __name__ == "__main__":
    main()
