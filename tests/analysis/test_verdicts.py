"""The verdict rule on hand-made numbers: differences against the seeds' noise, "about X",
and ratings by rank."""

import math

import pytest

from tinygpt.analysis.verdicts import (
    AGREES,
    DISAGREES,
    WITHIN_NOISE,
    Stat,
    about,
    compare,
    noise,
    rank_levels,
    rating_verdict,
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


def test_levels_by_rank_two_of_six_each_and_ties_share():
    assert rank_levels([0.1, 0.9, 0.5, 0.3, 0.7, 0.2]) == [
        "low",
        "high",
        "medium",
        "medium",
        "high",
        "low",
    ]
    assert rank_levels([0.0] * 6) == ["medium"] * 6
    assert rank_levels([1.0, math.nan, 2.0]) == ["low", "n/a", "high"]


def test_rating_verdict_agrees_swaps_within_noise_or_disagrees():
    stats = [Stat(m, 0.05, 3) for m in (0.0, 0.1, 0.4, 0.5, 0.8, 0.9)]
    assert rating_verdict(0, stats, "low") == ("low", AGREES)
    # 0.1 is low; the nearest medium value, 0.4, is 0.3 away, beyond the noise 0.07.
    assert rating_verdict(1, stats, "medium") == ("low", DISAGREES)
    assert rating_verdict(5, stats, "low") == ("high", DISAGREES)
    noisy = [Stat(m, 0.25, 3) for m in (0.0, 0.1, 0.4, 0.5, 0.8, 0.9)]
    # With spreads of 0.25 (noise 0.35), 0.1 and 0.4 could swap ranks.
    assert rating_verdict(1, noisy, "medium") == ("low", WITHIN_NOISE)
    assert rating_verdict(1, noisy, "high") == ("low", DISAGREES)
    with pytest.raises(ValueError, match="rating"):
        rating_verdict(0, stats, "medium-high")
