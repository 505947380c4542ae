"""The TinyGPT notebook's claims, quoted, and measured on dense and MoE runs over seeds.

A *setting* is one sweep: dense and MoE runs of the same recipe with several seeds. Each claim
becomes a :class:`Claim`: the notebook's words, the measurement (mean ± std over seeds) and a
verdict by the rule of :mod:`tinygpt.analysis.verdicts`. The decoding table's ratings are judged
by :func:`decoding_verdicts`. ``python -m tinygpt.claims`` (:mod:`tinygpt.analysis.claims`)
trains the runs and writes the page (:mod:`tinygpt.analysis.results_page`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.analysis.attention import head_statistics
from tinygpt.analysis.curves import EpochCurve, read_epoch_curve
from tinygpt.analysis.decoding_report import StrategyResult, training_text, validation_text
from tinygpt.analysis.report import ReportError, Run, best_checkpoint, find_runs
from tinygpt.analysis.verdicts import Stat, about, compare, noise, rating_verdict
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint, load_model

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


class ClaimsError(ReportError):
    """A sweep without the runs a claim needs."""


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


# --- measuring -----------------------------------------------------------------------------


def load_setting(name: str, sweep: Path, jobs: Collection[frozenset[str]] | None = None) -> Setting:
    """A sweep's runs, dense and MoE apart; each kind must have run. ``jobs``: the overrides of
    the runs to keep (``ckpt_path`` aside), leaving out runs of other settings in the sweep."""
    runs = find_runs([sweep])
    if jobs is not None:
        wanted = set(jobs)
        runs = [
            r
            for r in runs
            if frozenset(o for o in r.overrides if not o.startswith("ckpt_path=")) in wanted
        ]
    by_kind = {kind: [r for r in runs if r.ffn == kind] for kind in KINDS}
    for kind, found in by_kind.items():
        if not found:
            raise ClaimsError(
                f"{sweep} holds no {kind} runs (python -m tinygpt.claims trains them)"
            )
    return Setting(name, sweep, by_kind)


def run_text(run: Run) -> tuple[str, dict]:
    """The text a run trained on, and its resolved config (from its best checkpoint)."""
    config = load_checkpoint(best_checkpoint(run))[CHECKPOINT_KEY].get("config") or run.config
    return training_text(config), config


def measure_setting(setting: Setting) -> None:
    """Per run: the attention per head on its validation text; for runs that logged losses per
    epoch, their curves."""
    for kind, runs in setting.runs.items():
        setting.heads[kind] = []
        for run in runs:
            text, config = run_text(run)
            setting.config = setting.config or config
            model = load_model(best_checkpoint(run))
            stats = head_statistics(model, validation_text(text, config))
            setting.heads[kind].append(stats)
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


def _difference(a: Stat, b: Stat, digits: int = 3) -> str:
    return f"difference {a.mean - b.mean:+.{digits}f}, noise {noise(a, b):.{digits}f}"


def loss_claim(setting: Setting, key: str = "best_val_loss") -> Claim:
    dense, moe = setting.stat("dense", key), setting.stat("moe", key)
    where = "all of TinyShakespeare" if setting.name == "full" else "the 100k setting"
    return Claim(
        "moe_loss",
        QUOTES["moe_loss"] + f" ({where})",
        f"best val loss: MoE {moe.fmt()} vs dense {dense.fmt()} ({_difference(moe, dense)})",
        compare(moe, dense, "lower"),
        {"moe": asdict(moe), "dense": asdict(dense)},
    )


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
    claims = []
    for key, unit in (("entropy", "nats"), ("distance", "characters")):
        dense = head_measure(setting, "dense", key, "spread")
        moe = head_measure(setting, "moe", key, "spread")
        claims.append(
            Claim(
                "moe_heads",
                QUOTES["moe_heads"],
                f"std across a model's heads of their mean {key} ({unit}): MoE {moe.fmt(3)} vs "
                f"dense {dense.fmt(3)} ({_difference(moe, dense, 3)})",
                compare(moe, dense, "higher"),
                {
                    "measure": f"{key} spread across heads",
                    "moe": asdict(moe),
                    "dense": asdict(dense),
                },
            )
        )
    dense, moe = head_measure(setting, "dense", "entropy"), head_measure(setting, "moe", "entropy")
    claims.append(
        Claim(
            "dense_uniform",
            QUOTES["dense_uniform"],
            f"mean attention entropy: dense {dense.fmt(3)} vs MoE {moe.fmt(3)} nats "
            f"({_difference(dense, moe, 3)})",
            compare(dense, moe, "higher"),
            {"dense": asdict(dense), "moe": asdict(moe)},
        )
    )
    for key, claimed, text in (
        ("previous_3", "higher", "share of attention on the previous 1–3 characters"),
        ("distance", "lower", "mean attended distance (characters)"),
    ):
        dense, moe = head_measure(setting, "dense", key), head_measure(setting, "moe", key)
        claims.append(
            Claim(
                "dense_adjacent",
                QUOTES["dense_adjacent"],
                f"{text}: dense {dense.fmt(3)} vs MoE {moe.fmt(3)} ({_difference(dense, moe, 3)})",
                compare(dense, moe, claimed),
                {"measure": key, "dense": asdict(dense), "moe": asdict(moe)},
            )
        )
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


# --- decoding ------------------------------------------------------------------------------

DECODING_MEASURES = {
    "known_words": ("known-word share", "coherence", +1),
    "nll": ("NLL (nats/char)", "coherence", -1),
    "entropy": ("sampled entropy (nats/char)", "diversity", +1),
    "self_similarity": ("self-similarity", "diversity", -1),
}


def decoding_verdicts(results: Sequence[StrategyResult]) -> list[dict[str, Any]]:
    """Per strategy and measure of :data:`DECODING_MEASURES`: its value, the level its rank
    gives it on its axis, and the verdict on the notebook's level
    (:func:`~tinygpt.analysis.verdicts.rating_verdict`)."""
    rows = [
        {"strategy": r.strategy.name, "claimed": r.strategy.claim, "measures": {}} for r in results
    ]
    for key, (_, axis, sign) in DECODING_MEASURES.items():
        stats = [r.stat(key) for r in results]
        oriented = [Stat(sign * s.mean, s.std, s.n) for s in stats]  # higher = more of the axis
        for i, r in enumerate(results):
            claimed = r.strategy.claimed[0 if axis == "coherence" else 1]
            level, verdict = rating_verdict(i, oriented, claimed)
            rows[i]["measures"][key] = {
                **asdict(stats[i]),
                "axis": axis,
                "level": level,
                "verdict": verdict,
            }
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
