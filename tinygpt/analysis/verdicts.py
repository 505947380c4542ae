"""The verdict on a claim from measurements over seeds: "agrees", "disagrees" or "within noise".

One rule, stated on the results page (:data:`RULE`): a difference counts only when it is larger
than the noise of the two measurements, the root sum of squares of their standard deviations
over seeds (the spread of a difference between one run of each). So:

* "A is lower (higher) than B": ``d = mean(A) - mean(B)``; within noise when ``|d| <= noise``,
  else agrees when ``d`` has the claimed sign and disagrees when not;
* "about X" (a quantity, with the tolerance the word "about" is given): agrees when the mean is
  within the tolerance of X, within noise when it misses by no more than its standard
  deviation, disagrees otherwise;
* ratings (low, medium, high): each pair rated differently, by :func:`judge_pairs`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tinygpt.analysis.writing import number

AGREES, DISAGREES, WITHIN_NOISE = "agrees", "disagrees", "within noise"
CONCORDANT, DISCORDANT = "concordant", "discordant"
LEVELS = ("low", "medium", "high")

RULE = (
    "A difference counts when it is larger than the noise: the root sum of squares of the two "
    "standard deviations over seeds, sqrt(s1² + s2²). A claim that one is lower or higher "
    "*agrees* when the difference of means has the claimed sign and is larger than the noise, "
    "*disagrees* when it has the other sign and is larger than the noise, and is *within "
    'noise* otherwise. A claim of "about X" agrees when the mean lies within the stated '
    "tolerance of X, is within noise when it misses the tolerance by no more than one standard "
    "deviation, and disagrees otherwise."
)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) of values over seeds (``nan`` std for one):
    the one statistics helper of the reports, the results page and the decoding comparison."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        if not finite:
            return cls(math.nan, math.nan, 0)
        std = statistics.stdev(finite) if len(finite) > 1 else math.nan
        return cls(statistics.fmean(finite), std, len(finite))

    def spread(self) -> float:
        """The standard deviation, 0 where it is unknown (one value)."""
        return 0.0 if math.isnan(self.std) else self.std

    def fmt(self, digits: int = 3) -> str:
        """``mean ± std``, the mean alone where the std is unknown, "n/a" without values."""
        if math.isnan(self.mean) or math.isnan(self.std):
            return number(self.mean, digits)
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def noise(a: Stat, b: Stat) -> float:
    """The noise of the difference ``a - b``: ``sqrt(s_a^2 + s_b^2)``."""
    return math.hypot(a.spread(), b.spread())


def compare(a: Stat, b: Stat, claimed: str) -> str:
    """The verdict on "``a`` is ``claimed`` (``"lower"`` or ``"higher"``) than ``b``"."""
    if claimed not in ("lower", "higher"):
        raise ValueError(f"claimed must be 'lower' or 'higher', got {claimed!r}")
    difference = a.mean - b.mean
    if math.isnan(difference) or abs(difference) <= noise(a, b):
        return WITHIN_NOISE
    return AGREES if (difference < 0) == (claimed == "lower") else DISAGREES


def about(value: Stat, target: float, tolerance: float) -> str:
    """The verdict on "``value`` is about ``target``", "about" meaning within ``tolerance``."""
    if math.isnan(value.mean):
        return WITHIN_NOISE
    miss = abs(value.mean - target) - tolerance
    if miss <= 0:
        return AGREES
    return WITHIN_NOISE if miss <= value.spread() else DISAGREES


def judge_pairs(stats: Mapping[str, Stat], ratings: Mapping[str, str]) -> dict[str, list]:
    """Each pair of ``stats`` (higher = more) whose ``ratings`` (low, medium, high) differ, as
    (rated higher, rated lower): *concordant* when the one rated higher measures higher by more
    than the noise, *discordant* when it measures lower by more than the noise, else *within
    noise*."""
    judged: dict[str, list] = {CONCORDANT: [], DISCORDANT: [], WITHIN_NOISE: []}
    for a, b in itertools.combinations(stats, 2):
        if ratings[a] == ratings[b]:
            continue
        if LEVELS.index(ratings[a]) < LEVELS.index(ratings[b]):
            a, b = b, a
        verdict = compare(stats[a], stats[b], "higher")
        judged[{AGREES: CONCORDANT, DISAGREES: DISCORDANT}.get(verdict, verdict)].append((a, b))
    return judged
