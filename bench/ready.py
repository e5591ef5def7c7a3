"""Time to ready: how long each component takes from ``launch`` to serving its first request.

What is measured (wall clock, ``perf_counter``), each ``--repeats`` times, median printed:

* Ray itself: ``ensure_ray()`` starting a local Ray in this process (once: it is cold only once);
* ours, with Ray running: a 3-member RaftKV (``RaftKV.launch(3)``) until a leader acknowledged the
  first ``put``; a storage node (LSM on a temporary directory) until the first ``put_many`` is
  acknowledged; a read-through cache in front of it until the first ``get`` came back; a balancer
  actor over 3 replica shells (replicas launched too) until the first ``call``;
* peers, in the same run, on loopback: a 3-member etcd cluster (``etcd`` from the Debian package
  ``etcd-server``) from spawning the processes until the first ``put`` succeeds through etcd's
  JSON gateway; a 3-member PySyncObj cluster (``bench/raft_peers.py``'s members, one process each)
  from spawning the processes until all three agree on a leader. A missing peer is skipped with a
  message saying how to install it.

Target: a 3-member group ready within 3 s of ``launch`` on this machine (2 cores).
Run: ``python bench/ready.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_S = 3.0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _name(kind: str) -> str:
    return f"ready-{kind}-{uuid.uuid4().hex[:6]}"


# --- ours ------------------------------------------------------------------------------------

def raftkv_ready(root: str) -> float:
    from ddia_ray.kv import RaftKV

    holder = {}

    def go():
        kv = holder["kv"] = RaftKV.launch(3, name=_name("kv"), root=f"file://{root}/{uuid.uuid4().hex}")
        kv.client().put("ready", b"yes")

    try:
        return _timed(go)
    finally:
        if "kv" in holder:
            holder["kv"].shutdown(destroy_data=True)


def storage_ready(root: str) -> tuple[float, float]:
    """(storage node ready, read-through cache in front of it ready)."""
    from ddia_ray.caching import ReadThroughCache
    from ddia_ray.storage.node import StorageNode

    handles = []

    def node():
        n = StorageNode.launch(_name("store"), f"file://{root}/{uuid.uuid4().hex}", engine="lsm")
        handles.append(n)
        n.client().put_many({b"ready": b"yes"})

    def cache():
        c = ReadThroughCache.launch(_name("cache"), handles[0])
        handles.append(c)
        assert c.client().get(b"ready") == b"yes"

    try:
        return _timed(node), _timed(cache)
    finally:
        for h in reversed(handles):
            h.shutdown()


def balancer_ready() -> float:
    from ddia_ray.balancing import BalancerActor
    from ddia_ray.demo.replica import Work
    from ddia_ray.runtime import CoreSpec, NodeGroup

    handles = []

    def go():
        group = NodeGroup.launch(_name("replicas"), {
            n: CoreSpec("ddia_ray.demo.replica:ReplicaCore", {}) for n in ("r0", "r1", "r2")})
        handles.append(group)
        lb = BalancerActor.launch(group, group.node_ids())
        handles.append(lb)
        lb.client().call(Work("ready"))

    try:
        return _timed(go)
    finally:
        for h in reversed(handles):
            h.shutdown()


# --- peers -----------------------------------------------------------------------------------

def etcd_ready(root: str) -> float | None:
    """Spawn a 3-member etcd cluster on loopback; seconds until the first put succeeds."""
    binary = shutil.which("etcd")
    if binary is None:
        print("  etcd: skipped (not installed: apt-get install etcd-server)")
        return None
    from raft_peers import _free_ports

    ports = _free_ports(6)
    names = [f"e{i}" for i in range(3)]
    peers = ",".join(f"{n}=http://127.0.0.1:{ports[3 + i]}" for i, n in enumerate(names))
    procs = []
    token = uuid.uuid4().hex  # one per cluster: members with different tokens never form one
    t0 = time.perf_counter()
    try:
        for i, n in enumerate(names):
            procs.append(subprocess.Popen([
                binary, "--name", n, "--data-dir", os.path.join(root, f"{n}-{uuid.uuid4().hex[:6]}"),
                "--listen-client-urls", f"http://127.0.0.1:{ports[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{ports[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{ports[3 + i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports[3 + i]}",
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", token], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        body = json.dumps({"key": base64.b64encode(b"ready").decode(),
                           "value": base64.b64encode(b"yes").decode()}).encode()
        deadline = t0 + 60
        while time.perf_counter() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/v3/kv/put", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=2) as answer:
                    if "header" in json.loads(answer.read()):
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.01)
        raise RuntimeError("etcd did not accept a put within 60 s")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def pysyncobj_ready(root: str) -> float | None:
    """Spawn a 3-member PySyncObj cluster; seconds until all three agree on a leader."""
    if importlib.util.find_spec("pysyncobj") is None:
        print("  PySyncObj: skipped (pip install -e '.[bench]')")
        return None
    import raft_peers

    ports = raft_peers._free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    members = []
    t0 = time.perf_counter()
    try:
        for i, address in enumerate(addresses):
            member_dir = os.path.join(root, f"pso-{uuid.uuid4().hex[:6]}-{i}")
            os.makedirs(member_dir)
            members.append(raft_peers._Member({
                "index": i, "self": address, "partners": [a for a in addresses if a != address],
                "dir": member_dir, "batch": False, "fsync": False, "payload_bytes": 100, "seed": i}))
        for m in members:
            m.receive(60)
        raft_peers._wait_for_leader(members)
        return time.perf_counter() - t0
    finally:
        for m in members:
            m.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="ddia-ready-")
    from ddia_ray.runtime.connect import ensure_ray

    try:
        ray_s = _timed(ensure_ray)
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # alternate ours and peers so drift hits both alike
            runs.setdefault("raftkv (3 members)", []).append(raftkv_ready(root))
            node_s, cache_s = storage_ready(root)
            runs.setdefault("storage node", []).append(node_s)
            runs.setdefault("read-through cache", []).append(cache_s)
            runs.setdefault("balancer + 3 replicas", []).append(balancer_ready())
            for peer, fn in (("etcd (3 members)", etcd_ready), ("PySyncObj (3 members)", pysyncobj_ready)):
                got = fn(root)
                if got is not None:
                    runs.setdefault(peer, []).append(got)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"Ray start (ensure_ray, local, cold): {ray_s:.2f} s")
    print(f"{'component':<24}{'median s':>10}{'min s':>8}{'max s':>8}   runs")
    med = {}
    for name, xs in runs.items():
        med[name] = statistics.median(xs)
        print(f"{name:<24}{med[name]:>10.2f}{min(xs):>8.2f}{max(xs):>8.2f}   {len(xs)}")
    ours = med["raftkv (3 members)"]
    verdict = "meets" if ours <= TARGET_S else "misses"
    print(f"\n3-member RaftKV ready in {ours:.2f} s ({verdict} the {TARGET_S:.0f} s target; Ray start not included)")
    for peer in ("etcd (3 members)", "PySyncObj (3 members)"):
        if peer in med:
            print(f"  vs {peer}: {med[peer]:.2f} s, ours / peer = {ours / med[peer]:.2f}x")
    return 0 if ours <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
