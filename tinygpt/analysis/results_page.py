"""The results page of ``python -m tinygpt claims``: every claim measured on the sweeps, the
tables, the text between the page's results markers, the pictures, and every number as JSON."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinygpt.analysis.attention import head_statistics_figure
from tinygpt.analysis.curves import plot_epoch_curves, plot_val_bands
from tinygpt.analysis.decoding import (
    NOTEBOOK_TABLE,
    DecoderResult,
    compare_decoding,
    decoding_table,
    write_decoding_report,
)
from tinygpt.analysis.notebook_claims import (
    CONVERGENCE_EPOCH,
    CONVERGENCE_TOLERANCE,
    DECODING_MEASURES,
    KINDS,
    TIME_RATIO,
    TIME_TOLERANCE,
    Claim,
    Setting,
    decoding_verdicts,
    load_setting,
    measure_claims,
    measure_setting,
    time_per_token_ratio,
)
from tinygpt.analysis.runs import Run, training_text
from tinygpt.analysis.verdicts import RULE, Stat
from tinygpt.analysis.writing import (
    END_MARKER,
    START_MARKER,
    jsonable,
    markdown_table,
    replace_section,
    save_figure,
)
from tinygpt.checkpoint import load_model
from tinygpt.files import write_text_atomic

COMMAND = "python -m tinygpt claims"


def notebook_table() -> str:
    """The notebook's table of decoding strategies, as it is written."""
    header = ["strategy", "coherence", "diversity", "recommended use"]
    rows = [[r.label, r.coherence, r.diversity, r.use] for r in NOTEBOOK_TABLE]
    return markdown_table(header, rows)


def decoding_claims_table(rows: Sequence[dict[str, Any]]) -> str:
    titles = [f"{axis}: {title}" for title, axis, _ in DECODING_MEASURES.values()]
    header = ["strategy", "the notebook: coherence / diversity", *titles]
    table = []
    for row in rows:
        cells = [row["strategy"], row["claimed"]]
        for key in DECODING_MEASURES:
            m = row["measures"][key]
            cells.append(
                f"{Stat(m['mean'], m['std'], m['n']).fmt(2)}: {m['level']}, {m['verdict']}"
            )
        table.append(cells)
    return markdown_table(header, table)


def claims_table(claims: Sequence[Claim]) -> str:
    header = ["the TinyGPT notebook", "measured (mean ± std over seeds)", "verdict"]
    rows = [[c.notebook, c.measured, f"**{c.verdict}**"] for c in claims]
    return markdown_table(header, rows)


def seeds_of(runs: Sequence[Run]) -> str:
    return f"{len(runs)} ({', '.join(str(r.seed) for r in runs)})"


def full_table(setting: Setting) -> str:
    header = "model | runs (seeds) | best val loss | final val loss | train tokens/s | "
    header += "time per token × dense | wall s | parameters"
    per_token = time_per_token_ratio(setting)
    rows = [
        [
            kind,
            seeds_of(runs),
            setting.stat(kind, "best_val_loss").fmt(),
            setting.stat(kind, "final_val_loss").fmt(),
            setting.stat(kind, "train_tokens_per_second").fmt(0),
            "1.00" if kind == "dense" else per_token.fmt(2),
            setting.stat(kind, "wall_seconds").fmt(1),
            f"{setting.stat(kind, 'parameters').mean:.0f}",
        ]
        for kind, runs in setting.runs.items()
    ]
    return markdown_table(header, rows, left=2)


def epochs_table(setting: Setting) -> str:
    header = "model | runs (seeds) | epoch of lowest val loss | lowest val loss | last epoch | "
    header += "val loss there | rise after the lowest | change over the last tenth | "
    header += "train loss there | train/val gap there"
    rows = []
    for kind, curves in setting.curves.items():
        columns = [
            ([c.best_epoch for c in curves], 1),
            ([c.best_val for c in curves], 3),
            ([c.epochs[-1] for c in curves], 0),
            ([c.val[-1] for c in curves], 3),
            ([c.rise for c in curves], 3),
            ([c.late_change for c in curves], 3),
            ([c.train[-1] for c in curves], 3),
            ([c.final_gap for c in curves], 3),
        ]
        cells = [Stat.of(values).fmt(digits) for values, digits in columns]
        rows.append([kind, seeds_of(setting.runs[kind]), *cells])
    return markdown_table(header, rows, left=2)


def attention_table(settings: Sequence[Setting]) -> str:
    """Per setting, model kind and layer: each head measure's mean over the layer's heads, and
    the standard deviation across them, each as mean ± std over seeds."""
    header = "setting | model | layer | entropy (nats) | its std across heads | distance (chars) | "
    header += "its std across heads | share on previous 1–3"
    rows = []
    for setting in settings:
        for kind, runs in setting.heads.items():
            for layer in range(runs[0]["entropy"].shape[0]):
                cells = []
                for key in ("entropy", "distance", "previous_3"):
                    heads = [stats[key][layer] for stats in runs]  # per seed
                    cells.append(Stat.of([float(h.mean()) for h in heads]).fmt(2))
                    if key != "previous_3":  # and the spread across the layer's heads
                        cells.append(Stat.of([float(h.std(unbiased=True)) for h in heads]).fmt(2))
                rows.append([setting.name, kind, str(layer), *cells])
    return markdown_table(header, rows, left=3)


def timing_table(timings: dict[str, float | None], settings: Sequence[Setting]) -> str:
    """The time each part took: each sweep's runs (the sum of their wall_seconds, whichever
    process ran them), and this command's measuring and writing."""
    rows = []
    for setting in settings:
        for kind, runs in setting.runs.items():
            total = sum(r.summary.get("wall_seconds") or 0.0 for r in runs)
            rows.append([f"training: {setting.name}, {kind}, {len(runs)} runs", f"{total:.0f}"])
    for part, seconds in timings.items():
        rows.append([part, "n/a" if seconds is None else f"{seconds:.0f}"])
    return markdown_table(["part", "seconds"], rows, left=1)


# --- the page ------------------------------------------------------------------------------

PAGE_INTRO = f"""# Results

The TinyGPT notebook's claims, each beside what this project measures and a verdict. Everything
between the two `results` markers below, and everything in [results/](results/), is written by
`{COMMAND}` ([how it works](analysis.md#the-notebooks-claims)).

"""


def page_body(
    claims: Sequence[Claim],
    decoding_rows: Sequence[dict[str, Any]],
    decoding: Sequence[DecoderResult],
    settings: dict[str, Setting],
    timings: dict[str, float | None],
    link: str,
    command: str,
) -> str:
    """The generated part of the results page; ``link`` prefixes the pictures' paths."""
    prefix = f"{link.rstrip('/')}/" if link else ""
    full, small = settings["full"], settings["notebook_100k"]
    n_seeds = len(full.runs["dense"])
    models = len({c["model"] for c in decoding[0].cells})
    cells = len(decoding[0].cells)
    samples = len(decoding[0].samples) // cells
    chars = len(decoding[0].samples[0]["text"])
    train_share = small.value("data.train_fraction")
    train_chars = int(train_share * small.value("data.max_chars"))
    about_epochs = (
        CONVERGENCE_EPOCH - CONVERGENCE_TOLERANCE,
        CONVERGENCE_EPOCH + CONVERGENCE_TOLERANCE,
    )
    about_time = (TIME_RATIO - TIME_TOLERANCE, TIME_RATIO + TIME_TOLERANCE)
    parts = [
        f"Regenerate with `{command}`: it trains what is missing (dense and MoE, {n_seeds} "
        "seeds, in two settings) and writes this page and its pictures; the time each part "
        "took is [at the end](#regeneration).",
        "## The notebook's claims, measured",
        f'{RULE} "About 15 epochs" is taken as {about_epochs[0]}–{about_epochs[1]} epochs, '
        f'"about 40% more" as {about_time[0]:.2f}–{about_time[1]:.2f} times the time per '
        "training token. The attention claims are measured on the models trained on all of "
        "TinyShakespeare (both settings are in the [attention table](#attention-per-head)).",
        claims_table(claims),
        "**Decoding strategies.** The notebook rates each strategy's coherence / diversity (its "
        "table is [quoted below](#decoding-strategies)). Each measure ranks the six "
        "strategies: the two lowest are low, the middle two medium, the two highest high (by NLL "
        "and by self-similarity, lower counts as more coherent and more diverse). The verdict: "
        "*agrees* when that level is the notebook's; *within noise* when it is not, but the "
        "strategy's mean is within noise (as above; the spread is over the "
        f"{cells} cells of {models} dense models × {cells // models} prompts) of a strategy "
        "measured at the notebook's level, so that the two could swap ranks; *disagrees* "
        "otherwise.",
        decoding_claims_table(decoding_rows),
        "## The 100k setting: loss per epoch",
        f"`experiment=notebook_100k`: the first {small.value('data.max_chars'):,} characters of "
        f"TinyShakespeare, split {train_share:.0%} / {1 - train_share:.0%}, the notebook's size; "
        f"an epoch is one pass over the {train_chars:,} training characters "
        f"({small.value('trainer.val_check_interval')} steps of "
        f"{small.value('data.batch_size')} × {small.value('model.block_size')} characters), "
        "validation after each, and a constant learning rate after the warm-up. Train loss "
        "per epoch is the mean over the epoch's steps.",
        f"![loss per epoch]({prefix}epochs.png)",
        epochs_table(small),
        f"Training speed in this setting: {setting_line(small)}.",
        "## All of TinyShakespeare: dense vs MoE",
        f"The notebook's size, {full.value('trainer.max_steps')} steps, validation every "
        f"{full.value('trainer.val_check_interval')} steps.",
        f"![val loss]({prefix}val_loss.png)",
        full_table(full),
        "## Attention per head",
        f"Each run's best checkpoint, on up to 64 windows of {full.value('model.block_size')} "
        "characters spread "
        "over its validation text. Entropy: of a query's attention, in nats (uniform attention "
        "over the visible characters has the most); distance: how far back the attended "
        "characters are, on average; share on previous 1–3: the attention on the three "
        "characters before the query (queries with three before them). Per layer: the mean "
        "over its heads and the standard deviation across them, each as mean ± std over seeds.",
        f"![attention per head]({prefix}attention.png)",
        attention_table(list(settings.values())),
        "## Decoding strategies",
        "The notebook's table, as written:",
        notebook_table(),
        f"Measured on the best checkpoints of the {models} dense runs on all of "
        f"TinyShakespeare: per model and prompt, a batch of {samples} samples of {chars} "
        "characters (seed 1). Each measure is the mean over a cell's samples (self-similarity: "
        f"over its pairs of samples), shown as mean ± std over the {cells} cells. Sampled "
        "entropy: of the distribution each character was drawn from, after temperature and "
        "filtering; self-similarity: the share of a sample's character 4-grams that another "
        "sample of its cell holds (1: identical samples). Mean distinct-2 is near 1 for every "
        "sampling strategy, so it cannot rank them.",
        decoding_table(decoding),
        f"![decoding]({prefix}decoding.png)",
        f"Samples: [decoding_samples.json]({prefix}decoding_samples.json); every number on "
        f"this page: [claims.json]({prefix}claims.json).",
        "## Regeneration",
        timing_table(timings, list(settings.values())),
        "Training times are the runs' own wall time, as each run's summary.json records it; "
        "this machine was shared with other work while they ran, so they are upper bounds.",
    ]
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


def setting_line(setting: Setting) -> str:
    parts = []
    for kind in KINDS:
        parts.append(
            f"{kind} {setting.stat(kind, 'train_tokens_per_second').fmt(0)} train tokens/s, "
            f"{setting.stat(kind, 'wall_seconds').fmt(1)} s per run"
        )
    per_token = time_per_token_ratio(setting)
    return "; ".join(parts) + f"; time per token MoE / dense {per_token.fmt(2)}"


def write_page(page: Path, body: str) -> None:
    """Replace the page's part between the results markers, or write a new page."""
    text = page.read_text() if page.is_file() else PAGE_INTRO + f"{START_MARKER}\n{END_MARKER}\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(replace_section(text, body))


def numbers(
    claims: Sequence[Claim],
    decoding_rows: Sequence[dict[str, Any]],
    settings: dict[str, Setting],
    timings: dict[str, float | None],
) -> dict[str, Any]:
    """Everything the page states, for claims.json: claims, decoding verdicts, every run."""
    runs = {}
    for name, setting in settings.items():
        runs[name] = {}
        for kind, kind_runs in setting.runs.items():
            runs[name][kind] = []
            for i, run in enumerate(kind_runs):
                entry = {"run": run.path.name, "seed": run.seed, "summary": run.summary}
                entry["attention"] = setting.heads[kind][i]
                if kind in setting.curves:
                    curve = setting.curves[kind][i]
                    entry["epochs"] = asdict(curve) | {"best_epoch": curve.best_epoch}
                runs[name][kind].append(entry)
    return jsonable(
        {
            "rule": RULE,
            "claims": [asdict(c) for c in claims],
            "decoding": list(decoding_rows),
            "runs": runs,
            "timings": timings,
        }
    )


def draw(settings: dict[str, Setting], out: Path) -> dict[str, Path]:
    full, small = settings["full"], settings["notebook_100k"]
    figure = head_statistics_figure(
        full.heads,
        title="Attention per head, all of TinyShakespeare: dots are heads, one colour per seed; "
        "bars: means",
    )
    return {
        "epochs": plot_epoch_curves(
            small.curves,
            out / "epochs.png",
            title="The 100k setting: loss per epoch, mean ± std over seeds; dots: each run's "
            "lowest val loss",
            mark_epoch=CONVERGENCE_EPOCH,
        ),
        "val_loss": plot_val_bands(
            {kind: [r.path for r in runs] for kind, runs in full.runs.items()},
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
    for setting in settings.values():
        measure_setting(setting)
    timings["measuring: attention and loss curves"] = time.time() - measuring

    decoding_started = time.time()
    dense = settings["full"].runs["dense"]
    models = [(f"seed {r.seed}", load_model(r.checkpoint())) for r in dense]
    text = training_text(dense[0].trained_config())
    decoding = compare_decoding(
        models, text, num_samples=num_samples, max_new_tokens=max_new_tokens
    )
    decoding_rows = decoding_verdicts(decoding)
    timings["decoding comparison"] = time.time() - decoding_started

    claims = measure_claims(settings)
    writing = time.time()
    written = draw(settings, out)
    written.update(write_decoding_report(decoding, out))
    timings["pictures and pages"] = time.time() - writing
    timings["this command, in all"] = time.time() - started
    link = os.path.relpath(out.resolve(), page.resolve().parent)
    body = page_body(claims, decoding_rows, decoding, settings, timings, link, command)
    write_page(page, body)
    written["results"], written["numbers"] = page, out / "claims.json"
    report = numbers(claims, decoding_rows, settings, timings)
    write_text_atomic(written["numbers"], json.dumps(report, indent=1) + "\n")
    return written
