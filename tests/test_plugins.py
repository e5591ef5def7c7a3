"""Plugins without Ray: versions, registration, discovery, lifecycle, isolation, extension points."""

from __future__ import annotations

import importlib.metadata
import itertools
import random
import sys
import textwrap
import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ddia_ray import codec
from ddia_ray.balancing.balancer import PICKERS, register_picker, unregister_picker
from ddia_ray.balancing.core import BalancerCore
from ddia_ray.balancing.round_robin import RoundRobinPicker
from ddia_ray.errors import (ConfigError, PluginConflictError, PluginLoadError, PluginStateError, PluginVersionError,
                             UnknownPluginError)
from ddia_ray.events.bus_handlers import BUS_HANDLERS, named_handler
from ddia_ray.plugins import (PLUGIN_API, TRANSITIONS, PluginManager, PluginState, PluginStatus, check_api, hookimpl,
                              incompatibility, next_state, parse_api_version)
from ddia_ray.replication.resolvers import RESOLVERS, Sibling, get_resolver, resolve
from ddia_ray.storage.engine import ENGINES, MemoryEngine, open_engine, register_engine, unregister_engine


def _name(prefix: str) -> str:
    """A name no other test uses: the registries are per process."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def manager():
    """A manager whose plugins are unregistered (their extensions withdrawn) after the test."""
    m = PluginManager(health_timeout_s=5.0, call_timeout_s=5.0)  # generous: only a hang may reach them
    yield m
    for name in m.names():
        m.unregister(name)


class Recorder:
    """A well-behaved plugin that records its lifecycle and provides one engine."""

    api_version = "1.0"

    def __init__(self, engine: str | None = None):
        self.engine = engine
        self.steps: list = []
        self.config = None

    def ddia_ray_init(self, config):
        self.config = config
        self.steps.append("init")

    def ddia_ray_start(self):
        self.steps.append("start")

    def ddia_ray_stop(self):
        self.steps.append("stop")

    def ddia_ray_storage_engines(self):
        return {self.engine: lambda url=None, **o: MemoryEngine()} if self.engine else None


# --- versions -----------------------------------------------------------------------


@pytest.mark.parametrize("declared, parsed", [("1.0", (1, 0)), ("1", (1, 0)), ((1, 0), (1, 0)), (1, (1, 0)),
                                              ([2, 3], (2, 3)), (" 1.2 ", (1, 2))])
def test_api_versions_parse(declared, parsed):
    assert parse_api_version(declared) == parsed


@pytest.mark.parametrize("declared", [None, "", "one", "1.2.3", "1.-1", (1, "x"), 1.0, True, (), "1.0a"])
def test_a_malformed_api_version_is_refused_naming_the_plugin(declared):
    with pytest.raises(PluginVersionError) as e:
        parse_api_version(declared, "p1")
    assert e.value.plugin == "p1" and "p1" in str(e.value) and e.value.offered == "1.0"


@given(st.tuples(st.integers(0, 5), st.integers(0, 5)), st.tuples(st.integers(0, 5), st.integers(0, 5)))
def test_the_version_rule_is_same_major_and_an_older_or_equal_minor(wanted, offered):
    ok = wanted[0] == offered[0] and wanted[1] <= offered[1]
    assert (incompatibility(wanted, offered) is None) == ok
    if ok:
        assert check_api("p", f"{wanted[0]}.{wanted[1]}", offered) == wanted
    else:
        with pytest.raises(PluginVersionError) as e:
            check_api("p", f"{wanted[0]}.{wanted[1]}", offered)
        assert (e.value.wanted, e.value.offered) == (f"{wanted[0]}.{wanted[1]}", f"{offered[0]}.{offered[1]}")
        assert f"{wanted[0]}.{wanted[1]}" in str(e.value) and f"{offered[0]}.{offered[1]}" in str(e.value)


def test_an_incompatible_plugin_is_refused_and_listed(manager):
    class Future:
        api_version = f"{PLUGIN_API[0]}.{PLUGIN_API[1] + 1}"

    class NextMajor:
        api_version = f"{PLUGIN_API[0] + 1}.0"

    class Silent:
        pass

    for cls in (Future, NextMajor, Silent):
        with pytest.raises(PluginVersionError) as e:
            manager.register(cls(), cls.__name__)
        assert repr(cls.__name__) in str(e.value)
    refused = {s.name: s for s in manager.statuses()}
    assert set(refused) == {"Future", "NextMajor", "Silent"} and manager.names() == ()
    assert all(s.state == "refused" and not s.compatible and s.error.kind == "PluginVersionError"
               for s in refused.values())
    assert "upgrade ddia-ray" in refused["Future"].why
    assert refused["NextMajor"].api_version == "2.0" and "no plugin API version" in refused["Silent"].why


def test_a_manager_offering_an_older_minor_refuses_a_newer_plugin():
    m = PluginManager(api=(1, 0))

    class P:
        api_version = "1.1"

    with pytest.raises(PluginVersionError, match=r"1\.1.*1\.0"):
        m.register(P())
    assert PluginManager(api=(1, 1)).register(P()).state == "loaded"


# --- registration (the seed's Register / GetPlugin) ---------------------------------


def test_register_and_get_plugin(manager):
    p = Recorder()
    status = manager.register(p, "rec")
    assert status.state == "loaded" and status.api_version == "1.0" and status.compatible
    assert manager.get_plugin("rec") is p
    assert manager.register(p, "rec") == status  # the same plugin again: nothing changes
    with pytest.raises(PluginConflictError) as e:
        manager.register(Recorder(), "rec")
    assert (e.value.kind, e.value.name) == ("plugin", "rec")
    with pytest.raises(UnknownPluginError, match="nope.*rec"):
        manager.get_plugin("nope")
    assert manager.get_plugin("rec") is p  # the refused one did not replace it


def test_a_module_and_a_class_are_plugins_too(manager, tmp_path, monkeypatch):
    mod = _write_module(tmp_path, monkeypatch, """
        api_version = "1.0"
        calls = []
        def ddia_ray_start():
            calls.append("start")
    """)
    assert manager.register(mod).name == mod.__name__

    class Cls(Recorder):
        name = "by-class"

    assert manager.register(Cls).name == "by-class"  # a class is instantiated
    manager.init(mod.__name__)
    manager.start(mod.__name__)
    assert mod.calls == ["start"]


def test_unknown_hooks_and_wrong_parameters_are_refused(manager):
    class Typo:
        api_version = "1.0"

        def ddia_ray_strat(self):
            pass

    class ExtraParam:
        api_version = "1.0"

        @hookimpl
        def ddia_ray_start(self, when):
            pass

    with pytest.raises(PluginLoadError, match="ddia_ray_strat"):
        manager.register(Typo(), "typo")
    with pytest.raises(PluginLoadError, match="not a valid plugin"):
        manager.register(ExtraParam(), "extra")
    assert manager.names() == () and {s.name for s in manager.statuses()} == {"typo", "extra"}


# --- discovery through entry points --------------------------------------------------


def _write_module(tmp_path, monkeypatch, source: str):
    name = f"plugmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return __import__(name)


def test_discovery_loads_refuses_and_isolates_entry_points(manager, tmp_path, monkeypatch):
    engine = _name("ep-engine")
    mod = _write_module(tmp_path, monkeypatch, f"""
        from ddia_ray.storage.engine import MemoryEngine

        class Good:
            api_version = "1.0"
            def ddia_ray_storage_engines(self):
                return {{"{engine}": lambda url=None, **o: MemoryEngine()}}

        class Old:
            api_version = "0.9"
    """)
    broken = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{broken}.py").write_text("raise RuntimeError('cannot import me')\n")
    group = "ddia_ray.plugins"
    eps = [importlib.metadata.EntryPoint("good", f"{mod.__name__}:Good", group),
           importlib.metadata.EntryPoint("missing", f"{mod.__name__}:Nothing", group),
           importlib.metadata.EntryPoint("broken", f"{broken}:Plugin", group),
           importlib.metadata.EntryPoint("old", f"{mod.__name__}:Old", group)]
    statuses = {s.name: s for s in manager.discover(eps)}
    assert statuses["good"].state == "loaded" and statuses["good"].provides == {"storage_engine": (engine,)}
    assert statuses["good"].entry_point == f"good = {mod.__name__}:Good"
    for bad in ("missing", "broken"):
        assert statuses[bad].state == "refused" and statuses[bad].error.kind == "PluginLoadError"
        assert f"{bad} = " in statuses[bad].why and statuses[bad].error.attrs["entry_point"].startswith(bad)
    assert "cannot import me" in statuses["broken"].why and "Nothing" in statuses["missing"].why
    assert statuses["old"].error.kind == "PluginVersionError" and statuses["old"].api_version == "0.9"
    assert open_engine(None, engine=engine).stats()["engine"] == "memory"  # the good one works
    assert manager.discover(eps) == ()  # each entry point is handled once


# --- lifecycle -------------------------------------------------------------------------


def test_the_lifecycle_follows_the_table(manager):
    p = Recorder()
    manager.register(p, "rec")
    with pytest.raises(PluginStateError) as e:
        manager.start("rec")
    assert (e.value.plugin, e.value.state, e.value.action) == ("rec", "loaded", "start")
    assert manager.init("rec", {"threads": 2}).state == "initialized"
    assert manager.init("rec", {"threads": 3}).state == "initialized"  # reconfigured before it starts
    assert manager.start("rec").state == "running"
    with pytest.raises(PluginStateError, match="cannot init while running"):
        manager.init("rec", {})
    assert manager.stop("rec").state == "stopped"
    with pytest.raises(PluginStateError, match="cannot stop while stopped"):
        manager.stop("rec")
    assert manager.start("rec").state == "running"
    assert manager.stop("rec").state == "stopped"
    assert p.steps == ["init", "init", "start", "stop", "start", "stop"]  # refused steps ran no plugin code
    assert dict(p.config) == {"threads": 3}


def test_next_state_matches_the_table_for_every_pair():
    for state, action in itertools.product(PluginState, TRANSITIONS):
        allowed, to = TRANSITIONS[action]
        if state in allowed:
            assert next_state("p", state, action) is to
        else:
            with pytest.raises(PluginStateError):
                next_state("p", state, action)
    # FAILED and REFUSED are final: no action leaves them.
    assert not any(s in allowed for allowed, _ in TRANSITIONS.values() for s in (PluginState.FAILED,
                                                                                  PluginState.REFUSED))


def test_init_gets_a_read_only_copy_of_its_settings_from_a_mapping_or_a_source(manager):
    a, b = Recorder(), Recorder()
    manager.register(a, "a")
    manager.register(b, "b")
    settings = {"a": {"size": 3}}
    manager.init_all(settings)
    settings["a"]["size"] = 99
    assert dict(a.config) == {"size": 3} and dict(b.config) == {}
    with pytest.raises(TypeError):
        a.config["size"] = 4  # read-only
    seen = []
    manager.init_all(lambda name: seen.append(name) or {"who": name})
    assert seen == ["a", "b"] and dict(b.config) == {"who": "b"}
    manager.init("a", lambda: {"live": True})  # read when the plugin is initialised
    assert dict(a.config) == {"live": True}
    with pytest.raises(TypeError):
        manager.init("a", {1: "not a str key"})
    assert [s.state for s in manager.start_all()] == ["running", "running"]
    assert [s.name for s in manager.stop_all()] == ["b", "a"]  # reverse order


# --- isolation ---------------------------------------------------------------------------


class Exploding(Recorder):
    """Fails in the step named ``where``."""

    def __init__(self, where: str, error: BaseException, engine: str | None = None):
        super().__init__(engine)
        self.where, self.error = where, error

    def _maybe(self, step):
        if step == self.where:
            raise self.error

    def ddia_ray_init(self, config):
        self._maybe("init")

    def ddia_ray_start(self):
        self._maybe("start")

    def ddia_ray_health(self):
        self._maybe("health")
        return True


@pytest.mark.parametrize("where, error", [("init", ValueError("bad setting")), ("start", SystemExit(3)),
                                          ("health", RuntimeError("disk gone")), ("start", KeyboardInterrupt())])
def test_a_failing_plugin_is_failed_alone(manager, where, error):
    engine = _name("doomed")
    manager.register(Exploding(where, error, engine), "bad")
    manager.register(Recorder(), "good")
    assert engine in ENGINES
    manager.init_all()
    manager.start_all()
    manager.health_all()
    bad = manager.status("bad")
    assert bad.state == "failed" and bad.healthy is False and not bad.provides
    assert bad.error.attrs["kind"] == type(error).__name__ and bad.error.node == "bad"
    assert engine not in ENGINES  # its extensions are withdrawn
    good = manager.status("good")
    assert good.state == "running" and good.healthy is True and good.error is None
    with pytest.raises(PluginStateError, match="failed"):
        manager.start("bad")


def test_a_hanging_health_check_fails_the_plugin_within_the_bound():
    manager = PluginManager(health_timeout_s=0.2)
    release = threading.Event()

    class Hangs(Recorder):
        def ddia_ray_health(self):
            release.wait(30)
            return True

    manager.register(Hangs(), "hangs")
    manager.init("hangs")
    manager.start("hangs")
    try:
        status = manager.health("hangs")
        assert status.state == "failed" and status.error.kind == "CallTimeoutError"
        assert "ddia_ray_health did not return within 0.2s" in status.why
    finally:
        release.set()
        manager.unregister("hangs")


@pytest.mark.parametrize("answer, healthy, detail", [(None, True, "healthy"), (True, True, "healthy"),
                                                     (False, False, "reported unhealthy"),
                                                     ("replica lag 9s", False, "replica lag 9s")])
def test_health_answers(manager, answer, healthy, detail):
    class P(Recorder):
        def ddia_ray_health(self):
            return answer

    manager.register(P(), "p")
    assert manager.health("p").healthy is False  # not running: not asked
    manager.init("p")
    manager.start("p")
    status = manager.health("p")
    assert (status.state, status.healthy, status.detail) == ("running", healthy, detail)


def test_health_answering_nonsense_fails_the_plugin(manager):
    class P(Recorder):
        def ddia_ray_health(self):
            return {"ok": 1}

    manager.register(P(), "p")
    manager.init("p")
    manager.start("p")
    assert manager.health("p").error.kind == "InvalidArgumentError"


def test_an_extension_hook_that_raises_fails_the_plugin_with_nothing_registered(manager):
    picker = _name("pk")

    class P(Recorder):
        def ddia_ray_pickers(self):
            return {picker: lambda rng: RoundRobinPicker()}

        def ddia_ray_bus_handlers(self):
            raise OSError("no handlers today")

    status = manager.register(P(_name("e")), "p")
    assert status.state == "failed" and "no handlers today" in status.why
    assert picker not in PICKERS and not status.provides


def test_call_hook_isolates_each_plugin(manager):
    class A(Recorder):
        def ddia_ray_health(self):
            return "a"

    class B(Recorder):
        def ddia_ray_health(self):
            raise ValueError("b")

    manager.register(A(), "a")
    manager.register(B(), "b")
    assert manager.call_hook("ddia_ray_health") == {"a": "a"}
    assert manager.status("b").state == "failed"
    with pytest.raises(TypeError):
        manager.call_hook("not_a_hook")


# --- extension points ----------------------------------------------------------------------


def test_each_extension_kind_reaches_its_registry(manager, tmp_path, monkeypatch):
    engine, picker, resolver, handler = _name("eng"), _name("pick"), _name("res"), _name("handler")
    prefix = f"plug{uuid.uuid4().hex[:6]}"
    records = _write_module(tmp_path, monkeypatch, f"""
        from ddia_ray.codec import record

        @record("{prefix}.point", version=1)
        class Point:
            x: int
            y: int
    """)

    class Lowest(RoundRobinPicker):
        def _choose(self, key, candidates, exclude, load):
            return min(candidates)

    def handle(event):
        return event

    class P:
        api_version = "1.0"

        def ddia_ray_storage_engines(self):
            return {engine: lambda url=None, **o: MemoryEngine()}

        def ddia_ray_pickers(self):
            return {picker: lambda rng: Lowest(rng=rng)}

        def ddia_ray_conflict_resolvers(self):
            return {resolver: lambda key, siblings: b"merged"}

        def ddia_ray_codec_modules(self):
            return {prefix: records.__name__}

        def ddia_ray_bus_handlers(self):
            return {handler: handle}

    status = manager.register(P(), "all")
    assert status.provides == {"storage_engine": (engine,), "picker": (picker,), "conflict_resolver": (resolver,),
                               "codec_module": (prefix,), "bus_handler": (handler,)}
    db = open_engine(None, engine=engine)
    db.put(b"k", b"v")
    assert db.get(b"k") == b"v"
    core = BalancerCore(PICKERS[picker](random.Random(1)))
    for member in ("m3", "m1", "m2"):
        core.add_replica(member)
    assert core.begin(None, now_s=0.0) == "m1"
    assert resolve(resolver, b"k", [Sibling(b"a"), Sibling(b"b")]) == b"merged"
    assert codec.registered_modules()[prefix] == records.__name__
    assert codec.decode(codec.encode(records.Point(1, 2))) == records.Point(1, 2)
    assert named_handler(handler) is handle
    manager.unregister("all")
    assert engine not in ENGINES and picker not in PICKERS and resolver not in RESOLVERS
    assert handler not in BUS_HANDLERS
    with pytest.raises(ConfigError, match="unknown storage engine"):
        open_engine(None, engine=engine)


def test_two_plugins_claiming_one_name_the_second_is_refused_whole(manager):
    engine, picker = _name("shared"), _name("second-pick")
    manager.register(Recorder(engine), "first")

    class Second(Recorder):
        def ddia_ray_pickers(self):
            return {picker: lambda rng: RoundRobinPicker()}

    with pytest.raises(PluginConflictError) as e:
        manager.register(Second(engine), "second")
    assert (e.value.kind, e.value.name, e.value.owner, e.value.claimant) == ("storage_engine", engine, "first",
                                                                             "second")
    assert picker not in PICKERS  # nothing of the refused plugin stays registered
    assert manager.names() == ("first",) and open_engine(None, engine=engine) is not None
    refused = [s for s in manager.statuses() if s.state == "refused"]
    assert refused[0].error.kind == "PluginConflictError" and "'first'" in refused[0].why


@pytest.mark.parametrize("kind_hook, builtin", [("ddia_ray_storage_engines", "lsm"),
                                                ("ddia_ray_storage_engines", "memory"),
                                                ("ddia_ray_pickers", "round_robin"),
                                                ("ddia_ray_conflict_resolvers", "lww"),
                                                ("ddia_ray_codec_modules", "raft")])
def test_a_plugin_cannot_take_a_built_in_name(manager, kind_hook, builtin):
    class Taker:
        api_version = "1.0"

    setattr(Taker, kind_hook, lambda self: {builtin: "ddia_ray.x" if "codec" in kind_hook else (lambda *a: None)})
    with pytest.raises(PluginConflictError) as e:
        manager.register(Taker(), "taker")
    assert e.value.owner == "ddia-ray" and e.value.name == builtin


def test_an_invalid_extension_is_refused(manager):
    class P:
        api_version = "1.0"

        def ddia_ray_storage_engines(self):
            return {"not-callable": 42}

    with pytest.raises(PluginLoadError, match="invalid storage_engine 'not-callable'"):
        manager.register(P(), "p")

    class Q:
        api_version = "1.0"

        def ddia_ray_pickers(self):
            return ["not", "a", "mapping"]

    with pytest.raises(PluginLoadError, match="must return a mapping"):
        manager.register(Q(), "q")

    class R:
        api_version = "1.0"

        def ddia_ray_codec_modules(self):
            return {"dotted.prefix": "some.module"}

    with pytest.raises(PluginLoadError, match="invalid codec_module 'dotted.prefix'"):
        manager.register(R(), "r")
    assert manager.names() == ()


def test_registries_are_idempotent_and_release_only_their_own():
    name = _name("eng")
    opener = lambda url=None, **o: MemoryEngine()  # noqa: E731
    register_engine(name, opener, replace=False)
    register_engine(name, opener, replace=False)  # the same opener again: a no-op
    with pytest.raises(ConfigError):
        register_engine(name, lambda url=None: None, replace=False)
    assert not unregister_engine(name, lambda: None) and unregister_engine(name, opener)
    factory = lambda rng: RoundRobinPicker()  # noqa: E731
    register_picker(name, factory)
    register_picker(name, factory)
    with pytest.raises(ConfigError):
        register_picker(name, lambda rng: RoundRobinPicker())
    assert unregister_picker(name, factory) and name not in PICKERS


# --- the built-in conflict resolvers ---------------------------------------------------------

siblings = st.lists(st.builds(Sibling, st.one_of(st.none(), st.binary(max_size=4)), st.integers(0, 5),
                              st.sampled_from(["n1", "n2", "n3"])), min_size=1, max_size=6)


@given(siblings, st.randoms())
def test_last_writer_wins_is_the_latest_whatever_the_order(sibs, rnd):
    shuffled = list(sibs)
    rnd.shuffle(shuffled)
    # highest (timestamp, node); an exact tie goes to the highest value, a tombstone lowest
    latest = max(sibs, key=lambda s: (s.timestamp, s.node, s.value is not None, s.value or b""))
    assert get_resolver("lww").resolve(b"k", shuffled) == latest.value


@given(st.lists(st.one_of(st.none(), st.frozensets(st.integers(0, 20), max_size=5)), min_size=1, max_size=5),
       st.randoms())
def test_set_union_merges_every_live_sibling_whatever_the_order(sets, rnd):
    sibs = [Sibling(None if s is None else codec.encode(tuple(s))) for s in sets]
    rnd.shuffle(sibs)
    merged = get_resolver("set_union").resolve(b"cart", sibs)
    live = [s for s in sets if s is not None]
    if not live:
        assert merged is None
    else:
        assert codec.decode(merged) == tuple(sorted(set().union(*live)))


def test_resolvers_refuse_bad_input():
    with pytest.raises(TypeError):
        get_resolver("lww").resolve(b"k", [])
    with pytest.raises(TypeError):
        get_resolver("set_union").resolve(b"k", [Sibling(codec.encode(5)), Sibling(codec.encode(6))])
    with pytest.raises(ConfigError, match="known: .*lww"):
        get_resolver("nope")
    with pytest.raises(TypeError):
        Sibling("text")


def test_a_status_travels_as_a_record(manager):
    class P(Exploding):
        pass

    manager.register(P("init", ValueError("x"), _name("e")), "p")
    manager.init("p")
    status = manager.status("p")
    again = codec.decode(codec.encode(status), PluginStatus)
    assert again == status and again.error.exception().remote_node == "p"
    assert "plugins" in codec.registered_modules() and sys.modules["ddia_ray.plugins.lifecycle"]


# --- the manager against a model ---------------------------------------------------------------

#: The lifecycle as the docs state it, written independently of TRANSITIONS: action -> {from: to}.
_MODEL = {"init": {"loaded": "initialized", "initialized": "initialized", "stopped": "initialized"},
          "start": {"initialized": "running", "stopped": "running"},
          "stop": {"initialized": "stopped", "running": "stopped"}}


class ManagerMachine(RuleBasedStateMachine):
    """Random registrations and lifecycle steps of plugins that may fail in a given step; after every
    step each plugin's state is the model's, and exactly the extensions of live plugins are registered."""

    def __init__(self):
        super().__init__()
        self.manager = PluginManager(health_timeout_s=5.0)
        self.model: dict[str, str] = {}
        self.engines: dict[str, str] = {}

    @rule(fails_in=st.sampled_from([None, "init", "start", "health"]))
    def register(self, fails_in):
        name, engine = _name("m"), _name("m-engine")
        plugin = Exploding(fails_in, RuntimeError("planned"), engine) if fails_in else Recorder(engine)
        assert self.manager.register(plugin, name).state == "loaded"
        self.model[name], self.engines[name] = "loaded", engine

    @precondition(lambda self: self.model)
    @rule(data=st.data(), action=st.sampled_from(["init", "start", "stop", "health"]))
    def step(self, data, action):
        name = data.draw(st.sampled_from(sorted(self.model)))
        state = self.model[name]
        plugin = self.manager.get_plugin(name)
        fails = getattr(plugin, "where", None) == action
        if action == "health":
            status = self.manager.health(name)
            if state == "running" and fails:
                self.model[name] = "failed"
            assert status.healthy is (state == "running" and not fails)
            return
        if state not in _MODEL[action]:
            with pytest.raises(PluginStateError):
                getattr(self.manager, action)(name)
            return
        getattr(self.manager, action)(name)
        self.model[name] = "failed" if fails else _MODEL[action][state]

    @invariant()
    def states_and_registries_match_the_model(self):
        for name, state in self.model.items():
            status = self.manager.status(name)
            assert status.state == state
            assert (self.engines[name] in ENGINES) == (state != "failed")
            assert (status.error is not None) == (state == "failed")

    def teardown(self):
        for name in self.manager.names():
            self.manager.unregister(name)
        assert not any(e in ENGINES for e in self.engines.values())


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
