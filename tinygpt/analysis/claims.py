"""The TinyGPT notebook's claims: quoted, measured on dense and MoE runs over seeds, judged, and
written as the results page of ``python -m tinygpt claims``.

A *setting* is one sweep: dense and MoE runs of the same recipe with several seeds. Each claim
becomes a :class:`Claim`: the notebook's words, the measurement (mean ± std over seeds) and a
verdict by the rule of :mod:`tinygpt.analysis.verdicts`; the decoding table's ratings are
judged pair by pair (:func:`~tinygpt.analysis.decoding.decoding_verdicts`). :func:`write_results`
measures the sweeps and writes the page between its results markers, the pictures, and every
number as ``claims.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.analysis.attention import head_statistics_figure
from tinygpt.analysis.decoding import (
    NOTEBOOK_QUOTE,
    DecoderResult,
    compare_runs,
    decoding_table,
    decoding_verdicts,
    verdicts_table,
    write_decoding_report,
)
from tinygpt.analysis.plots import EpochCurve, plot_epoch_curves, plot_val_curves, read_epoch_curve
from tinygpt.analysis.report import Group, attention_table, runs_table, seeds_of
from tinygpt.analysis.runs import find_runs
from tinygpt.analysis.verdicts import RULE, Stat, about, compare, noise
from tinygpt.analysis.writing import (
    END_MARKER,
    START_MARKER,
    jsonable,
    markdown_table,
    replace_section,
    save_figure,
)
from tinygpt.errors import DataError
from tinygpt.files import write_text_atomic

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


@dataclass
class Claim:
    """One row of the page: the notebook's words, what was measured, and the verdict."""

    key: str  # of QUOTES
    measured: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # the setting, after the quote
    notebook: str = field(init=False)

    def __post_init__(self) -> None:
        self.notebook = QUOTES[self.key] + self.where


Setting = dict[str, Group]  # a sweep's runs: one group per model kind
Curves = dict[str, list[EpochCurve]]  # the 100k setting's losses per epoch, per kind and run


def load_setting(name: str, sweep: Path, jobs: Collection[frozenset[str]]) -> Setting:
    """A sweep's runs of ``jobs`` (their overrides, ``ckpt_path`` aside: other settings' runs in
    the sweep are left out), one group per model kind with each run's attention per head; each
    kind must have run."""
    runs = [r for r in find_runs([sweep]) if r.job in jobs]
    setting = {}
    for kind in KINDS:
        found = [r for r in runs if r.ffn == kind]
        if not found:
            raise DataError(f"{sweep} holds no {kind} runs (python -m tinygpt claims trains them)")
        setting[kind] = Group(f"{name}, {kind}", found, [r.head_statistics() for r in found])
    return setting


def head_measure(group: Group, key: str, over: str = "mean") -> Stat:
    """Over seeds: each run's mean over its heads (``over="mean"``) or their standard deviation
    across heads (``over="spread"``) of a head measure."""
    values = []
    for stats in group.heads:
        flat = stats[key].flatten()
        values.append(float(flat.mean() if over == "mean" else flat.std(unbiased=True)))
    return Stat.of(values)


def paired_ratios(setting: Setting, key: str) -> list[float]:
    """MoE's value of ``key`` over dense's, for each seed both kinds ran."""
    dense = {r.seed: r.summary.get(key) for r in setting["dense"].runs}
    moe = {r.seed: r.summary.get(key) for r in setting["moe"].runs}
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
    return Claim(key, measured, compare(stat_a, stat_b, claimed), numbers, where)


def loss_claim(setting: Setting, where: str) -> Claim:
    moe = ("MoE", setting["moe"].stat("best_val_loss"))
    dense = ("dense", setting["dense"].stat("best_val_loss"))
    return versus("moe_loss", "best val loss", moe, dense, "lower", where=f" ({where})")


def epoch_claims(curves: Sequence[EpochCurve]) -> list[Claim]:
    """Convergence and overfitting, from the dense runs' losses per epoch."""
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
            f"lowest val loss at epoch {best.fmt(1)} (runs: {epochs}) of {last}; about 15 taken "
            f"as {low}–{high}",
            about(best, CONVERGENCE_EPOCH, CONVERGENCE_TOLERANCE),
            {"best_epoch": asdict(best)},
        ),
        Claim(
            "overfits",
            f"val loss over the last {tenth} epochs minus the {tenth} before: {change.fmt()} "
            f"(rising: overfitting); at epoch {last} it is {rise.fmt()} above its lowest, and "
            f"{gap.fmt()} above the train loss",
            compare(change, Stat(0.0, 0.0, 1), "higher"),
            {"late_change": asdict(change), "rise": asdict(rise), "gap": asdict(gap)},
        ),
    ]


def attention_claims(setting: Setting) -> list[Claim]:
    def kinds(key: str, over: str = "mean") -> tuple[tuple[str, Stat], tuple[str, Stat]]:
        dense, moe = (head_measure(setting[kind], key, over) for kind in KINDS)
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
        f"time per training token, MoE / dense, per seed: {per_token.fmt(2)} (about 1.40 taken "
        f"as {low:.2f}–{high:.2f}); whole runs' wall time {wall.fmt(2)}",
        about(per_token, TIME_RATIO, TIME_TOLERANCE),
        {"per_token": asdict(per_token), "wall": asdict(wall)},
    )


def measure_claims(settings: dict[str, Setting], curves: Curves) -> list[Claim]:
    """Every claim but the decoding table's, in the page's order: the 100k setting's epochs,
    MoE's val loss in both settings, then attention and speed on all of TinyShakespeare."""
    full, small = settings["full"], settings["notebook_100k"]
    attention = attention_claims(full)
    return [
        *epoch_claims(curves["dense"]),
        loss_claim(full, "all of TinyShakespeare"),
        loss_claim(small, "the 100k setting"),
        *attention[:2],
        time_claim(full),
        *attention[2:],
    ]


def claims_table(claims: Sequence[Claim]) -> str:
    header = ["the TinyGPT notebook", "measured (mean ± std over seeds)", "verdict"]
    rows = [[c.notebook, c.measured, f"**{c.verdict}**"] for c in claims]
    return markdown_table(header, rows)


def epochs_table(setting: Setting, curves: Curves) -> str:
    header = "model | runs (seeds) | epoch of lowest val loss | lowest val loss | last epoch | "
    header += "val loss there | rise after the lowest | change over the last tenth | "
    header += "train loss there | train/val gap there"
    rows = []
    for kind, kind_curves in curves.items():
        columns = [
            ([c.best_epoch for c in kind_curves], 1),
            ([c.best_val for c in kind_curves], 3),
            ([c.epochs[-1] for c in kind_curves], 0),
            ([c.val[-1] for c in kind_curves], 3),
            ([c.rise for c in kind_curves], 3),
            ([c.late_change for c in kind_curves], 3),
            ([c.train[-1] for c in kind_curves], 3),
            ([c.final_gap for c in kind_curves], 3),
        ]
        cells = [Stat.of(values).fmt(digits) for values, digits in columns]
        rows.append([kind, seeds_of(setting[kind].runs), *cells])
    return markdown_table(header, rows, left=2)


def timing_table(timings: dict[str, float | None], settings: dict[str, Setting]) -> str:
    """The time each part took: each sweep's runs (the sum of their wall_seconds, whichever
    process ran them), and this command's measuring and writing."""
    rows = []
    for name, setting in settings.items():
        for kind, group in setting.items():
            total = sum(r.summary.get("wall_seconds") or 0.0 for r in group.runs)
            rows.append([f"training: {name}, {kind}, {len(group.runs)} runs", f"{total:.0f}"])
    for part, seconds in timings.items():
        rows.append([part, "n/a" if seconds is None else f"{seconds:.0f}"])
    return markdown_table(["part", "seconds"], rows, left=1)


def setting_line(setting: Setting) -> str:
    parts = []
    for kind in KINDS:
        speed, wall = (setting[kind].stat(k) for k in ("train_tokens_per_second", "wall_seconds"))
        parts.append(f"{kind} {speed.fmt(0)} train tokens/s, {wall.fmt(1)} s per run")
    per_token = time_per_token_ratio(setting)
    return "; ".join(parts) + f"; time per token MoE / dense {per_token.fmt(2)}"


# --- the page ------------------------------------------------------------------------------

# The page as a new one reads, with {placeholders}; an existing page gets its part between the
# results markers.
PAGE_TEMPLATE = Path(__file__).with_name("results_page.md")


def results_page(
    claims: Sequence[Claim],
    decoding_rows: Sequence[dict[str, Any]],
    decoding: Sequence[DecoderResult],
    settings: dict[str, Setting],
    curves: Curves,
    timings: dict[str, float | None],
    link: str,
    command: str,
) -> str:
    """The results page: :data:`PAGE_TEMPLATE` filled in; ``link`` prefixes the pictures'
    paths. The template reads each setting's config as ``{small[...]}`` and ``{full[...]}``."""
    full, small = settings["full"], settings["notebook_100k"]
    small_config = small["dense"].runs[0].trained_config()
    cells, models = len(decoding[0].cells), len({c["model"] for c in decoding[0].cells})
    train_share = small_config["data"]["train_fraction"]
    tables = {
        "claims_table": claims_table(claims),
        "verdicts_table": verdicts_table(decoding_rows),
        "epochs_table": epochs_table(small, curves),
        "full_table": runs_table(list(full.values())),
        "attention_table": attention_table([g for s in settings.values() for g in s.values()]),
        "notebook_quote": NOTEBOOK_QUOTE,
        "decoding_table": decoding_table(decoding),
        "timing_table": timing_table(timings, settings),
    }
    return PAGE_TEMPLATE.read_text().format(
        command=command,
        prefix=f"{link.rstrip('/')}/" if link else "",
        rule=RULE,
        n_seeds=len(full["dense"].runs),
        epochs_low=CONVERGENCE_EPOCH - CONVERGENCE_TOLERANCE,
        epochs_high=CONVERGENCE_EPOCH + CONVERGENCE_TOLERANCE,
        time_low=TIME_RATIO - TIME_TOLERANCE,
        time_high=TIME_RATIO + TIME_TOLERANCE,
        cells=cells,
        models=models,
        prompts=cells // models,
        samples=len(decoding[0].samples) // cells,
        chars=len(decoding[0].samples[0]["text"]),
        small=small_config,
        full=full["dense"].runs[0].trained_config(),
        val_share=1 - train_share,
        train_chars=int(train_share * small_config["data"]["max_chars"]),
        speed=setting_line(small),
        **{name: table.strip("\n") for name, table in tables.items()},
    )


def numbers(
    claims: Sequence[Claim],
    decoding_rows: Sequence[dict[str, Any]],
    settings: dict[str, Setting],
    curves: Curves,
    timings: dict[str, float | None],
) -> dict[str, Any]:
    """Everything the page states, for claims.json: claims, decoding verdicts, every run."""
    runs: dict[str, dict[str, list]] = {}
    for name, setting in settings.items():
        for kind, group in setting.items():
            entries = runs.setdefault(name, {}).setdefault(kind, [])
            for i, run in enumerate(group.runs):
                entry = {"run": run.dir.name, "seed": run.seed, "summary": run.summary}
                entry["attention"] = group.heads[i]
                if name == "notebook_100k":
                    curve = curves[kind][i]
                    entry["epochs"] = asdict(curve) | {"best_epoch": curve.best_epoch}
                entries.append(entry)
    return jsonable(
        {
            "rule": RULE,
            "claims": [asdict(c) for c in claims],
            "decoding": list(decoding_rows),
            "runs": runs,
            "timings": timings,
        }
    )


def draw(settings: dict[str, Setting], curves: Curves, out: Path) -> dict[str, Path]:
    full = settings["full"]
    figure = head_statistics_figure(
        {kind: group.heads for kind, group in full.items()},
        title="Attention per head, all of TinyShakespeare: dots are heads, one colour per seed; "
        "bars: means",
    )
    return {
        "epochs": plot_epoch_curves(
            curves,
            out / "epochs.png",
            title="The 100k setting: loss per epoch, mean ± std over seeds; dots: each run's "
            "lowest val loss",
            mark_epoch=CONVERGENCE_EPOCH,
        ),
        "val_loss": plot_val_curves(
            {kind: [r.dir for r in group.runs] for kind, group in full.items()},
            out / "val_loss.png",
            title="All of TinyShakespeare: val loss, mean ± std over seeds",
        ),
        "attention": save_figure(figure, out / "attention.png"),
    }


def write_results(
    sweeps: dict[str, tuple[Path, Collection[frozenset[str]]]],
    out: Path,
    page: Path,
    command: str,
    timings: dict[str, float | None],
    started: float,
    num_samples: int,
    max_new_tokens: int,
) -> dict[str, Path]:
    """Measure every claim on the runs of ``sweeps`` (setting name -> its sweep directory and the
    overrides of its jobs), then write the pictures, ``claims.json``, the decoding files and the
    page, which says to regenerate it with ``command`` and states ``timings`` (the training's,
    given; the rest measured here, ``started`` being when the command started)."""
    measuring = time.time()
    settings = {name: load_setting(name, *sweep) for name, sweep in sweeps.items()}
    small = settings["notebook_100k"]
    curves = {kind: [read_epoch_curve(r.dir) for r in g.runs] for kind, g in small.items()}
    timings["measuring: attention and loss curves"] = time.time() - measuring

    decoding_started = time.time()
    dense = settings["full"]["dense"].runs
    decoding = compare_runs(dense, num_samples=num_samples, max_new_tokens=max_new_tokens)
    decoding_rows = decoding_verdicts(decoding)
    timings["decoding comparison"] = time.time() - decoding_started

    claims = measure_claims(settings, curves)
    writing = time.time()
    written = draw(settings, curves, out)
    written.update(write_decoding_report(decoding, out))
    timings["pictures and pages"] = time.time() - writing
    timings["this command, in all"] = time.time() - started
    link = os.path.relpath(out.resolve(), page.resolve().parent)
    new = results_page(claims, decoding_rows, decoding, settings, curves, timings, link, command)
    body = new.split(START_MARKER)[1].split(END_MARKER)[0]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(replace_section(page.read_text() if page.is_file() else new, body))
    written["results"], written["numbers"] = page, out / "claims.json"
    report = numbers(claims, decoding_rows, settings, curves, timings)
    write_text_atomic(written["numbers"], json.dumps(report, indent=1) + "\n")
    return written
