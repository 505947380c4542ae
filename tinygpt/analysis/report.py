"""Dense vs MoE (or any groups of runs) compared: the report of ``python -m tinygpt report``.

Runs are grouped by model kind (``model.ffn`` in the run's ``.hydra/config.yaml``) and by the
overrides that differ between them, seeds and paths aside. Per group: best and final val loss
(mean ± sample std over seeds), wall time and train tokens/s with their ratio to the first group
(dense where there is one), parameters, the attention entropy per head of the best checkpoints on
the validation text, and the expert load where the runs logged ``moe/layer{l}/load/expert{e}``.
Then the decoding comparison (:mod:`tinygpt.analysis.decoding`) on the best checkpoints of the
first dense group's runs. :func:`write_report` writes ``report.md``, ``val_loss.png`` and the
decoding files into a folder, optionally a results page and a README's results section.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tinygpt.analysis.attention import head_statistics_figure
from tinygpt.analysis.decoding import (
    DEFAULT_MAX_NEW_TOKENS,
    DecoderResult,
    compare_runs,
    decoding_table,
    write_decoding_report,
)
from tinygpt.analysis.plots import plot_val_curves
from tinygpt.analysis.runs import Run, find_runs, logged_expert_load
from tinygpt.analysis.verdicts import Stat
from tinygpt.analysis.writing import markdown_table, number, replace_section, save_figure
from tinygpt.errors import DataError


@dataclass
class Group:
    label: str
    runs: list[Run]
    heads: list[dict] = field(default_factory=list)  # per run: head_statistics' (L, H) tensors
    expert_load: dict[int, dict[int, float]] | None = None  # layer -> expert -> mean share

    def stat(self, key: str) -> Stat:
        """A summary.json value over the runs (seeds)."""
        return Stat.of([r.summary.get(key) for r in self.runs])


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs that differ only by seed (and paths) form a group; dense groups come first.

    A group is labelled by its model kind when that tells the groups apart, otherwise by the
    overrides in which it differs from the other groups (its kind in front when kinds differ).
    """
    keyed: dict[tuple[str, tuple[str, ...]], list[Run]] = {}
    for run in runs:
        keyed.setdefault((run.ffn, run.model_overrides), []).append(run)
    kinds = {ffn for ffn, _ in keyed}
    common = set.intersection(*(set(overrides) for _, overrides in keyed))
    groups = []
    for (ffn, overrides), members in keyed.items():
        label = ffn
        if len(kinds) != len(keyed):
            differing = " ".join(
                o
                for o in overrides
                if o not in common and not (len(kinds) > 1 and o.startswith("model="))
            )
            label = f"{ffn} {differing}".strip() if len(kinds) > 1 else differing or "(defaults)"
        groups.append(Group(label, members))
    return sorted(groups, key=lambda g: g.runs[0].ffn != "dense")  # stable: dense first


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


def seeds_of(runs: Sequence[Run]) -> str:
    return f"{len(runs)} ({', '.join(str(r.seed) for r in runs)})"


def runs_table(groups: Sequence[Group]) -> str:
    ref, first = groups[0], groups[0].label
    header = ["group", "runs (seeds)", "steps", "best val loss", "final val loss", "wall s"]
    header += [f"wall × {first}", "train tokens/s", f"tokens/s × {first}", "parameters"]
    rows = []
    for g in groups:
        wall, speed = g.stat("wall_seconds"), g.stat("train_tokens_per_second")
        rows.append(
            [
                g.label,
                seeds_of(g.runs),
                number(g.stat("steps").mean, 0),
                g.stat("best_val_loss").fmt(),
                g.stat("final_val_loss").fmt(),
                wall.fmt(1),
                number(ratio(wall.mean, ref.stat("wall_seconds").mean), 2),
                speed.fmt(0),
                number(ratio(speed.mean, ref.stat("train_tokens_per_second").mean), 2),
                number(g.stat("parameters").mean, 0),
            ]
        )
    return markdown_table(header, rows, left=2)


def attention_table(groups: Sequence[Group]) -> str:
    """Per group and layer: each head measure's mean over the layer's heads, and the standard
    deviation across them, each as mean ± std over seeds."""
    header = "runs | layer | entropy (nats) | its std across heads | distance (chars) | "
    header += "its std across heads | share on previous 1–3"
    rows = []
    for group in (g for g in groups if g.heads):
        for layer in range(group.heads[0]["entropy"].shape[0]):
            cells = []
            for key in ("entropy", "distance", "previous_3"):
                heads = [stats[key][layer] for stats in group.heads]  # per seed
                cells.append(Stat.of([float(h.mean()) for h in heads]).fmt(2))
                if key != "previous_3":  # and the spread across the layer's heads
                    cells.append(Stat.of([float(h.std(unbiased=True)) for h in heads]).fmt(2))
            rows.append([group.label, str(layer), *cells])
    return markdown_table(header, rows, left=2)


def expert_load_section(groups: Sequence[Group]) -> str:
    """One table per group that logged expert load; empty when none did."""
    parts = []
    for g in (g for g in groups if g.expert_load):
        n_expert = max(len(e) for e in g.expert_load.values())
        rows = []
        for layer, experts in g.expert_load.items():
            values = [experts.get(e, float("nan")) for e in range(n_expert)]
            spread = f"{max(values) / min(values):.2f}" if min(values) > 0 else "inf"
            rows.append([str(layer), *(f"{v:.3f}" for v in values), spread])
        header = ["layer", *(f"expert {e}" for e in range(n_expert)), "max / min"]
        parts.append(
            f"**{g.label}**: share of tokens per expert (last logged value, mean over seeds; "
            f"uniform = {1 / n_expert:.3f})\n\n" + markdown_table(header, rows, left=1)
        )
    return "\n".join(parts)


def report_markdown(
    groups: Sequence[Group],
    decoding: Sequence[DecoderResult] | None,
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
        f"{heading} Attention per head\n",
        "Best checkpoints, on up to 64 windows of the validation text. Entropy in nats (0 = one "
        "key per query; higher = spread out); distance: how far back the attended characters "
        "are. Per layer: the mean over its heads and the std across them, each as mean ± std "
        "over seeds.\n",
        f"![attention per head]({prefix}attention.png)\n",
        attention_table(groups),
    ]
    experts = expert_load_section(groups)
    if experts:
        parts += [f"{heading} Expert load\n", experts]
    if decoding:
        parts += [
            f"{heading} Decoding strategies\n",
            f"{decoding_source}\n",
            decoding_table(decoding),
            f"![decoding]({prefix}decoding.png)\n",
            f"Samples: [decoding_samples.json]({prefix}decoding_samples.json).\n",
        ]
    return "\n".join(parts)


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    command: str,
    results: str | Path | None = None,
    readme: str | Path | None = None,
    train_text: str | Path | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    decoding: bool = True,
    tb_dir: str | Path | None = None,
) -> dict[str, Path]:
    """The report on the runs in ``paths`` (run or sweep directories) into ``out``; with
    ``results`` a results page, with ``readme`` that page's part between the results markers,
    each saying to regenerate it with ``command`` plus its own option. Returns what it wrote."""
    if readme and not Path(readme).is_file():
        raise DataError(f"README not found: {readme}")
    groups = group_runs(find_runs(paths))
    for group in groups:  # attention per head on each run's validation text, and expert load
        group.heads = [r.head_statistics(train_text) for r in group.runs]
        loads = [load for load in map(logged_expert_load, group.runs) if load]
        if loads:  # each layer's and expert's mean share over the runs that logged it
            group.expert_load = {
                layer: {e: statistics.fmean(load[layer][e] for load in loads) for e in experts}
                for layer, experts in loads[0].items()
            }
    out = Path(out)
    curves = {g.label: [r.dir for r in g.runs] for g in groups}
    figure = head_statistics_figure({g.label: g.heads for g in groups})
    written = {
        "report": out / "report.md",
        "val_curves": plot_val_curves(curves, out / "val_loss.png"),
        "attention": save_figure(figure, out / "attention.png"),
    }
    decoded, source = None, ""
    if decoding:
        group = next((g for g in groups if g.runs[0].ffn == "dense"), groups[0])
        decoded = compare_runs(group.runs, train_text, max_new_tokens=max_new_tokens)
        written.update(write_decoding_report(decoded, out, tb_dir))
        cells = len(decoded[0].cells)
        source = (
            f"The best checkpoints of the {len(group.runs)} {group.label} runs; per run and prompt "
            f"a batch of {len(decoded[0].samples) // cells} samples of {max_new_tokens} "
            f"characters; mean ± std over the {cells} cells (run × prompt), scoring the "
            "continuation only."
        )
    written["report"].write_text(
        "# Report\n\nGenerated by `python -m tinygpt report`. The TinyGPT notebook's claims, "
        "with verdicts: `python -m tinygpt claims`.\n\n" + report_markdown(groups, decoded, source)
    )
    pages = {"results": (results, "##"), "readme": (readme, "###")}
    for name, (page, heading) in pages.items():
        if not page:
            continue
        page = written[name] = Path(page)
        link = os.path.relpath(out.resolve(), page.resolve().parent)
        body = (
            f"Regenerate with `{command} --{name} {page}` (full report: "
            f"[{link}/report.md]({link}/report.md)).\n\n"
            + report_markdown(groups, decoded, source, link, heading)
        )
        if name == "readme":
            page.write_text(replace_section(page.read_text(), body))
        else:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text("# Results\n\n" + body)
    return written
