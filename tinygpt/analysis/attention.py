"""What the attention heads look at: weights for a prompt, per-head statistics, heatmap grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from tinygpt.analysis import likelihood
from tinygpt.analysis.writing import save_figure
from tinygpt.models import TinyGPT, evaluating

# Characters that would be invisible or break a tick label, drawn as visible symbols instead.
VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}


@torch.no_grad()
def attention_weights(model: TinyGPT, prompt: str) -> torch.Tensor:
    """Attention of ``model`` on ``prompt``: ``(n_layer, n_head, T, T)``, query x key, on the CPU.

    The model runs in eval mode (no dropout) and its mode is restored afterwards. The prompt must
    fit the context (``T <= block_size``) and use only characters of the model's tokenizer.
    """
    device = next(model.parameters()).device
    idx = model.tokenizer.encode(prompt)[None].to(device)
    with evaluating(model):
        _, weights = model.forward_with_attention(idx)
    return torch.stack([w[0] for w in weights]).float().cpu()


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each query's attention distribution in nats, averaged over the queries.

    ``weights`` is ``(..., T, T)`` with rows summing to 1; the result is ``(...)``, e.g. one value
    per layer and head. 0 means every query attends to a single key; uniform causal attention
    gives the mean of ``log(i + 1)`` over query positions ``i``.
    """
    return likelihood.entropy(weights).mean(-1)  # 0 log 0 = 0: the masked (future) keys add nothing


def attended_distance(weights: torch.Tensor) -> torch.Tensor:
    """Mean distance back from query ``i`` to the keys it attends, ``sum_j w_ij (i - j)``.

    Averaged over the queries; ``(..., T, T)`` -> ``(...)``. 0 for heads that attend to the current
    character only, 1 for heads that attend to the previous one.
    """
    T = weights.size(-1)
    positions = torch.arange(T, dtype=weights.dtype, device=weights.device)
    distance = positions[:, None] - positions[None, :]  # (query, key): i - j
    return (weights * distance).sum(-1).mean(-1)


def previous_share(weights: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The share of each query's attention on the ``k`` characters just before it (distances 1
    to ``k``, the query's own character left out), averaged over the queries that have ``k``
    characters before them; ``(..., T, T)`` -> ``(...)``. 1 for a head that looks only at the
    previous ``k`` characters, ``k / (i + 1)`` for query ``i`` of a uniform head.
    """
    T = weights.size(-1)
    if not 1 <= k < T:
        raise ValueError(f"k must be in [1, {T - 1}] for {T} positions, got {k}")
    positions = torch.arange(T, device=weights.device)
    distance = positions[:, None] - positions[None, :]
    near = ((distance >= 1) & (distance <= k)).to(weights.dtype)
    return (weights * near).sum(-1)[..., k:].mean(-1)


def text_windows(model: TinyGPT, text: str) -> torch.Tensor:
    """``text`` as one batch of non-overlapping ``block_size`` windows, on the model's device."""
    block = model.config.block_size
    ids = model.tokenizer.encode(text)
    n = len(ids) // block
    if n == 0:
        raise ValueError(f"text must hold at least block_size = {block} characters")
    return ids[: n * block].view(n, block).to(model.wte.weight.device)


@torch.no_grad()
def head_statistics(model: TinyGPT, text: str, max_windows: int = 64) -> dict[str, torch.Tensor]:
    """Per layer and head, ``(n_layer, n_head)`` each: the mean ``entropy`` (nats), attended
    ``distance`` (characters back) and ``previous_3`` share (:func:`previous_share`, k = 3) of
    the model's attention, averaged over up to ``max_windows`` non-overlapping ``block_size``
    windows of ``text`` spread evenly over it: a head's habit, not one prompt's.
    """
    windows = text_windows(model, text)
    n = len(windows)
    windows = windows[torch.linspace(0, n - 1, min(n, max_windows)).round().long().unique()]
    with evaluating(model):
        _, per_layer = model.forward_with_attention(windows)
    weights = torch.stack(per_layer, dim=1).float().cpu()  # (windows, layer, head, T, T)
    return {
        "entropy": attention_entropy(weights).mean(0),
        "distance": attended_distance(weights).mean(0),
        "previous_3": previous_share(weights, 3).mean(0),
    }


def visible(text: str) -> list[str]:
    """One label per character, whitespace drawn visibly (newline as "⏎", space as "␣")."""
    return [VISIBLE.get(c, c) for c in text]


def attention_figure(weights: torch.Tensor, prompt: str, title: str | None = None) -> Figure:
    """A grid of heatmaps, one row per layer and one column per head, query x key.

    Each cell is titled with its layer, head, mean entropy and mean attended distance; the
    prompt's characters label both axes. All cells share one colour scale, 0 to 1.
    """
    n_layer, n_head, T, _ = weights.shape
    if len(prompt) != T:
        raise ValueError(f"the prompt has {len(prompt)} characters but the weights cover {T}")
    entropy, distance = attention_entropy(weights), attended_distance(weights)
    labels = visible(prompt)
    # Inches per heatmap: room for one readable label per character, up to a size where long
    # prompts label every k-th character instead of making a poster.
    cell = min(max(2.2, 0.14 * T), 6.0)
    fits = 0.75 * cell * 72 / T  # the font size, in points, that fits one label per character
    tick_size = min(max(fits, 6.0), 8.0)
    every = max(1, round(6.0 / fits))  # label every k-th character when 6 points do not fit
    ticks = list(range(0, T, every))
    fig = Figure(figsize=(cell * n_head + 1.0, cell * n_layer + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(n_layer, n_head, squeeze=False)
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer, head]
            image = ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(
                f"L{layer} H{head}  H={entropy[layer, head]:.2f}  d={distance[layer, head]:.1f}",
                fontsize=8,
            )
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=tick_size)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=tick_size)
            ax.tick_params(length=0, pad=1)
            if layer == n_layer - 1:
                ax.set_xlabel("key", fontsize=8)
            if head == 0:
                ax.set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(title or "Attention per layer (rows) and head (columns)", fontsize=10)
    return fig


def save_attention_heatmaps(
    model: TinyGPT, prompt: str, path: str | Path, title: str | None = None
) -> torch.Tensor:
    """Write the heatmap grid of ``model`` on ``prompt`` as a PNG; returns the weights."""
    weights = attention_weights(model, prompt)
    save_figure(attention_figure(weights, prompt, title), path)
    return weights


# head_statistics keys -> (panel title, unit)
HEAD_MEASURES = {
    "entropy": ("mean entropy (nats)", "higher: more uniform"),
    "distance": ("mean attended distance (characters)", "lower: nearer"),
    "previous_3": ("share on the previous 1-3 characters", "higher: more on adjacent"),
}


def head_statistics_figure(
    groups: dict[str, list[dict[str, torch.Tensor]]], title: str | None = None
) -> Figure:
    """One panel per measure of :func:`head_statistics`: for each group (a model kind) and
    layer, every head of every run as a dot (one colour per run), and the mean over them as a
    black bar. Head numbers are arbitrary between runs, so heads are not matched across seeds."""
    fig = Figure(figsize=(12.5, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(HEAD_MEASURES))
    jitter = np.random.default_rng(0)
    for ax, (key, (label, reading)) in zip(axes, HEAD_MEASURES.items(), strict=True):
        ticks, names = [], []
        x = 0
        for group, runs in groups.items():
            for layer in range(runs[0][key].shape[0]):
                values = []
                for r, stats in enumerate(runs):
                    heads = stats[key][layer].numpy()
                    values.extend(heads)
                    xs = x + jitter.uniform(-0.25, 0.25, len(heads))
                    ax.plot(xs, heads, "o", color=f"C{r}", ms=4, mec="black", mew=0.3)
                ax.hlines(np.mean(values), x - 0.35, x + 0.35, color="black", lw=2)
                ticks.append(x)
                names.append(f"{group}\nlayer {layer}")
                x += 1
            x += 0.5  # a gap between groups
        ax.set_xticks(ticks, names, fontsize=8)
        ax.set_title(f"{label}\n({reading})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    n_runs = max(len(runs) for runs in groups.values())
    fig.suptitle(
        title
        or f"Attention per head: dots are heads, one colour per seed ({n_runs} seeds); bars: means",
        fontsize=11,
    )
    return fig
