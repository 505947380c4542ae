"""Dense vs MoE (or any groups of runs) report, in one command.

    python -m tinygpt.report --sweep outputs/multirun/<date_time> --out report/
    python -m tinygpt.report RUN_DIR [RUN_DIR ...] --results my_results.md
    python -m tinygpt.report --sweep outputs/multirun/cmp \\
        --run "model=dense,moe seed=1,2,3 trainer.max_steps=2000"   # train the sweep first

``--run`` trains in this process (tinygpt.cli.train), so it needs a checkout's conf/; a report
over finished runs needs only the package. (The TinyGPT notebook's claims, with verdicts, and
docs/results.md: ``python -m tinygpt.claims``.)

Runs are grouped by model kind (``model.ffn`` in the run's ``.hydra/config.yaml``) and by the
overrides that differ between them, seeds and paths aside. Per group: best and final val loss
(mean ± sample std over seeds), wall time and train tokens/s with their ratio to the first group
(dense where there is one), parameters, the attention entropy per head of the best checkpoints
(:func:`~tinygpt.analysis.attention.head_statistics` on the validation text), and the expert
load where the runs logged ``moe/layer{l}/load/expert{e}``. Then the decoding comparison
(:mod:`tinygpt.analysis.decoding_report`) on the best checkpoints of the first dense group's
runs. Writes ``report.md``, ``val_loss.png``, ``decoding.png``, ``decoding.md`` and
``decoding_samples.json`` into ``--out``; ``--results`` writes a results page (its pictures
linked from it), ``--readme`` a page's part between ``<!-- results:start -->`` and
``<!-- results:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinygpt.analysis.attention import head_statistics
from tinygpt.analysis.decoding_report import (
    DEFAULT_MAX_NEW_TOKENS,
    StrategyResult,
    compare_decoding,
    strategies_table,
    training_text,
    validation_text,
    write_decoding_report,
)
from tinygpt.analysis.plots import plot_val_curves, read_scalars
from tinygpt.checkpoint import CHECKPOINT_KEY, load_checkpoint, load_model
from tinygpt.cli.errors import user_errors
from tinygpt.cli.quoting import hydra_value
from tinygpt.errors import TinyGPTError

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
DEFAULT_OUT = Path("report")
# Overrides that never make runs different models: seeds and where things are read or written
# (these, and hydra.* and paths.* keys).
NEUTRAL_KEYS = ("seed", "data.path", "data.cache_dir", "ckpt_path", "trainer.default_root_dir")
EXPERT_LOAD = re.compile(r"^moe/layer(\d+)/load/expert(\d+)$")


class ReportError(TinyGPTError):
    """Run directories that are missing, empty or unreadable, or a README without markers."""


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    overrides: list[str]

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def ffn(self) -> str:
        return str((self.config.get("model") or {}).get("ffn", "dense"))

    @property
    def model_overrides(self) -> tuple[str, ...]:
        """The overrides that may change the model or its training, sorted."""
        kept = []
        for override in self.overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key in NEUTRAL_KEYS or key.startswith(("hydra.", "paths.")):
                continue
            kept.append(override)
        return tuple(sorted(kept))


@dataclass
class Group:
    label: str
    runs: list[Run]
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (mean, std)
    entropy: list[list[float]] | None = None  # [layer][head], mean over runs
    expert_load: dict[int, dict[int, float]] | None = None  # layer -> expert -> mean share


# --- reading runs ---------------------------------------------------------------------------


def load_run(path: Path) -> Run:
    summary_path = path / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{summary_path}: not a readable summary ({exc})") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_path}: not a summary (expected a JSON object)")
    config, overrides = {}, []
    hydra_dir = path / ".hydra"
    try:
        if (hydra_dir / "config.yaml").is_file():
            config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
        if (hydra_dir / "overrides.yaml").is_file():
            overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
    except yaml.YAMLError as exc:
        raise ReportError(f"{hydra_dir}: unreadable Hydra config ({exc})") from None
    return Run(path, summary, config, [str(o) for o in overrides])


def _job_order(path: Path) -> tuple[int, str]:
    number = path.name.split("_", 1)[0]
    return (int(number) if number.isdigit() else 1 << 30, path.name)


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Runs from run directories (holding ``summary.json``) or sweep directories (whose
    subdirectories hold it), in the order given, a sweep's jobs in job-number order."""
    runs = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise ReportError(f"run or sweep directory not found: {path}")
        if not path.is_dir():
            raise ReportError(f"not a directory: {path} (give a run or sweep directory)")
        if (path / "summary.json").is_file():
            runs.append(load_run(path))
            continue
        jobs = sorted((p for p in path.iterdir() if (p / "summary.json").is_file()), key=_job_order)
        if not jobs:
            raise ReportError(
                f"{path} holds no runs: no summary.json in it or its subdirectories "
                "(run the sweep first, e.g. python train.py -m model=dense,moe seed=1,2,3)"
            )
        runs.extend(load_run(job) for job in jobs)
    if not runs:
        raise ReportError("no run directories given")
    return runs


# --- grouping and statistics ----------------------------------------------------------------


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs that differ only by seed (and paths) form a group; dense groups come first.

    A group is labelled by its model kind when that tells the groups apart, otherwise by the
    overrides in which it differs from the other groups (its kind in front when kinds differ).
    """
    keyed: dict[tuple[str, tuple[str, ...]], list[Run]] = {}
    for run in runs:
        keyed.setdefault((run.ffn, run.model_overrides), []).append(run)
    keys = list(keyed)
    ffns = [ffn for ffn, _ in keys]
    common = set.intersection(*(set(overrides) for _, overrides in keys))
    labels = []
    for ffn, overrides in keys:
        if len(set(ffns)) == len(keys):
            labels.append(ffn)
            continue
        kinds_differ = len(set(ffns)) > 1
        differing = " ".join(
            o
            for o in overrides
            if o not in common and not (kinds_differ and o.startswith("model="))
        )
        differing = differing or ("" if kinds_differ else "(defaults)")
        labels.append(f"{ffn} {differing}".strip() if kinds_differ else differing)
    groups = [Group(label, keyed[key]) for label, key in zip(labels, keys, strict=True)]
    # Stable: dense groups first, otherwise the order the runs came in.
    groups.sort(key=lambda g: g.runs[0].ffn != "dense")
    for group in groups:
        group.stats = group_stats(group.runs)
    return groups


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of one value is ``nan``."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


SUMMARY_STATS = (
    "steps",
    "best_val_loss",
    "final_val_loss",
    "wall_seconds",
    "train_tokens_per_second",
    "parameters",
)


def group_stats(runs: Sequence[Run]) -> dict[str, tuple[float, float]]:
    return {key: mean_std([r.summary.get(key) for r in runs]) for key in SUMMARY_STATS}


def ratio(value: float, reference: float) -> float:
    if reference == 0 or math.isnan(reference) or math.isnan(value):
        return math.nan
    return value / reference


# --- analyses of checkpoints and events -----------------------------------------------------


def best_checkpoint(run: Run) -> Path:
    for name in ("best.ckpt", "last.ckpt"):
        path = run.path / "checkpoints" / name
        if path.is_file():
            return path
    raise ReportError(f"{run.path}: no checkpoints/best.ckpt or last.ckpt")


def entropy_per_head(
    run: Run, train_text_path: str | Path | None = None, text_cache: dict | None = None
) -> list[list[float]]:
    """Attention entropy (nats) per layer and head of the run's best checkpoint, on windows of
    the validation text (:func:`~tinygpt.analysis.attention.head_statistics`)."""
    ckpt = best_checkpoint(run)
    model = load_model(ckpt)
    run_config = load_checkpoint(ckpt)[CHECKPOINT_KEY].get("config") or run.config
    cache = text_cache if text_cache is not None else {}
    key = json.dumps(run_config.get("data") or {}, sort_keys=True, default=str)
    if key not in cache:
        cache[key] = training_text(run_config, train_text_path)
    return head_statistics(model, validation_text(cache[key], run_config))["entropy"].tolist()


def expert_load(run: Run) -> dict[int, dict[int, float]]:
    """The last logged share of tokens per expert, ``{layer: {expert: share}}``; empty when the
    run logged no ``moe/layer{l}/load/expert{e}`` scalars (or no events at all)."""
    try:
        scalars = read_scalars(run.path)
    except (FileNotFoundError, ValueError):
        return {}
    load: dict[int, dict[int, float]] = {}
    for tag, points in scalars.items():
        match = EXPERT_LOAD.match(tag)
        if match and points:
            load.setdefault(int(match[1]), {})[int(match[2])] = points[-1][1]
    return {layer: dict(sorted(experts.items())) for layer, experts in sorted(load.items())}


def mean_nested(tables: Sequence[Any]) -> Any:
    """Element-wise mean of equally shaped nested lists or dicts of numbers."""
    first = tables[0]
    if isinstance(first, dict):
        return {k: mean_nested([t[k] for t in tables if k in t]) for k in first}
    if isinstance(first, list):
        return [mean_nested([t[i] for t in tables]) for i in range(len(first))]
    return statistics.fmean(tables)


def analyse(groups: Sequence[Group], train_text_path: str | Path | None = None) -> None:
    """Fill each group's attention entropy and expert load (means over its runs)."""
    cache: dict = {}
    for group in groups:
        group.entropy = mean_nested(
            [entropy_per_head(r, train_text_path, cache) for r in group.runs]
        )
        loads = [load for load in (expert_load(r) for r in group.runs) if load]
        group.expert_load = mean_nested(loads) if loads else None


# --- Markdown -------------------------------------------------------------------------------


def fmt(mean: float, std: float = math.nan, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def runs_table(groups: Sequence[Group]) -> str:
    ref = groups[0].stats
    lines = [
        "| group | runs (seeds) | steps | best val loss | final val loss | wall s | wall × "
        f"{groups[0].label} | train tokens/s | tokens/s × {groups[0].label} | parameters |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        s = g.stats
        seeds = ", ".join(str(r.seed) for r in g.runs)
        wall_ratio = ratio(s["wall_seconds"][0], ref["wall_seconds"][0])
        tps_ratio = ratio(s["train_tokens_per_second"][0], ref["train_tokens_per_second"][0])
        lines.append(
            f"| {g.label} | {len(g.runs)} ({seeds}) | {fmt(s['steps'][0], digits=0)} | "
            f"{fmt(*s['best_val_loss'])} | "
            f"{fmt(*s['final_val_loss'])} | {fmt(*s['wall_seconds'], digits=1)} | "
            f"{fmt(wall_ratio, digits=2)} | {fmt(*s['train_tokens_per_second'], digits=0)} | "
            f"{fmt(tps_ratio, digits=2)} | {fmt(s['parameters'][0], digits=0)} |"
        )
    return "\n".join(lines) + "\n"


def entropy_table(groups: Sequence[Group]) -> str:
    shaped = [g for g in groups if g.entropy]
    if not shaped:
        return ""
    n_layer = max(len(g.entropy) for g in shaped)
    n_head = max(len(row) for g in shaped for row in g.entropy)
    heads = [f"L{layer}H{head}" for layer in range(n_layer) for head in range(n_head)]
    lines = [
        "| group | " + " | ".join(heads) + " | min–max spread |",
        "|---|" + "---:|" * (len(heads) + 1),
    ]
    for g in shaped:
        flat = [v for row in g.entropy for v in row]
        cells = [f"{v:.2f}" for v in flat] + [""] * (len(heads) - len(flat))
        spread = f"{min(flat):.2f}–{max(flat):.2f}"
        lines.append(f"| {g.label} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines) + "\n"


def expert_load_section(groups: Sequence[Group]) -> str:
    """One table per group that logged expert load; empty when none did."""
    parts = []
    for g in groups:
        if not g.expert_load:
            continue
        n_expert = max(len(e) for e in g.expert_load.values())
        lines = [
            f"**{g.label}**: share of tokens per expert (last logged value, mean over seeds; "
            f"uniform = {1 / n_expert:.3f})",
            "",
            "| layer | " + " | ".join(f"expert {e}" for e in range(n_expert)) + " | max / min |",
            "|---|" + "---:|" * (n_expert + 1),
        ]
        for layer, experts in g.expert_load.items():
            values = [experts.get(e, math.nan) for e in range(n_expert)]
            low = min(values)
            spread = f"{max(values) / low:.2f}" if low > 0 else "inf"
            lines.append(
                f"| {layer} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {spread} |"
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def report_markdown(
    groups: Sequence[Group],
    decoding: Sequence[StrategyResult] | None,
    decoding_source: str = "",
    link: str = "",
    heading: str = "##",
) -> str:
    """The full report; ``link`` prefixes the PNG paths (relative to where the text lives),
    ``heading`` is the Markdown level of its sections."""
    prefix = f"{link.rstrip('/')}/" if link else ""
    parts = [
        f"{heading} Runs\n",
        "Mean ± sample std over seeds; ratios are to the first group.\n",
        runs_table(groups),
        f"![val loss]({prefix}val_loss.png)\n",
        f"{heading} Attention entropy per head\n",
        "Nats, mean over seeds, best checkpoint, on up to 64 windows of the validation text "
        "(0 = one key per query; higher = spread out).\n",
        entropy_table(groups),
    ]
    experts = expert_load_section(groups)
    if experts:
        parts += [f"{heading} Expert load\n", experts]
    if decoding:
        parts += [
            f"{heading} Decoding strategies\n",
            f"{decoding_source}\n",
            strategies_table(decoding),
            f"![decoding]({prefix}decoding.png)\n",
            f"Samples: [decoding_samples.json]({prefix}decoding_samples.json).\n",
        ]
    return "\n".join(parts)


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the results markers replaced by ``body``."""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < 0 or end < start or text.count(START_MARKER) != 1:
        raise ReportError(
            f"the README needs one {START_MARKER} line followed by one {END_MARKER} line"
        )
    head = text[: start + len(START_MARKER)]
    return head + "\n" + body.strip("\n") + "\n" + text[end:]


# --- the command ----------------------------------------------------------------------------


def run_sweep(sweep: Path, overrides: str) -> None:
    """Train ``python train.py -m <overrides> hydra.sweep.dir=<sweep>``, in this process.

    It runs tinygpt.cli.train, so it needs the configs of a checkout (conf/ beside the package;
    see :func:`tinygpt.cli.paths.config_dir`). A user error in the sweep is its one
    ``error:`` line and exit 2, as from train.py.
    """
    from tinygpt.cli.train import main as train  # Lightning is imported only to train

    # Absolute, and quoted for Hydra where the path needs it: the sweep lands where it is read.
    argv = ["-m", *shlex.split(overrides), f"hydra.sweep.dir={hydra_value(str(sweep.absolute()))}"]
    print("running: python train.py", " ".join(shlex.quote(a) for a in argv), flush=True)
    train(argv)


def first_dense_group(groups: Sequence[Group]) -> Group:
    return next((g for g in groups if g.runs[0].ffn == "dense"), groups[0])


def build_report(args: argparse.Namespace) -> dict[str, Path]:
    paths = list(args.runs) + ([args.sweep] if args.sweep else [])
    if not paths:
        raise ReportError("give run directories or --sweep DIR")
    if args.run:
        if not args.sweep:
            raise ReportError("--run needs --sweep DIR (where the sweep's runs go)")
        run_sweep(Path(args.sweep), args.run)
    if args.readme and not Path(args.readme).is_file():
        raise ReportError(f"README not found: {args.readme}")
    runs = find_runs(paths)
    groups = group_runs(runs)
    analyse(groups, args.train_text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"report": out / "report.md", "val_curves": out / "val_loss.png"}
    labels = [f"{g.label} seed {r.seed}" for g in groups for r in g.runs]
    plot_val_curves(
        [r.path for g in groups for r in g.runs],
        labels,
        written["val_curves"],
        title="Validation loss by run",
    )
    decoding, source = None, ""
    if not args.no_decoding:
        group = first_dense_group(groups)
        models = [(f"seed {r.seed}", load_model(best_checkpoint(r))) for r in group.runs]
        ckpt = best_checkpoint(group.runs[0])
        run_config = load_checkpoint(ckpt)[CHECKPOINT_KEY].get("config") or group.runs[0].config
        text = training_text(run_config, args.train_text)
        decoding = compare_decoding(models, text, max_new_tokens=args.max_new_tokens)
        written.update(write_decoding_report(decoding, out, args.tb_dir))
        cells = len(decoding[0].cells)
        source = (
            f"The best checkpoints of the {len(models)} {group.label} runs; per run and prompt "
            f"a batch of {len(decoding[0].samples) // cells} samples of {args.max_new_tokens} "
            f"characters; mean ± std over the {cells} cells (run × prompt), scoring the "
            "continuation only."
        )
    title = (
        "# Report\n\nGenerated by `python -m tinygpt.report`. The TinyGPT notebook's claims, "
        "with verdicts: `python -m tinygpt.claims`.\n\n"
    )
    written["report"].write_text(title + report_markdown(groups, decoding, source))
    if args.results:
        page = Path(args.results)
        page.parent.mkdir(parents=True, exist_ok=True)
        body = results_section(args, "--results", page, "##", groups, decoding, source)
        page.write_text("# Results\n\n" + body)
        written["results"] = page
    if args.readme:
        readme = Path(args.readme)
        body = results_section(args, "--readme", readme, "###", groups, decoding, source)
        readme.write_text(replace_section(readme.read_text(), body))
        written["readme"] = readme
    return written


def results_section(
    args: argparse.Namespace,
    option: str,
    page: Path,
    heading: str,
    groups: Sequence[Group],
    decoding: Sequence[StrategyResult] | None,
    source: str,
) -> str:
    """The results for a page written by ``option`` (``--results`` or ``--readme``): how to
    regenerate them, then the report, its pictures linked from where the page lives."""
    out = Path(args.out)
    link = os.path.relpath(out.resolve(), page.resolve().parent)
    command = "python -m tinygpt.report " + " ".join(
        [f"--sweep {args.sweep}" if args.sweep else " ".join(map(str, args.runs))]
        + ([] if out == DEFAULT_OUT else ["--out", str(args.out)])
        + [option, str(page)]
    )
    return (
        f"Regenerate with `{command}` (full report: [{link}/report.md]({link}/report.md)).\n\n"
        + report_markdown(groups, decoding, source, link, heading=heading)
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tinygpt.report",
        description="Report on training runs (dense vs MoE) and decoding strategies.",
    )
    p.add_argument("runs", nargs="*", help="run directories or sweep directories")
    p.add_argument("--sweep", help="a sweep directory: its subdirectories holding summary.json")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    p.add_argument("--results", help="write the results page here, e.g. docs/results.md")
    p.add_argument("--readme", help="rewrite this README's section between the results markers")
    p.add_argument("--train-text", help="the training text file (default: from the run config)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--no-decoding", action="store_true", help="skip the decoding comparison")
    p.add_argument("--tb-dir", help="also log the decoding samples as text to this TensorBoard dir")
    p.add_argument(
        "--run",
        metavar="OVERRIDES",
        help='first train the sweep into --sweep: e.g. "model=dense,moe seed=1,2,3"',
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with user_errors():
        written = build_report(args)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
