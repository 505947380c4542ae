"""The TinyGPT notebook's claims, quoted, and measured on dense and MoE runs over seeds.

A *setting* is one sweep: dense and MoE runs of the same recipe with several seeds. Each claim
becomes a :class:`Claim`: the notebook's words, the measurement (mean ± std over seeds) and a
verdict by the rule of :mod:`tinygpt.analysis.verdicts`. The decoding table's ratings are judged
by :func:`decoding_verdicts`; :mod:`tinygpt.analysis.results_page` writes the page.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.analysis.attention import head_statistics
from tinygpt.analysis.curves import EpochCurve, read_epoch_curve
from tinygpt.analysis.decoding import DecoderResult
from tinygpt.analysis.runs import Run, find_runs, training_text, validation_text
from tinygpt.analysis.verdicts import Stat, about, compare, noise, rating_verdict
from tinygpt.checkpoint import load_model
from tinygpt.errors import DataError

KINDS = ("dense", "moe")
# "about": the tolerance each claim's word is given (stated on the page).
CONVERGENCE_EPOCH, CONVERGENCE_TOLERANCE = 15, 5
TIME_RATIO, TIME_TOLERANCE = 1.40, 0.10
# The notebook's claims, quoted.
QUOTES = {
    "converges": 'The dense model "converges stably in about 15 epochs" on "TinyShakespeare '
    '(100k characters)"',
    "overfits": 'The dense model "tends to overfit"',
    "moe_loss": 'MoE gives "a slight improvement in validation loss"',
    "moe_heads": 'MoE has "more diverse attention patterns, with specialisation by head"',
    "moe_time": 'MoE costs "about 40% more training time" (routing overhead)',
    "dense_uniform": 'The dense model\'s attention is "more uniform"',
    "dense_adjacent": 'The dense model\'s attention "focuses on adjacent tokens"',
}
# The decoding measures the ratings are judged by: (title, axis, sign: +1 where higher is more).
DECODING_MEASURES = {
    "known_words": ("known-word share", "coherence", +1),
    "nll": ("NLL (nats/char)", "coherence", -1),
    "entropy": ("sampled entropy (nats/char)", "diversity", +1),
    "self_similarity": ("self-similarity", "diversity", -1),
}


@dataclass
class Claim:
    """One row of the page: the notebook's words, what was measured, and the verdict."""

    key: str
    notebook: str
    measured: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setting:
    """A sweep's runs by model kind, with what was measured on each run."""

    name: str
    sweep: Path
    runs: dict[str, list[Run]]
    curves: dict[str, list[EpochCurve]] = field(default_factory=dict)
    heads: dict[str, list[dict]] = field(default_factory=dict)  # kind -> per run: (L, H) tensors
    config: dict[str, Any] = field(default_factory=dict)  # a run's resolved config

    def value(self, dotted: str) -> Any:
        """A value of the runs' resolved config, e.g. ``data.batch_size``."""
        node: Any = self.config
        for key in dotted.split("."):
            node = (node or {}).get(key)
        return node

    def stat(self, kind: str, key: str) -> Stat:
        """A summary.json value of this kind's runs over seeds."""
        return Stat.of([r.summary.get(key) for r in self.runs[kind]])


def load_setting(name: str, sweep: Path, jobs: Collection[frozenset[str]] | None = None) -> Setting:
    """A sweep's runs, dense and MoE apart; each kind must have run. ``jobs``: the overrides of
    the runs to keep (``ckpt_path`` aside), leaving out runs of other settings in the sweep."""
    runs = [r for r in find_runs([sweep]) if jobs is None or r.job in jobs]
    by_kind = {kind: [r for r in runs if r.ffn == kind] for kind in KINDS}
    for kind, found in by_kind.items():
        if not found:
            raise DataError(f"{sweep} holds no {kind} runs (python -m tinygpt claims trains them)")
    return Setting(name, sweep, by_kind)


def measure_setting(setting: Setting) -> None:
    """Per run: the attention per head on its validation text; for runs that logged losses per
    epoch, their curves."""
    for kind, runs in setting.runs.items():
        setting.heads[kind] = []
        for run in runs:
            config = run.trained_config()
            setting.config = setting.config or config
            text = validation_text(training_text(config), config)
            setting.heads[kind].append(head_statistics(load_model(run.checkpoint()), text))
        if setting.name == "notebook_100k":
            setting.curves[kind] = [read_epoch_curve(r.path) for r in runs]


def head_measure(setting: Setting, kind: str, key: str, over: str = "mean") -> Stat:
    """Over seeds: each run's mean over its heads (``over="mean"``) or their standard deviation
    across heads (``over="spread"``) of a head measure."""
    values = []
    for stats in setting.heads[kind]:
        flat = stats[key].flatten()
        values.append(float(flat.mean() if over == "mean" else flat.std(unbiased=True)))
    return Stat.of(values)


def paired_ratios(setting: Setting, key: str) -> list[float]:
    """MoE's value of ``key`` over dense's, for each seed both kinds ran."""
    dense = {r.seed: r.summary.get(key) for r in setting.runs["dense"]}
    moe = {r.seed: r.summary.get(key) for r in setting.runs["moe"]}
    return [moe[s] / dense[s] for s in sorted(set(dense) & set(moe)) if moe[s] and dense[s]]


def time_per_token_ratio(setting: Setting) -> Stat:
    """MoE's time per training token over dense's, per seed (the inverse of their tokens/s):
    validation and pictures left out."""
    return Stat.of([1 / r for r in paired_ratios(setting, "train_tokens_per_second")])


def versus(
    key: str,
    text: str,
    a: tuple[str, Stat],
    b: tuple[str, Stat],
    claimed: str,
    numbers: dict[str, Any] | None = None,
    unit: str = "",
    where: str = "",
) -> Claim:
    """The claim ``key`` that ``a`` is ``claimed`` ("lower" or "higher") than ``b``, each a
    (name, Stat) pair, measured as "TEXT: A mean ± std vs B mean ± std (difference, noise)"."""
    (name_a, stat_a), (name_b, stat_b) = a, b
    measured = (
        f"{text}: {name_a} {stat_a.fmt()} vs {name_b} {stat_b.fmt()}{unit} "
        f"(difference {stat_a.mean - stat_b.mean:+.3f}, noise {noise(stat_a, stat_b):.3f})"
    )
    numbers = {**(numbers or {}), name_a.lower(): asdict(stat_a), name_b.lower(): asdict(stat_b)}
    return Claim(key, QUOTES[key] + where, measured, compare(stat_a, stat_b, claimed), numbers)


def loss_claim(setting: Setting) -> Claim:
    where = "all of TinyShakespeare" if setting.name == "full" else "the 100k setting"
    moe = ("MoE", setting.stat("moe", "best_val_loss"))
    dense = ("dense", setting.stat("dense", "best_val_loss"))
    return versus("moe_loss", "best val loss", moe, dense, "lower", where=f" ({where})")


def epoch_claims(setting: Setting) -> list[Claim]:
    curves = setting.curves["dense"]
    best = Stat.of([c.best_epoch for c in curves])
    change = Stat.of([c.late_change for c in curves])
    rise = Stat.of([c.rise for c in curves])
    gap = Stat.of([c.final_gap for c in curves])
    last = max(c.epochs[-1] for c in curves)
    tenth = max(1, last // 10)
    low, high = CONVERGENCE_EPOCH - CONVERGENCE_TOLERANCE, CONVERGENCE_EPOCH + CONVERGENCE_TOLERANCE
    epochs = ", ".join(str(c.best_epoch) for c in curves)
    return [
        Claim(
            "converges",
            QUOTES["converges"],
            f"lowest val loss at epoch {best.fmt(1)} (runs: {epochs}) of {last}; about 15 taken "
            f"as {low}–{high}",
            about(best, CONVERGENCE_EPOCH, CONVERGENCE_TOLERANCE),
            {"best_epoch": asdict(best)},
        ),
        Claim(
            "overfits",
            QUOTES["overfits"],
            f"val loss over the last {tenth} epochs minus the {tenth} before: {change.fmt()} "
            f"(rising: overfitting); at epoch {last} it is {rise.fmt()} above its lowest, and "
            f"{gap.fmt()} above the train loss",
            compare(change, Stat(0.0, 0.0, 1), "higher"),
            {"late_change": asdict(change), "rise": asdict(rise), "gap": asdict(gap)},
        ),
    ]


def attention_claims(setting: Setting) -> list[Claim]:
    def kinds(key: str, over: str = "mean") -> tuple[tuple[str, Stat], tuple[str, Stat]]:
        dense, moe = (head_measure(setting, kind, key, over) for kind in KINDS)
        return ("dense", dense), ("MoE", moe)

    claims = []
    for key, unit in (("entropy", "nats"), ("distance", "characters")):
        dense, moe = kinds(key, "spread")
        text = f"std across a model's heads of their mean {key} ({unit})"
        measure = {"measure": f"{key} spread across heads"}
        claims.append(versus("moe_heads", text, moe, dense, "higher", measure))
    dense, moe = kinds("entropy")
    text = "mean attention entropy"
    claims.append(versus("dense_uniform", text, dense, moe, "higher", unit=" nats"))
    for key, claimed, text in (
        ("previous_3", "higher", "share of attention on the previous 1–3 characters"),
        ("distance", "lower", "mean attended distance (characters)"),
    ):
        claims.append(versus("dense_adjacent", text, *kinds(key), claimed, {"measure": key}))
    return claims


def time_claim(setting: Setting) -> Claim:
    per_token = time_per_token_ratio(setting)
    wall = Stat.of(paired_ratios(setting, "wall_seconds"))
    low, high = TIME_RATIO - TIME_TOLERANCE, TIME_RATIO + TIME_TOLERANCE
    return Claim(
        "moe_time",
        QUOTES["moe_time"],
        f"time per training token, MoE / dense, per seed: {per_token.fmt(2)} (about 1.40 taken "
        f"as {low:.2f}–{high:.2f}); whole runs' wall time {wall.fmt(2)}",
        about(per_token, TIME_RATIO, TIME_TOLERANCE),
        {"per_token": asdict(per_token), "wall": asdict(wall)},
    )


def decoding_verdicts(results: Sequence[DecoderResult]) -> list[dict[str, Any]]:
    """Per decoder and measure of :data:`DECODING_MEASURES`: its value, the level its rank gives
    it on its axis, and the verdict on the notebook's level
    (:func:`~tinygpt.analysis.verdicts.rating_verdict`)."""
    rows = [{"strategy": r.row.name, "claimed": r.row.rating, "measures": {}} for r in results]
    for key, (_, axis, sign) in DECODING_MEASURES.items():
        stats = [r.stat(key) for r in results]
        oriented = [Stat(sign * s.mean, s.std, s.n) for s in stats]  # higher = more of the axis
        for i, r in enumerate(results):
            level, verdict = rating_verdict(i, oriented, getattr(r.row, axis))
            judged = {"axis": axis, "level": level, "verdict": verdict}
            rows[i]["measures"][key] = {**asdict(stats[i]), **judged}
    return rows


def measure_claims(settings: dict[str, Setting]) -> list[Claim]:
    """Every claim but the decoding table's, in the page's order: the 100k setting's epochs,
    MoE's val loss in both settings, then attention and speed on all of TinyShakespeare."""
    full, small = settings["full"], settings["notebook_100k"]
    attention = attention_claims(full)
    return [
        *epoch_claims(small),
        loss_claim(full),
        loss_claim(small),
        *attention[:2],
        time_claim(full),
        *attention[2:],
    ]
