"""The verdict rule on hand-made numbers: differences against the seeds' noise, "about X",
and ratings judged pair by pair."""

import math

import pytest

from tinygpt.analysis.verdicts import (
    AGREES,
    DISAGREES,
    WITHIN_NOISE,
    Stat,
    about,
    compare,
    judge_pairs,
    noise,
)


def test_stat_is_mean_and_sample_std_and_one_value_has_no_spread():
    stat = Stat.of([1.0, 2.0, 3.0])
    assert (stat.mean, stat.std, stat.n) == (2.0, 1.0, 3)
    assert stat.fmt() == "2.000 ± 1.000" and stat.fmt(1) == "2.0 ± 1.0"
    one = Stat.of([4.0, None, math.nan])  # missing values left out
    assert one.mean == 4.0 and math.isnan(one.std) and one.spread() == 0.0 and one.fmt() == "4.000"
    assert Stat.of([]).fmt() == "n/a"


def test_noise_is_the_root_sum_of_squares_of_the_two_spreads():
    assert noise(Stat(0.0, 0.3, 3), Stat(0.0, 0.4, 3)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("a", "b", "claimed", "verdict"),
    [
        # difference -0.6 against noise 0.5: lower, beyond noise
        (Stat(1.4, 0.3, 3), Stat(2.0, 0.4, 3), "lower", AGREES),
        (Stat(1.4, 0.3, 3), Stat(2.0, 0.4, 3), "higher", DISAGREES),
        # difference -0.4 within noise 0.5, whichever way the claim goes
        (Stat(1.6, 0.3, 3), Stat(2.0, 0.4, 3), "lower", WITHIN_NOISE),
        (Stat(1.6, 0.3, 3), Stat(2.0, 0.4, 3), "higher", WITHIN_NOISE),
        # exactly the noise: not larger than it
        (Stat(1.5, 0.3, 3), Stat(2.0, 0.4, 3), "lower", WITHIN_NOISE),
        (Stat(2.1, 0.0, 3), Stat(2.0, 0.0, 3), "higher", AGREES),  # no spread: any difference
        (Stat(2.0, 0.0, 3), Stat(2.0, 0.0, 3), "higher", WITHIN_NOISE),
    ],
)
def test_compare(a, b, claimed, verdict):
    assert compare(a, b, claimed) == verdict


def test_compare_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="lower"):
        compare(Stat(1, 0, 1), Stat(1, 0, 1), "better")


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        (Stat(15.0, 3.0, 3), AGREES),
        (Stat(20.0, 3.0, 3), AGREES),  # the tolerance's edge
        (Stat(22.0, 3.0, 3), WITHIN_NOISE),  # misses 20 by 2, less than its std
        (Stat(24.0, 3.0, 3), DISAGREES),  # misses by 4, more than 3
        (Stat(8.0, 1.0, 3), DISAGREES),
        (Stat(math.nan, math.nan, 0), WITHIN_NOISE),
    ],
)
def test_about(value, verdict):
    assert about(value, 15, 5) == verdict


def test_pairs_rated_apart_are_concordant_discordant_or_within_noise():
    ratings = {"a": "low", "b": "medium", "c": "high", "d": "high"}
    stats = {"a": Stat(0.0, 0.05, 3), "b": Stat(0.5, 0.05, 3), "c": Stat(0.2, 0.05, 3)}
    stats["d"] = Stat(0.45, 0.05, 3)
    judged = judge_pairs(stats, ratings)
    # c and d share a rating: not judged. Pairs read (rated higher, rated lower).
    assert sorted(judged["concordant"]) == [("b", "a"), ("c", "a"), ("d", "a")]
    assert judged["discordant"] == [("c", "b")]  # c is rated above b but measures 0.3 lower
    assert judged[WITHIN_NOISE] == [("d", "b")]  # 0.05 apart, noise 0.07
