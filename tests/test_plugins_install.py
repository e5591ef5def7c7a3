"""The example plugin package, pip-installed into this environment, found here and in a Ray actor.

The package (tests/plugins/ddia_ray_example_plugin) is installed with pip from its folder, offline
(``--no-index``, its own in-tree build backend), for the module's tests, and uninstalled after them.
A lock file keeps two test runs sharing this environment from installing and uninstalling it under
each other.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.metadata
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile

import pytest

from ddia_ray import codec
from ddia_ray.plugins import PluginStatus, ensure_plugins

PACKAGE = pathlib.Path(__file__).parent / "plugins" / "ddia_ray_example_plugin"
DIST = "ddia-ray-example-plugin"
PROVIDES = {"storage_engine": ("example-memory",), "picker": ("lowest_name",),
            "conflict_resolver": ("longest_value",), "bus_handler": ("example.count",)}


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed_plugin():
    """Install the example plugin (a plain install: a new directory in site-packages, which a running
    worker sees once its import caches are dropped), yield, uninstall."""
    with open(os.path.join(tempfile.gettempdir(), "ddia-ray-example-plugin.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory() as build:
            # Build in a copy: pip builds a local folder in place, and the source tree stays clean.
            result = _pip("install", "--no-deps", "--no-index", "--no-build-isolation", "--force-reinstall",
                          "--no-cache-dir", str(_copy(PACKAGE, pathlib.Path(build))))
        assert result.returncode == 0, result.stdout + result.stderr
        importlib.invalidate_caches()
        try:
            yield importlib.metadata.distribution(DIST)
        finally:
            result = _pip("uninstall", "-y", DIST)
            importlib.invalidate_caches()
            sys.modules.pop("ddia_ray_example_plugin", None)
            assert result.returncode == 0, result.stdout + result.stderr


def _copy(src: pathlib.Path, dst_root: pathlib.Path) -> pathlib.Path:
    import shutil

    dst = dst_root / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    return dst


def test_the_installed_plugin_is_discovered_and_runs(installed_plugin):
    assert installed_plugin.version == "0.3.0"
    entry = [ep for ep in importlib.metadata.entry_points(group="ddia_ray.plugins") if ep.name == "example"]
    assert [ep.value for ep in entry] == ["ddia_ray_example_plugin:ExamplePlugin"]
    # The process's own manager, as an application would use it (and the one a docs snippet of this
    # process may have filled already: a second manager would find the plugin's names taken).
    manager = ensure_plugins(refresh=True)
    try:
        (status,) = [s for s in manager.statuses() if s.name == "example"]
        assert status.state == "loaded" and status.distribution == DIST and status.version == "0.3.0"
        assert status.api_version == "1.0" and status.provides == PROVIDES
        manager.init("example", {"greeting": "hello"})
        manager.start("example")
        assert manager.health("example").healthy is True
        plugin = manager.get_plugin("example")
        assert plugin.config == {"greeting": "hello"} and plugin.steps == ["init", "start"]
        assert _extension_user()() == USED
        manager.stop("example")
        assert plugin.steps == ["init", "start", "stop"]
    finally:
        if "example" in manager.names():
            manager.unregister("example")


def _extension_user():
    """A function that uses the plugin's extensions as ddia-ray looks them up: by name. Made by a
    factory so that Ray ships it to the actor by value (the worker needs no test module)."""

    def use_extensions() -> dict:
        from ddia_ray.balancing.balancer import PICKERS
        from ddia_ray.balancing.core import BalancerCore
        from ddia_ray.events.bus_handlers import named_handler
        from ddia_ray.replication.resolvers import Sibling, resolve
        from ddia_ray.storage.engine import open_engine

        db = open_engine(None, engine="example-memory")
        db.put(b"k", b"v")
        core = BalancerCore(PICKERS["lowest_name"](random.Random(0)))
        for member in ("m3", "m1", "m2"):
            core.add_replica(member)
        return {"engine": db.stats()["engine"], "value": db.get(b"k"), "picked": core.begin(None, now_s=0.0),
                "merged": resolve("longest_value", b"k", [Sibling(b"ab", 2, "n1"), Sibling(b"abc", 1, "n2")]),
                "handled": named_handler("example.count")((1, 2, 3))}

    return use_extensions


#: What the plugin's extensions answer: its engine, its picker (lowest name), its resolver (longest value).
USED = {"engine": "example-memory", "value": b"v", "picked": "m1", "merged": b"abc", "handled": 3}


def test_ddia_ray_plugins_lists_it(installed_plugin):
    out = subprocess.run([sys.executable, "-m", "ddia_ray.cli", "plugins", "--json", "--strict"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["plugins"]}
    example = rows["example"]
    assert example["compatible"] and example["distribution"] == DIST and example["version"] == "0.3.0"
    assert example["api_version"] == "1.0" and example["provides"] == {k: list(v) for k, v in PROVIDES.items()}


def _probe_class():
    """The actor, defined in a function so that Ray ships it by value: the worker needs no test module."""
    import ray

    use_extensions = _extension_user()

    @ray.remote(num_cpus=0)
    class PluginProbe:
        """An actor that loads the installed plugins as any actor would, at its start."""

        def __init__(self):
            from ddia_ray.plugins import ensure_plugins

            self.manager = ensure_plugins(refresh=True)

        def plugins(self) -> tuple[bytes, int]:
            return codec.encode(self.manager.statuses()), os.getpid()

        def use(self) -> dict:
            return use_extensions()

    return PluginProbe


@pytest.mark.ray
def test_a_ray_actor_on_another_worker_finds_it(installed_plugin, ray_session):
    ray = ray_session
    probe = _probe_class().remote()
    try:
        encoded, pid = ray.get(probe.plugins.remote(), timeout=60)
        assert pid != os.getpid()  # another process: the driver's registries are not its registries
        statuses = {s.name: s for s in codec.decode(encoded, tuple)}
        assert all(isinstance(s, PluginStatus) for s in statuses.values())
        assert statuses["example"].state == "loaded" and statuses["example"].provides == PROVIDES
        assert ray.get(probe.use.remote(), timeout=60) == USED
    finally:
        ray.kill(probe)


_SETUP_HOOK_DRIVER = """
import json, sys
import ray
from ddia_ray.plugins import runtime_env
from ddia_ray.runtime import ensure_ray

ensure_ray(runtime_env=runtime_env(), num_cpus=1, include_dashboard=False)

@ray.remote(num_cpus=0)
def probe():
    import os, sys
    from ddia_ray.storage.engine import ENGINES  # no ensure_plugins() here: the setup hook ran it
    return {"pid": os.getpid(), "loaded_by_hook": "ddia_ray.plugins" in sys.modules,
            "engine": "example-memory" in ENGINES}

result = ray.get(probe.remote(), timeout=120)

# The plugin's conflict resolver, used by replicas the driver never told about it: two regions cut
# apart write the same key, and after the heal every replica holds the longest value alone.
from ddia_ray.replication import ReplicatedStore
store = ReplicatedStore.launch(protocol="multi-leader", regions=["eu", "us"], resolution="resolver:longest_value")
try:
    store.partition_regions([["eu"], ["us"]])
    clients = {r: store.client(region=r) for r in ("eu", "us")}
    clients["eu"].put(b"k", b"short")
    clients["us"].put(b"k", b"much longer")
    store.heal()
    store.wait_converged(timeout_s=60)
    result["resolved"] = [[v.decode() for v in c.get(b"k").values] for c in clients.values()]
    result["failures"] = store.stats().get("resolver_failures")
    for c in clients.values():
        c.close()
finally:
    store.shutdown()
print(json.dumps({"driver": __import__("os").getpid(), **result}))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_the_worker_setup_hook_loads_plugins_in_every_worker_and_replicas_resolve_with_them(installed_plugin):
    # Its own Ray (the setup hook is a job's, given to ray.init), in a driver of its own. "local", not
    # unset: with no address, ray.init() would join a cluster another test left named in
    # /tmp/ray/ray_current_cluster (the three-node cluster writes it).
    env = {**os.environ, "RAY_ADDRESS": "local"}
    out = subprocess.run([sys.executable, "-c", _SETUP_HOOK_DRIVER], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pid"] != result["driver"] and result["loaded_by_hook"] and result["engine"]
    assert result["resolved"] == [["much longer"], ["much longer"]] and not result["failures"]


@pytest.mark.ray
def test_a_bus_subscription_names_the_plugins_handler(installed_plugin, ray_session):
    from ddia_ray.events.bus import EventBus
    from ddia_ray.events.domain import UserCreated
    from ddia_ray.plugins import PluginManager

    manager = PluginManager()
    assert any(s.name == "example" and s.state == "loaded" for s in manager.discover())
    bus = EventBus.launch(f"plugin-bus-{os.getpid()}")
    try:
        client = bus.client()
        # By name: the function travels by reference, so the bus's task worker imports the plugin to run it.
        client.subscribe("seed.*", "example.count", name="counted", ray_options={"num_cpus": 0})
        for i in range(3):
            client.publish(UserCreated(f"u{i}@example.com", f"user {i}"))
        client.drain(timeout_s=60)
        stats = client.stats().subscription("counted")
        assert (stats.delivered, stats.failures) == (3, 0)
    finally:
        bus.shutdown()
        for name in manager.names():
            manager.unregister(name)
