"""Pictures of a Mixture-of-Experts model's routing: expert load and character specialisation."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from matplotlib.figure import Figure

from tinygpt.analysis.attention import text_windows, visible
from tinygpt.models import TinyGPT, evaluating

EXPERT_LOAD_TAG = re.compile(r"^moe/layer(\d+)/load/expert(\d+)$")


def expert_shares(values: Mapping[str, float]) -> dict[int, dict[int, float]]:
    """The ``moe/layer{l}/load/expert{e}`` entries of ``values`` (logged scalars by tag) as
    ``{layer: {expert: share}}``, sorted; empty for a dense model."""
    load: dict[int, dict[int, float]] = {}
    for tag, value in sorted(values.items()):
        match = EXPERT_LOAD_TAG.match(tag)
        if match:
            load.setdefault(int(match[1]), {})[int(match[2])] = float(value)
    return {layer: dict(sorted(experts.items())) for layer, experts in sorted(load.items())}


@torch.no_grad()
def expert_load(model: TinyGPT, idx: torch.Tensor) -> torch.Tensor:
    """Fraction of token assignments each expert receives, per MoE layer: ``(layers, experts)``.

    Every one of a token's top-k assignments counts, as in the ``moe/layer{l}/load`` scalars
    that training logs.
    """
    with evaluating(model):
        model(idx)
    return torch.stack([stats.load.float().cpu() for stats in model.moe_stats().values()])


@torch.no_grad()
def specialisation(model: TinyGPT, text: str) -> tuple[list[str], torch.Tensor]:
    """For each character of ``text``'s vocabulary, how often each expert is chosen per layer.

    Returns the characters (sorted) and counts ``(layers, characters, experts)``. The text is cut
    into :func:`text_windows`, routed as one batch; with top-k routing each character counts
    once, for its highest-weighted expert.
    """
    tokenizer = model.tokenizer
    windows = text_windows(model, text)
    choices = model.expert_assignments(windows).flatten(1).cpu()  # (layers, n * block)
    tokens = windows.flatten().cpu()
    present = tokens.unique()
    num_experts = model.config.num_experts
    counts = torch.zeros(choices.size(0), len(present), num_experts)
    index = torch.searchsorted(present, tokens)
    for layer, chosen in enumerate(choices):
        counts[layer].index_put_((index, chosen), torch.ones(len(tokens)), accumulate=True)
    return [tokenizer.chars[i] for i in present.tolist()], counts


def expert_load_figure(load: torch.Tensor, title: str = "Expert load") -> Figure:
    """Heatmap of ``load`` (layers x experts) with the fraction written in each cell."""
    layers, experts = load.shape
    fig = Figure(figsize=(1.2 + 0.9 * experts, 0.9 + 0.6 * layers), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(load.numpy(), cmap="viridis", vmin=0, vmax=max(1e-9, float(load.max())))
    for i in range(layers):
        for j in range(experts):
            ax.text(j, i, f"{load[i, j]:.2f}", ha="center", va="center", color="w", fontsize=9)
    ax.set_xticks(range(experts), [f"expert {e}" for e in range(experts)])
    ax.set_yticks(range(layers), [f"layer {i}" for i in range(layers)])
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of tokens")
    return fig


def specialisation_figure(chars: list[str], counts: torch.Tensor) -> Figure:
    """One panel per MoE layer: characters (rows) x experts, each row normalised to sum to 1."""
    layers, _, experts = counts.shape
    shares = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    height = 1.5 + 0.16 * len(chars)
    fig = Figure(figsize=(1.5 + 1.9 * layers, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, layers, squeeze=False)[0]
    for layer, ax in enumerate(axes):
        image = ax.imshow(shares[layer].numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(experts), [str(e) for e in range(experts)])
        ax.set_yticks(range(len(chars)), visible("".join(chars)), fontsize=7)
        ax.set_xlabel("expert")
        ax.set_title(f"layer {layer}")
    fig.colorbar(image, ax=list(axes), label="share of the character's tokens")
    fig.suptitle("Which expert each character is routed to")
    return fig
