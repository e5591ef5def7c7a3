"""Pure cores import no Ray, read no clock and use no global randomness.

The same core runs in the seeded simulator and on a cluster only if everything that varies
comes in through its inputs: messages, ticks, requests, and a seeded ``random.Random`` it is
given. This test reads the source of every pure-core module and fails on Ray imports, clock
reads (``time.time``, ``time.monotonic``, ``datetime.now``, ...), calls to the ``random``
module's shared generator, ``os.urandom``, ``uuid`` and ``secrets``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ddia_ray"

#: The pure cores, by path under ddia_ray/. A new core is added here when it is written.
PURE_CORES = (
    "consensus/raft/*.py",
    "kv/member.py", "kv/state_machine.py", "kv/commands.py", "kv/simulation.py",
    "balancing/core.py", "balancing/pickers.py", "balancing/round_robin.py", "balancing/weighted.py",
    "balancing/least_connections.py", "balancing/power_of_two.py", "balancing/consistent_hash.py",
    "balancing/outlier.py",
    "runtime/core.py", "runtime/faults.py", "runtime/simnet.py",
    "demo/replica.py",
    "membership/phi.py", "membership/view.py",
    "clocks/lamport.py", "clocks/vector.py",
    "history/model.py", "history/sessions.py",
    "replication/coordination.py", "replication/leader_follower.py", "replication/records.py",
    "replication/state.py", "replication/simulation.py", "replication/raft_replica.py",
    "resilience/windows.py", "resilience/breaker_config.py",
    "caching/base.py", "caching/lru.py", "caching/ttl.py", "caching/tinylfu.py", "caching/sketch.py",
    "storage/lsm/memtable.py", "storage/lsm/merge.py", "storage/lsm/compaction.py", "storage/lsm/bloom.py",
    "storage/lsm/tombstones.py", "storage/lsm/iterator.py", "storage/lsm/point_index.py",
    "partitioning/keyspace.py", "partitioning/partition_map.py", "partitioning/rebalance.py", "runtime/ticks.py",
    "consensus/sessions.py", "replication/ownership.py", "replication/indexing.py",
    "replication/pins.py", "replication/arrow_pages.py", "partitioning/index_functions.py", "replication/failover.py",
    "partitioning/mover.py", "partitioning/simulation.py", "partitioning/sim_actors.py", "partitioning/sim_groups.py",
    "replication/ingest.py", "replication/procedures.py",
    "events/keys.py", "events/procedures.py", "events/consumer_groups.py", "events/simulation.py",
    "events/aggregate.py", "events/domain.py",
    "config/keys.py", "config/mvcc.py", "config/procedures.py", "config/queries.py", "config/maintenance.py",
    "config/lessor.py", "config/simulation.py",
    "replication/resolvers.py", "events/bus_handlers.py", "plugins/api.py", "plugins/hookspecs.py",
    "plugins/kinds.py", "plugins/lifecycle.py",
    "schema/registry_rows.py", "schema/registry_procedures.py", "schema/history.py", "schema/upcasting.py",
    "schema/schemas.py", "schema/compatibility.py", "schema/migrations.py", "schema/record_schema.py",
    "schema/arrow_schema.py", "replication/parking.py",
    "replication/row_format.py", "replication/service_simulation.py",
    "clocks/dotted.py", "crdt/*.py", "replication/versions.py", "replication/versioned_records.py",
    "replication/versioned_replica.py", "replication/multi_leader.py", "replication/leaderless.py",
    "replication/leaderless_sync.py", "replication/merkle.py", "replication/anti_entropy.py",
    "replication/power_sums.py", "replication/anti_entropy_responder.py",
    "replication/tombstones.py",
    "replication/versioned_simulation.py", "history/convergence.py", "history/lost_updates.py",
)
_FORBIDDEN_MODULES = {"ray", "secrets", "uuid"}
_CLOCK_READS = {"time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
                         "process_time", "thread_time", "sleep"},
                "datetime": {"now", "utcnow", "today"}}


def impurities(source: str) -> list[str]:
    """What in ``source`` a pure core must not do, one line each."""
    found = []
    tree = ast.parse(source)
    names = {}  # local name -> module, so that ``import time as t; t.monotonic()`` is seen too
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in _FORBIDDEN_MODULES or top == "time":
                found.append(f"line {node.lineno}: imports from {node.module}")
            elif top == "random" and any(a.name != "Random" for a in node.names):
                found.append(f"line {node.lineno}: imports the shared generator's functions from random")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module, name = names.get(node.value.id, node.value.id), node.attr
            if name in _CLOCK_READS.get(module, ()):
                found.append(f"line {node.lineno}: reads the clock ({module}.{name})")
            elif module == "random" and name != "Random":
                found.append(f"line {node.lineno}: uses the shared generator (random.{name})")
            elif module == "os" and name == "urandom":
                found.append(f"line {node.lineno}: reads os.urandom")
    return found


def _modules() -> list[pathlib.Path]:
    for pattern in PURE_CORES:
        assert list(PACKAGE.glob(pattern)), f"{pattern} names no file under ddia_ray/: update PURE_CORES"
    return sorted({p for pattern in PURE_CORES for p in PACKAGE.glob(pattern)})


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_core_is_pure(path):
    assert impurities(path.read_text()) == []


@pytest.mark.parametrize("source", [
    "import ray", "import ray.util.metrics as m", "from ray import get", "import uuid", "import secrets",
    "from time import monotonic", "import time\nt = time.monotonic()", "import time\ntime.sleep(1)",
    "import datetime\nd = datetime.now()", "import random\nx = random.random()",
    "import random\nrandom.shuffle(xs)", "from random import choice", "import os\nb = os.urandom(8)",
    "def f():\n    import ray\n    return ray", "import time as t\nt.monotonic()",
])
def test_the_check_catches_each_impurity(source):
    assert impurities(source)


def test_the_check_allows_what_cores_do():
    assert impurities("import random\nrng = random.Random(7)\nfrom random import Random\n"
                      "import time as _t\nclass C:\n    def tick(self, now): return now + 1\n"
                      "period = _t.struct_time\n") == []
