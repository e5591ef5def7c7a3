"""Migration rules and chains: each rule up and down, chains across versions in both directions, gaps,
conversions by name, rules inferred from schemas, and a round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, MigrationError, UnknownConversionError
from ddia_ray.schema import (
    AddField,
    ChangeType,
    Migration,
    RemoveField,
    RenameField,
    check_chain,
    check_migration,
    conversion,
    conversions,
    downgrade,
    from_avro,
    get_conversion,
    infer_rules,
    migrate,
    upgrade,
)


@conversion("test.cents_to_str")
def cents_to_str(cents):
    return f"{cents // 100}.{cents % 100:02d}"


@conversion("test.str_to_cents")
def str_to_cents(text):
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int(frac or 0)


@conversion("test.fail")
def always_fails(value):
    raise ValueError("no")


def user(*fields):
    return from_avro({"type": "record", "name": "User", "fields": [dict(f) for f in fields]})


# The seed's evolving user record, over four versions.
CHAIN = {
    1: Migration(1, 2, (AddField("email", ""),)),
    2: Migration(2, 3, (RenameField("name", "full_name"), RemoveField("age", default=0))),
    3: Migration(3, 4, (ChangeType("balance", "string", forward="test.cents_to_str", backward="test.str_to_cents"),)),
}
V1 = {"name": "Ada", "age": 36, "balance": 1234}
V4 = {"full_name": "Ada", "email": "", "balance": "12.34"}


# --- each rule ----------------------------------------------------------------------------------------------


def test_add_field_sets_its_default_up_and_drops_it_down():
    rules = (AddField("email", "none@example.org"),)
    assert upgrade({"name": "a"}, rules) == {"name": "a", "email": "none@example.org"}
    assert upgrade({"name": "a", "email": "x"}, rules) == {"name": "a", "email": "x"}  # present: kept
    assert downgrade({"name": "a", "email": "x"}, rules) == {"name": "a"}


def test_add_field_default_is_not_shared_between_data():
    rules = (AddField("tags", []),)
    first = upgrade({}, rules)
    first["tags"].append("x")
    assert upgrade({}, rules) == {"tags": []}


def test_remove_field_drops_it_up_and_restores_its_default_down():
    rules = (RemoveField("age", default=-1),)
    assert upgrade({"name": "a", "age": 3}, rules) == {"name": "a"}
    assert downgrade({"name": "a"}, rules) == {"name": "a", "age": -1}


def test_rename_field_both_ways_and_refuses_to_overwrite():
    rules = (RenameField("name", "full_name"),)
    assert upgrade({"name": "a"}, rules) == {"full_name": "a"}
    assert downgrade({"full_name": "a"}, rules) == {"name": "a"}
    with pytest.raises(MigrationError, match="already has a field 'full_name'"):
        upgrade({"name": "a", "full_name": "b"}, rules)


def test_change_type_uses_the_named_conversions():
    rules = (ChangeType("balance", "string", "test.cents_to_str", "test.str_to_cents"),)
    assert upgrade({"balance": 1205}, rules) == {"balance": "12.05"}
    assert downgrade({"balance": "12.05"}, rules) == {"balance": 1205}


def test_an_unknown_conversion_is_named():
    rules = (ChangeType("balance", "string", "test.nowhere", "test.str_to_cents"),)
    with pytest.raises(UnknownConversionError, match="test.nowhere") as err:
        upgrade({"balance": 1}, rules)
    assert err.value.name == "test.nowhere"
    assert isinstance(err.value, MigrationError)


def test_a_failing_conversion_is_a_migration_error_naming_the_field():
    rules = (ChangeType("balance", "string", "test.fail", "test.fail"),)
    with pytest.raises(MigrationError, match="'balance'") as err:
        upgrade({"balance": 1}, rules)
    assert isinstance(err.value.__cause__, ValueError)


def test_fields_no_rule_names_pass_through_untouched():
    # A compatible record: a newer writer's extra field survives an older reader's migration.
    data = {**V1, "nickname": "countess"}
    assert migrate(data, CHAIN, 1, 4)["nickname"] == "countess"
    assert migrate({**V4, "nickname": "countess"}, CHAIN, 4, 1)["nickname"] == "countess"


def test_input_data_is_never_mutated():
    data = dict(V1)
    migrate(data, CHAIN, 1, 4)
    assert data == V1


# --- chains --------------------------------------------------------------------------------------------------


def test_migrate_chains_upward_across_versions():
    assert migrate(V1, CHAIN, 1, 4) == V4
    assert migrate(V1, CHAIN, 1, 2) == {**V1, "email": ""}
    assert migrate(V1, CHAIN, 1, 1) == V1


def test_migrate_chains_downward_for_old_readers():
    # age was dropped in version 3: an old reader gets RemoveField's default for it.
    assert migrate(V4, CHAIN, 4, 1) == {"name": "Ada", "age": 0, "balance": 1234}
    assert migrate(V4, CHAIN, 4, 3) == {"full_name": "Ada", "email": "", "balance": 1234}


def test_a_gap_in_the_chain_names_the_missing_step():
    gapped = {1: CHAIN[1], 3: CHAIN[3]}
    with pytest.raises(MigrationError, match="no migration step from version 2"):
        migrate(V1, gapped, 1, 4)
    with pytest.raises(MigrationError, match="no migration step into version 3"):
        migrate(V4, gapped, 4, 1)


def test_a_step_that_skips_versions_is_followed_and_an_overshoot_refused():
    chain = {1: Migration(1, 3, (AddField("x", 0),)), 3: Migration(3, 4, (AddField("y", 0),))}
    assert migrate({}, chain, 1, 4) == {"x": 0, "y": 0}
    with pytest.raises(MigrationError, match="goes past it"):
        migrate({}, chain, 1, 2)
    with pytest.raises(MigrationError, match="starts before it"):
        migrate({"x": 0, "y": 0}, chain, 4, 2)


def test_a_step_under_the_wrong_key_is_refused():
    with pytest.raises(MigrationError, match="under key 1"):
        migrate({}, {1: Migration(2, 3)}, 1, 3)


def test_check_chain_lists_every_problem():
    assert check_chain(CHAIN, [1, 2, 3, 4]) == []
    assert check_chain(CHAIN, [1, 2]) == []
    problems = check_chain({1: CHAIN[1], 3: CHAIN[3]}, [1, 2, 3, 4])
    assert problems == ["missing step: no migration from version 2 to version 3"]
    broken = {1: Migration(1, 2, (ChangeType("b", "string", "test.cents_to_str", "test.missing"),))}
    assert check_chain(broken, [1, 2]) == [
        "unknown conversion 'test.missing' (type change of field 'b' from version 1 to 2); register it with @conversion"
    ]
    assert check_chain({1: Migration(1, 3)}, [1, 2, 3])[0] == "the step from version 1 goes to version 3, not to 2"


# --- persistence and validation ----------------------------------------------------------------------------------


def test_rules_and_migrations_are_codec_records():
    for step in CHAIN.values():
        assert decode(encode(step)) == step
    assert migrate(V1, {k: decode(encode(v)) for k, v in CHAIN.items()}, 1, 4) == V4


def test_change_type_keeps_a_complex_type_as_canonical_json():
    rule = ChangeType("tags", {"type": "array", "items": "string"}, "a", "b")
    assert rule.to_type == '{"items":"string","type":"array"}'
    assert decode(encode(rule)) == rule


@pytest.mark.parametrize("build,match", [
    (lambda: Migration(2, 2), "goes up"),
    (lambda: Migration(0, 1), ">= 1"),
    (lambda: Migration(1, 2, ("add x",)), "migration rule"),
    (lambda: AddField(""), "field name"),
    (lambda: RenameField("a", "a"), "itself"),
    (lambda: ChangeType("a", "", "f", "b"), "Avro type"),
    (lambda: ChangeType("a", "long", "", "b"), "forward"),
])
def test_bad_rules_are_refused_at_construction(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_conversion_names_are_unique_per_process():
    assert {"test.cents_to_str", "test.str_to_cents"} <= set(conversions())
    assert get_conversion("test.cents_to_str") is cents_to_str
    conversion("test.cents_to_str")(cents_to_str)  # the same function again: fine (a module reload)
    with pytest.raises(ConfigError, match="already registered"):
        conversion("test.cents_to_str")(lambda v: v)
    with pytest.raises(UnknownConversionError):
        get_conversion("test.never")


# --- rules from schemas ------------------------------------------------------------------------------------------

NAME = {"name": "name", "type": "string"}
AGE = {"name": "age", "type": "int", "default": 0}
EMAIL = {"name": "email", "type": "string", "default": "n/a"}
BLOB = {"name": "blob", "type": "bytes", "default": "\u00ff"}


def test_infer_rules_adds_removes_and_renames_by_alias():
    old = user(NAME, AGE)
    new = user({"name": "full_name", "type": "string", "aliases": ["name"]}, EMAIL, BLOB)
    rules = infer_rules(old, new)
    assert rules == (RenameField("name", "full_name"), AddField("email", "n/a"), AddField("blob", b"\xff"),
                     RemoveField("age", 0))
    assert upgrade({"name": "a", "age": 3}, rules) == {"full_name": "a", "email": "n/a", "blob": b"\xff"}
    assert check_migration(old, new, Migration(1, 2, rules)) == []


def test_infer_rules_refuses_a_new_field_without_default():
    with pytest.raises(MigrationError, match="'phone'"):
        infer_rules(user(NAME), user(NAME, {"name": "phone", "type": "string"}))


def test_infer_rules_of_non_records_is_empty():
    assert infer_rules(from_avro("int"), from_avro("long")) == ()


def test_check_migration_finds_rules_that_do_not_fit_the_schemas():
    old, new = user(NAME, AGE), user(NAME, {"name": "phone", "type": "string"})
    problems = check_migration(old, new, Migration(1, 2, (RemoveField("agee"),)))
    assert "RemoveField('agee'): the old schema has no field 'agee'" in problems
    assert "field 'phone' is new, has no default and no AddField or RenameField fills it" in problems
    assert check_migration(old, new, Migration(1, 2, (RemoveField("age"), AddField("phone", "")))) == []


def test_check_migration_wants_a_change_type_unless_avro_promotes():
    old = user({"name": "n", "type": "int"})
    assert check_migration(old, user({"name": "n", "type": "long"}), Migration(1, 2)) == []
    problems = check_migration(old, user({"name": "n", "type": "string"}), Migration(1, 2))
    assert problems == ["field 'n' changes type from \"int\" to \"string\": declare a ChangeType with conversions"]
    declared = Migration(1, 2, (ChangeType("n", "string", "test.cents_to_str", "test.str_to_cents"),))
    assert check_migration(old, user({"name": "n", "type": "string"}), declared) == []
    wrong = Migration(1, 2, (ChangeType("n", "bytes", "test.cents_to_str", "test.str_to_cents"),))
    assert check_migration(old, user({"name": "n", "type": "string"}), wrong) == [
        "ChangeType('n') changes it to bytes, but the new schema has \"string\""]
    to_array = Migration(1, 2, (ChangeType("n", {"type": "array", "items": "int"}, "a", "b"),))
    assert check_migration(old, user({"name": "n", "type": {"type": "array", "items": "int"}}), to_array) == []
    money = {"type": "record", "name": "Money", "namespace": "shop", "fields": [{"name": "cents", "type": "long"}]}
    to_money = Migration(1, 2, (ChangeType("n", "Money", "a", "b"),))
    assert check_migration(old, user({"name": "n", "type": money}), to_money) == []


# --- property: downgrade undoes upgrade ------------------------------------------------------------------------

_values = st.one_of(st.none(), st.integers(-1000, 1000), st.text(max_size=4), st.booleans())


@st.composite
def data_and_rules(draw):
    """Old data, and rules consistent with it: add fields it lacks, remove or rename fields it has, change
    the type of an int field through an invertible conversion."""
    data = draw(st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 10**6), max_size=5))
    names = set(data)
    rules = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["add", "remove", "rename", "change"]))
        if kind == "add":
            name = draw(st.sampled_from("hijklmn"))
            if name not in names:
                rules.append(AddField(name, draw(_values)))
                names.add(name)
        elif names:
            name = draw(st.sampled_from(sorted(names)))
            if kind == "remove" and name in data:
                rules.append(RemoveField(name, data[name]))  # its default: what old readers had
                names.discard(name)
            elif kind == "rename":
                new = name.upper() + str(len(rules))
                rules.append(RenameField(name, new))
                names.discard(name)
                names.add(new)
    return data, tuple(rules)


@settings(max_examples=150, deadline=None)
@given(data_and_rules())
def test_downgrade_undoes_upgrade(case):
    data, rules = case
    assert downgrade(upgrade(data, rules), rules) == data


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10**9), st.dictionaries(st.sampled_from("xyz"), _values, max_size=3))
def test_a_chain_round_trips_through_every_version(balance, extra):
    start = {"name": "n", "age": 0, "balance": balance, **extra}
    for top in (2, 3, 4):
        assert migrate(migrate(start, CHAIN, 1, top), CHAIN, top, 1) == start
