"""TrafficSplit: smooth weighted round-robin, exact in every window of sum(weights) picks."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from router.balancing.traffic import TrafficSplit

# Weights as the validator allows them (integer percent, summing to 100), plus a few other sums:
# TrafficSplit itself is exact for any total.
PERCENT_SPLITS = [
    {"a": 90, "b": 10},
    {"a": 33, "b": 33, "c": 34},
    {"a": 1, "b": 99},
    {"a": 100},
    {"a": 0, "b": 100},
    {"a": 50, "b": 0, "c": 50},
    {"blue": 70, "green": 20, "red": 10},
    {"a": 25, "b": 25, "c": 25, "d": 25},
    {"a": 97, "b": 1, "c": 1, "d": 1},
]
OTHER_TOTALS = [{"a": 3, "b": 2}, {"a": 1, "b": 1, "c": 5}, {"x": 7}, {"a": 13, "b": 0, "c": 4}]


def picks(split: TrafficSplit, n: int) -> list[str]:
    out = []
    for _ in range(n):
        name = split.pick()
        assert name is not None
        out.append(name)
    return out


def live(weights: dict[str, int]) -> dict[str, int]:
    return {name: weight for name, weight in weights.items() if weight > 0}


@pytest.mark.parametrize("weights", PERCENT_SPLITS + OTHER_TOTALS, ids=str)
def test_every_window_of_total_picks_has_exactly_the_weights(weights: dict[str, int]) -> None:
    total = sum(weights.values())
    sequence = picks(TrafficSplit(weights), total * 5)
    # every window, not only the ones aligned on a multiple of the total
    for start in range(len(sequence) - total + 1):
        window = Counter(sequence[start:start + total])
        assert window == Counter(live(weights)), f"window starting at pick {start}: {dict(window)}"


@pytest.mark.parametrize("weights", PERCENT_SPLITS, ids=str)
def test_zero_weight_names_are_never_picked(weights: dict[str, int]) -> None:
    seen = set(picks(TrafficSplit(weights), 1000))
    assert seen == set(live(weights))


@pytest.mark.parametrize("weights", [{}, {"a": 0}, {"a": 0, "b": 0, "c": 0}], ids=str)
def test_no_positive_weight_means_no_pick(weights: dict[str, int]) -> None:
    split = TrafficSplit(weights)
    assert [split.pick() for _ in range(3)] == [None, None, None]


def test_the_small_share_is_spread_not_bunched() -> None:
    sequence = picks(TrafficSplit({"a": 90, "b": 10}), 300)
    positions = [i for i, name in enumerate(sequence) if name == "b"]
    assert len(positions) == 30
    assert not any(x == y == "b" for x, y in pairwise(sequence))
    # evenly: one 'b' every 10 picks
    assert {later - earlier for earlier, later in pairwise(positions)} == {10}


@pytest.mark.parametrize("weights", [{"a": 1, "b": 99}, {"a": 97, "b": 1, "c": 1, "d": 1}], ids=str)
def test_a_one_percent_share_never_repeats_within_a_hundred_picks(weights: dict[str, int]) -> None:
    sequence = picks(TrafficSplit(weights), 500)
    for name in (n for n, w in weights.items() if w == 1):
        positions = [i for i, picked in enumerate(sequence) if picked == name]
        assert len(positions) == 5
        assert {later - earlier for earlier, later in pairwise(positions)} == {100}


def test_equal_shares_alternate() -> None:
    sequence = picks(TrafficSplit({"a": 50, "b": 50}), 10)
    assert all(x != y for x, y in pairwise(sequence))


def test_the_weights_mapping_is_copied() -> None:
    weights = {"a": 90, "b": 10}
    split = TrafficSplit(weights)
    weights["b"] = 0
    weights["c"] = 1000
    assert Counter(picks(split, 100)) == {"a": 90, "b": 10}


def test_independent_splits_do_not_share_state() -> None:
    first, second = TrafficSplit({"a": 90, "b": 10}), TrafficSplit({"a": 90, "b": 10})
    picks(first, 37)
    assert picks(second, 100) == picks(TrafficSplit({"a": 90, "b": 10}), 100)


def test_repr_shows_the_shares() -> None:
    text = repr(TrafficSplit({"green": 10, "blue": 90}))
    assert text.startswith("TrafficSplit(")
    assert "blue=90" in text and "green=10" in text
    assert repr(TrafficSplit({})) == "TrafficSplit()"
    assert "b=100" in repr(TrafficSplit({"a": 0, "b": 100}))
