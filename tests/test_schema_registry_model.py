"""The schema registry's decisions against a plain model: random registrations across subjects and
compatibility modes, retries, soft deletes, mode changes and restarts (the rows rebuilt from a
snapshot), plus one named test per way a registration is refused. Runs the replicas' own
procedures over a LocalBackend, so what holds here holds for every Raft member's decision; the
model's calls go to two members deciding each on its own, which must stay equal (determinism)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ddia_ray.errors import (ConfigError, IncompatibleSchemaError, InvalidArgumentError, MalformedSchemaError,
                             MigrationError, UnknownConversionError, UnknownSchemaError, UnknownSubjectError)
from ddia_ray.events.local import LocalBackend
from ddia_ray.replication.state import MapState
from ddia_ray.schema import (MODES, AddField, ChangeType, Migration, RemoveField, RenameField, check, conversion,
                             from_avro, infer_rules)
from ddia_ray.schema.migrations import check_migration
from ddia_ray.schema.registry import RegistryClient
from ddia_ray.schema.registry_rows import identity_of

SUBJECTS = ("orders", "users", "orders-value")
# The field universe random schemas draw from: (name, type, default or absent). Some fields come in
# two types, so a draw can change a field's type (a migration then needs a ChangeType).
FIELDS = (
    ("id", "long", None),
    ("name", "string", None),
    ("email", "string", ""),
    ("age", "int", 0),
    ("age", "long", 0),
    ("note", ["null", "string"], None),
    ("score", "double", None),
    ("score", "string", "0"),
    ("tags", {"type": "array", "items": "string"}, []),
)
_ABSENT = object()


def _schema(picks: tuple, with_defaults: tuple) -> dict:
    fields, seen = [], set()
    for i in picks:
        name, typ, default = FIELDS[i]
        if name in seen:
            continue
        seen.add(name)
        f = {"name": name, "type": typ}
        if with_defaults[i] and (default is not None or isinstance(typ, list)):
            f["default"] = default
        fields.append(f)
    return {"type": "record", "name": "shop.Row", "fields": fields}


schemas = st.builds(_schema, st.lists(st.integers(0, len(FIELDS) - 1), min_size=1, max_size=5, unique=True)
                    .map(tuple), st.tuples(*[st.booleans()] * len(FIELDS)))


class TwinBackend:
    """Two members fed the same calls, each deciding on its own (as every Raft member runs a procedure
    at apply time): after every call their rows must be equal, and their answers too."""

    def __init__(self):
        self.a, self.b = LocalBackend(), LocalBackend()

    def call_nowait(self, name, args):
        fa, fb = self.a.call_nowait(name, args), self.b.call_nowait(name, args)
        assert self.a.state.data == self.b.state.data, f"the members diverged on {name}"
        ea, eb = fa.exception(), fb.exception()
        assert (type(ea), str(ea)) == (type(eb), str(eb)) and (ea is not None or fa.result() == fb.result())
        return fa

    def query_nowait(self, name, args):
        return self.a.query_nowait(name, args)

    def close(self):
        pass


class Subject:
    """The model of one subject: its versions (schema, id, deleted) and its own mode."""

    def __init__(self):
        self.versions: list[list] = []  # index v-1: [schema, id, deleted]
        self.mode: str | None = None

    def live(self) -> list[int]:
        return [v for v, (_, _, d) in enumerate(self.versions, 1) if not d]


class RegistryModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.backend = TwinBackend()
        self.client = RegistryClient(self.backend)
        self.subjects = {s: Subject() for s in SUBJECTS}
        self.global_mode: str | None = None
        self.ids: dict[bytes, int] = {}  # identity -> id
        self.fingerprints: dict[int, str] = {}

    def _mode(self, m: Subject) -> str:
        return m.mode or self.global_mode or "BACKWARD"

    @rule(subject=st.sampled_from(SUBJECTS), avro=schemas)
    def register(self, subject, avro):
        m = self.subjects[subject]
        new = from_avro(avro)
        ident = identity_of(new)
        for v in m.live():
            if identity_of(m.versions[v - 1][0]) == ident:  # idempotent: the same answer, nothing written
                got = self.client.register(subject, avro)
                assert (got.version, got.id) == (v, m.versions[v - 1][1])
                return
        mode = self._mode(m)
        live = m.live()
        against = [] if mode == "NONE" else live if mode.endswith("TRANSITIVE") else live[-1:]
        found = check(mode, new, [m.versions[v - 1][0] for v in against], versions=against)
        if found:
            with pytest.raises(IncompatibleSchemaError) as e:
                self.client.register(subject, avro)
            assert e.value.incompatibilities == found  # every field, and why, reaches the caller
            for i in found:
                assert i.path in str(e.value)
            return
        if m.versions:
            old = m.versions[-1][0]
            try:
                step = Migration(len(m.versions), len(m.versions) + 1, infer_rules(old, new))
                refused = bool(check_migration(old, new, step))
            except MigrationError:
                refused = True
            if refused:
                with pytest.raises(MigrationError):
                    self.client.register(subject, avro)
                return
        got = self.client.register(subject, avro)
        want_id = self.ids.setdefault(ident, len(self.ids) + 1)
        m.versions.append([new, want_id, False])
        self.fingerprints[want_id] = new.fingerprint
        assert (got.subject, got.version, got.id, got.fingerprint) == (subject, len(m.versions), want_id,
                                                                       new.fingerprint)

    @rule(subject=st.sampled_from(SUBJECTS), data=st.data())
    def retry_a_registration(self, subject, data):
        """A live version registered again (a client's retry): its first answer, nothing written."""
        m = self.subjects[subject]
        if not m.live():
            return
        v = data.draw(st.sampled_from(m.live()))
        schema, schema_id, _ = m.versions[v - 1]
        got = self.client.register(subject, schema)
        assert (got.version, got.id) == (v, schema_id)

    @rule(subject=st.none() | st.sampled_from(SUBJECTS), mode=st.sampled_from(MODES + (None,)))
    def set_mode(self, subject, mode):
        if subject is None and mode is None:
            with pytest.raises(ConfigError):
                self.client.set_compatibility(None)
            return
        assert self.client.set_compatibility(mode, subject) == mode
        if subject is None:
            self.global_mode = mode
        else:
            self.subjects[subject].mode = mode

    @rule(subject=st.sampled_from(SUBJECTS), data=st.data())
    def delete_version(self, subject, data):
        m = self.subjects[subject]
        if not m.versions:
            with pytest.raises(UnknownSubjectError):
                self.client.delete_version(subject, 1)
            return
        v = data.draw(st.integers(1, len(m.versions) + 1))
        if v > len(m.versions) or m.versions[v - 1][2]:
            with pytest.raises(UnknownSchemaError):
                self.client.delete_version(subject, v)
            return
        assert self.client.delete_version(subject, v) == v
        m.versions[v - 1][2] = True

    @rule(subject=st.sampled_from(SUBJECTS), data=st.data())
    def migrate_between_versions(self, subject, data):
        """A datum of any version, read at any other: it holds exactly the reader's fields."""
        m = self.subjects[subject]
        if not m.versions:
            return
        a = data.draw(st.integers(1, len(m.versions)))
        b = data.draw(st.integers(1, len(m.versions)))
        datum = {f: f"v{a}" for f in m.versions[a - 1][0].field_names()}
        got = self.client.migrate(subject, datum, a, b)
        want = set(m.versions[b - 1][0].field_names())
        # a new field with a default and no rule stays absent: its reader fills the default
        assert set(got) <= want and want - set(got) <= {f["name"] for f in m.versions[b - 1][0].avro["fields"]
                                                         if "default" in f}
        kept = {f for f in datum if all(f in m.versions[v - 1][0].field_names() for v in range(min(a, b),
                                                                                                 max(a, b) + 1))}
        assert all(got[f] == datum[f] for f in kept)  # a field every version between has is carried as is

    @rule()
    def restart(self):
        """A member restarts from its snapshot: the rows decode as they were written, and it goes on
        deciding as its twin does."""
        state = MapState()
        state.restore(self.backend.a.state.snapshot())
        self.backend.a.state = state

    @precondition(lambda self: any(m.versions for m in self.subjects.values()))
    @invariant()
    def reads_agree(self):
        assert self.client.subjects() == sorted(s for s, m in self.subjects.items() if m.live())
        for s, m in self.subjects.items():
            if not m.versions:
                with pytest.raises(UnknownSubjectError):
                    self.client.versions(s)
                continue
            assert self.client.versions(s) == m.live()
            assert self.client.versions(s, deleted=True) == list(range(1, len(m.versions) + 1))
            assert self.client.compatibility(s) == self._mode(m)
            if m.live():
                latest = self.client.get(s)
                assert latest.version == m.live()[-1] and latest.id == m.versions[latest.version - 1][1]
            for v, (schema, schema_id, deleted) in enumerate(m.versions, 1):
                got = self.client.get(s, v, deleted=True)
                assert (got.id, got.deleted, identity_of(got.schema)) == (schema_id, deleted, identity_of(schema))
        for schema_id, fingerprint in self.fingerprints.items():
            assert self.client.by_id(schema_id).fingerprint == fingerprint
            assert schema_id in self.client.by_fingerprint(fingerprint)


RegistryModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestRegistryModel = RegistryModel.TestCase


# --- one named test per refusal, and the migrations a user declares -----------------------------------

V1 = {"type": "record", "name": "shop.Customer", "fields": [{"name": "name", "type": "string"},
                                                           {"name": "mail", "type": "string"}]}


def _with(*fields: dict, base: dict = V1) -> dict:
    return {**base, "fields": [*base["fields"], *fields]}


@pytest.fixture
def registry():
    c = RegistryClient(LocalBackend())
    c.register("customer", V1)
    return c


@conversion("tests.registry.str_to_int")
def _str_to_int(value):
    return int(value)


@conversion("tests.registry.int_to_str")
def _int_to_str(value):
    return str(value)


def test_a_rename_needs_its_rule(registry):
    renamed = {**V1, "fields": [V1["fields"][0], {"name": "email", "type": "string", "default": ""}]}
    with pytest.raises(MigrationError, match="'mail'"):
        registry.register("customer", renamed, migration=(AddField("email", ""),))  # mail left behind
    got = registry.register("customer", renamed, migration=(RenameField("mail", "email"),))
    assert got.version == 2
    assert registry.migrate("customer", {"name": "a", "mail": "a@x"}, 1, 2) == {"name": "a", "email": "a@x"}
    assert registry.migrate("customer", {"name": "a", "email": "a@x"}, 2, 1) == {"name": "a", "mail": "a@x"}


def test_a_rename_declared_by_an_alias_is_inferred(registry):
    aliased = {**V1, "fields": [V1["fields"][0], {"name": "email", "type": "string", "aliases": ["mail"]}]}
    registry.register("customer", aliased)
    assert registry.get("customer").migration.rules == (RenameField("mail", "email"),)


def test_a_type_change_needs_a_change_type_with_known_conversions(registry):
    registry.set_compatibility("NONE", "customer")
    v2 = _with({"name": "age", "type": "string", "default": "0"})
    registry.register("customer", v2)
    v3 = _with({"name": "age", "type": "int", "default": 0})
    with pytest.raises(MigrationError, match="age"):
        registry.register("customer", v3)
    with pytest.raises(UnknownConversionError):  # checked where the rule is written, not in the members
        registry.register("customer", v3, migration=(ChangeType("age", "int", "no.such", "tests.registry.int_to_str"),))
    got = registry.register("customer", v3, migration=(ChangeType("age", "int", "tests.registry.str_to_int",
                                                                  "tests.registry.int_to_str"),))
    assert got.version == 3
    assert registry.migrate("customer", {"name": "n", "mail": "m"}, 1, 3) == {"name": "n", "mail": "m", "age": 0}
    assert registry.migrate("customer", {"name": "n", "mail": "m", "age": 7}, 3, 2)["age"] == "7"


def test_a_new_field_without_a_default_needs_an_add_field(registry):
    registry.set_compatibility("FORWARD", "customer")
    v2 = _with({"name": "age", "type": "int"})
    with pytest.raises(MigrationError, match="no default"):
        registry.register("customer", v2)
    assert registry.register("customer", v2, migration=(AddField("age", 0),)).version == 2


def test_a_migration_from_a_stale_version_is_refused(registry):
    v2 = _with({"name": "a", "type": "int", "default": 0})
    registry.register("customer", v2)
    v3 = _with({"name": "b", "type": "int", "default": 0}, base=v2)
    with pytest.raises(MigrationError, match="version 1"):
        registry.register("customer", v3, migration=Migration(1, 2, (AddField("b", 0),)))
    assert registry.register("customer", v3, migration=Migration(2, 3, (AddField("b", 0),))).version == 3


def test_version_one_has_no_migration():
    c = RegistryClient(LocalBackend())
    with pytest.raises(MigrationError):
        c.register("s", V1, migration=(RemoveField("x"),))


def test_incompatible_schema_names_every_field(registry):
    v2 = {**V1, "fields": [{"name": "name", "type": "int"}, {"name": "mail", "type": "string"},
                           {"name": "age", "type": "int"}]}
    with pytest.raises(IncompatibleSchemaError) as e:
        registry.register("customer", v2)
    paths = {i.path for i in e.value.incompatibilities}
    assert paths == {"Customer.name", "Customer.age"}
    assert "Customer.name" in str(e.value) and "Customer.age" in str(e.value)
    assert registry.check("customer", v2) == e.value.incompatibilities
    assert registry.versions("customer") == [1]  # nothing was written


def test_subject_mode_overrides_the_global_one_and_can_be_set_first():
    c = RegistryClient(LocalBackend())
    c.set_compatibility("FULL")
    c.set_compatibility("NONE", "later")
    assert (c.compatibility(), c.compatibility("later"), c.compatibility("other")) == ("FULL", "NONE", "FULL")
    c.register("later", V1)
    c.register("later", {"type": "string"}, migration=())
    c.set_compatibility(None, "later")
    assert c.compatibility("later") == "FULL"
    with pytest.raises(ConfigError):
        c.set_compatibility("SIDEWAYS")


def test_a_deleted_version_keeps_its_id_and_registering_it_again_makes_a_new_version(registry):
    v2 = _with({"name": "a", "type": "int", "default": 0})
    first = registry.register("customer", v2)
    registry.delete_version("customer", 2)
    assert registry.get("customer").version == 1
    assert registry.by_id(first.id).fingerprint == first.fingerprint  # data written with it still resolves
    again = registry.register("customer", v2, migration=())
    assert (again.version, again.id) == (3, first.id)
    assert registry.history("customer", refresh=True).deleted == frozenset({2})
    assert registry.delete_subject("customer") == (1, 3)
    assert registry.subjects() == [] and registry.subjects(deleted=True) == ["customer"]
    with pytest.raises(UnknownSubjectError):
        registry.get("customer")


def test_unknowns_and_malformed_input():
    c = RegistryClient(LocalBackend())
    for call in (lambda: c.versions("nope"), lambda: c.get("nope"), lambda: c.check("nope", V1),
                 lambda: c.history("nope")):
        with pytest.raises(UnknownSubjectError) as e:
            call()
        assert e.value.subject == "nope"
    with pytest.raises(UnknownSchemaError) as e2:
        c.by_id(7)
    assert e2.value.schema_id == 7
    c.register("s", V1)
    with pytest.raises(UnknownSchemaError):
        c.get("s", 2)
    with pytest.raises(MalformedSchemaError):
        c.register("s", '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    for bad in ("", "a\x00b", 7, "x" * 300):
        with pytest.raises(InvalidArgumentError):
            c.register(bad, V1)


def test_lookup_and_ids_shared_across_subjects(registry):
    other = registry.register("copy", V1)
    assert other.id == registry.get("customer").id  # one id per distinct schema
    assert registry.lookup("customer", V1).version == 1
    assert registry.lookup("customer", _with({"name": "z", "type": "int", "default": 1})) is None


@pytest.mark.parametrize("mode,refused", [("BACKWARD", False), ("BACKWARD_TRANSITIVE", True),
                                          ("FULL", False), ("FULL_TRANSITIVE", True)])
def test_transitive_modes_check_every_live_version(mode, refused):
    """v1 has ``age`` as an int, v2 drops it, v3 brings it back as a string with a default: v3 reads
    v2's data, but not v1's. Deleting v1 takes it out of the transitive check."""
    c = RegistryClient(LocalBackend())
    base = {"type": "record", "name": "shop.Row", "fields": [{"name": "id", "type": "long"}]}
    c.register("s", _with({"name": "age", "type": "int", "default": 0}, base=base))
    c.register("s", base)
    c.set_compatibility(mode, "s")
    v3 = _with({"name": "age", "type": "string", "default": ""}, base=base)
    if refused:
        with pytest.raises(IncompatibleSchemaError, match="version 1"):
            c.register("s", v3)
        c.delete_version("s", 1)
    assert c.register("s", v3).version == 3
