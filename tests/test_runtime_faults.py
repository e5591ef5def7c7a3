"""The pure fault model: partitions, cuts, link settings and seeded randomness."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.runtime.faults import FaultModel, LinkSettings, NetworkConfig

NODES = ["a", "b", "c", "d"]


@settings(max_examples=200)
@given(split=st.lists(st.sampled_from([0, 1, 2]), min_size=4, max_size=4))
def test_partition_cuts_exactly_the_links_between_groups(split):
    groups = [[n for n, g in zip(NODES, split) if g == i] for i in range(3)]
    groups = [g for g in groups if g]
    if len(groups) < 2:
        return
    cfg = NetworkConfig().with_partition(groups)
    for s, gs in zip(NODES, split):
        for d, gd in zip(NODES, split):
            assert cfg.is_cut(s, d) == (s != d and gs != gd)
    assert not any(cfg.healed().is_cut(s, d) for s in NODES for d in NODES)


def test_wildcard_group_isolates_a_node_from_everyone_including_clients():
    cfg = NetworkConfig().with_partition([["a"], ["*"]])
    assert cfg.is_cut("a", "client") and cfg.is_cut("client", "a")
    assert not cfg.is_cut("b", "client")


def test_unlisted_nodes_keep_their_links():
    cfg = NetworkConfig().with_partition([["a"], ["b"]])
    assert cfg.is_cut("a", "b") and not cfg.is_cut("a", "client") and not cfg.is_cut("client", "b")


def test_one_way_cut_is_one_way():
    cfg = NetworkConfig().with_cut("a", "b")
    assert cfg.is_cut("a", "b") and not cfg.is_cut("b", "a")
    model = FaultModel(cfg)
    assert model.route("a", "b") == () and model.route("b", "a") == (0.0,)
    assert model.counters()["cut"] == 1


def test_most_specific_link_override_wins():
    cfg = NetworkConfig().with_link(delay_s=1.0).with_link("a", "*", delay_s=2.0).with_link("a", "b", delay_s=3.0)
    assert cfg.settings("x", "y").delay_s == 1.0
    assert cfg.settings("a", "c").delay_s == 2.0
    assert cfg.settings("a", "b").delay_s == 3.0


@pytest.mark.parametrize("drop", [0.1, 0.5, 0.9])
def test_drop_rate_matches_probability(drop):
    model = FaultModel(NetworkConfig().with_link(drop=drop), random.Random(1))
    lost = sum(not model.route("a", "b") for _ in range(20000))
    assert abs(lost / 20000 - drop) < 0.02


def test_duplicates_delays_and_jitter_stay_in_their_ranges():
    cfg = NetworkConfig().with_link(duplicate=0.5, delay_s=0.1, jitter_s=0.05)
    model = FaultModel(cfg, random.Random(2))
    answers = [model.route("a", "b") for _ in range(5000)]
    assert 0.45 < sum(len(a) == 2 for a in answers) / 5000 < 0.55
    assert all(0.1 <= d <= 0.15 for a in answers for d in a)


def test_same_seed_same_decisions():
    cfg = NetworkConfig().with_link(drop=0.3, reorder=0.3, jitter_s=0.01, duplicate=0.2)
    runs = [[FaultModel(cfg, random.Random(seed)).route("a", "b") for _ in range(50)] for seed in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]


def test_config_round_trips_through_the_codec():
    cfg = NetworkConfig().with_partition([["a"], ["b", "c"]]).with_cut("c", "a").with_link("a", "b", drop=0.5)
    back = decode(encode(cfg))
    assert back == cfg and back.is_cut("c", "a") and back.settings("a", "b").drop == 0.5


@pytest.mark.parametrize("kwargs", [{"drop": 1.5}, {"drop": -0.1}, {"delay_s": -1}, {"jitter_s": float("nan")}])
def test_bad_link_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        LinkSettings(**kwargs)


def test_bad_partitions_are_refused():
    with pytest.raises(ConfigError, match="two groups"):
        NetworkConfig().with_partition([["a", "b"]])
    with pytest.raises(ConfigError, match="two partition groups"):
        NetworkConfig().with_partition([["a"], ["a", "b"]])
    with pytest.raises(InvalidArgumentError):
        NetworkConfig().with_partition(["ab", "cd"])
    with pytest.raises(InvalidArgumentError):
        LinkSettings(drop="high")
