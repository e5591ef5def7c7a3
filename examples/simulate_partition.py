"""Run four replicas in the deterministic simulator, partition them, and watch who hears whom.

No Ray needed: the same cores the demo runs as actors, in virtual time.
Run: ``python examples/simulate_partition.py [seed]``; the same seed prints the same numbers.
"""

from __future__ import annotations

import sys

from ddia_ray.demo.replica import ReplicaCore, Work
from ddia_ray.runtime import SimNetwork

NODES = ("a", "b", "c", "d")


def replica(node_id, *, recovered=(), tick_s=0.01):
    """Factory the simulator calls to build (and, after a crash, rebuild) a node's core."""
    return ReplicaCore(node_id, recovered=recovered, tick_s=tick_s, peers=NODES, heartbeat_every_ticks=1)


def heard(net: SimNetwork) -> dict:
    """Heartbeats delivered per directed link so far."""
    return {f"{s}->{d}": n for (s, d), n in sorted(net.delivered.items())}


def main(seed: int = 0) -> dict:
    """Partition {a, b} from {c, d}, heal, crash and restart a node; return what was observed."""
    net = SimNetwork(seed)
    for n in NODES:
        net.add(n, replica)
    net.link(drop=0.05, delay_s=0.002, jitter_s=0.003)   # a slightly lossy, jittery LAN
    net.run_for(1.0)
    before = heard(net)
    net.partition([["a", "b"], ["c", "d"]])
    net.run_for(1.0)
    during = heard(net)
    net.heal()
    call = net.request("c", Work("hello", rounds=2))
    net.run_until(lambda: call.done, timeout_s=1.0)
    net.crash("c")
    net.restart("c")
    report = {
        "a->c during the partition": during["a->c"] - before["a->c"],
        "a->b during the partition": during["a->b"] - before["a->b"],
        "answer from c": call.result.replica if call.done else None,
        "c served after restart": net.core("c").served,
        "virtual seconds": round(net.now_s, 3),
    }
    for k, v in report.items():
        print(f"{k:>28}: {v}")
    return report


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
