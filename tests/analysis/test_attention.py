"""Attention weights, per-head statistics on hand-made matrices, and the heatmap grid."""

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tinygpt.analysis.attention import (
    attended_distance,
    attention_entropy,
    attention_figure,
    attention_weights,
    head_statistics,
    head_statistics_figure,
    previous_share,
    save_attention_heatmaps,
    visible,
)
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.models import TinyGPT, TinyGPTConfig

PROMPT = "First Citizen:\nSpeak, speak."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def uniform_causal(T: int) -> torch.Tensor:
    """Query i attends equally to keys 0..i."""
    causal = torch.ones(T, T).tril()
    return causal / causal.sum(-1, keepdim=True)


def make_model() -> TinyGPT:
    tokenizer = CharTokenizer.from_text(PROMPT)
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=3, n_embd=48))
    model.tokenizer = tokenizer
    return model


def test_weights_shape_rows_sum_to_one_and_are_causal():
    model = make_model().train()
    weights = attention_weights(model, PROMPT)
    T = len(PROMPT)
    assert weights.shape == (2, 3, T, T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, T))
    assert (weights.triu(diagonal=1) == 0).all()  # no query sees a later key
    assert model.training  # mode restored


def test_uniform_causal_entropy_and_distance():
    T = 5
    weights = uniform_causal(T)
    # Query i spreads over i + 1 keys: entropy log(i + 1), mean distance back i / 2.
    expected_entropy = sum(math.log(i + 1) for i in range(T)) / T
    expected_distance = sum(i / 2 for i in range(T)) / T  # = 1.0
    assert attention_entropy(weights).item() == pytest.approx(expected_entropy)
    assert attended_distance(weights).item() == pytest.approx(expected_distance)
    assert expected_distance == 1.0


def test_diagonal_and_previous_token_heads():
    T = 4
    self_only = torch.eye(T)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0  # the first query has only itself
    previous[torch.arange(1, T), torch.arange(0, T - 1)] = 1.0
    stacked = torch.stack([self_only, previous])  # (2, T, T): statistics per matrix
    torch.testing.assert_close(attention_entropy(stacked), torch.zeros(2))
    torch.testing.assert_close(attended_distance(stacked), torch.tensor([0.0, 3 / 4]))


def test_half_and_half_entropy_is_log_two():
    weights = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert attention_entropy(weights).item() == pytest.approx(math.log(2) / 2)
    assert attended_distance(weights).item() == pytest.approx(0.25)


def test_visible_labels():
    assert visible("a b\n\t") == ["a", "␣", "b", "⏎", "⇥"]


def test_figure_has_one_heatmap_per_layer_and_head_with_character_labels():
    weights = attention_weights(make_model(), PROMPT)
    fig = attention_figure(weights, PROMPT)
    heatmaps = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(heatmaps) == 2 * 3
    labels = [t.get_text() for t in heatmaps[0].get_xticklabels()]
    assert labels == visible(PROMPT) and "⏎" in labels
    assert heatmaps[0].get_title().startswith("L0 H0")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    assert np.asarray(canvas.buffer_rgba()).std() > 0  # something drawn
    with pytest.raises(ValueError, match="characters"):
        attention_figure(weights, PROMPT[:-1])


def test_save_attention_heatmaps_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "attention.png"
    weights = save_attention_heatmaps(make_model(), PROMPT, path)
    assert weights.shape[:2] == (2, 3)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1024


def test_previous_share_by_hand():
    T = 6
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(0, T - 1)] = 1.0
    assert previous_share(previous, 3).item() == 1.0  # all on the character before
    assert previous_share(torch.eye(T), 3).item() == 0.0  # the query's own is not "previous"
    # Uniform: query i has 3 of its i + 1 keys among the previous three; queries 3..5 count.
    expected = sum(3 / (i + 1) for i in range(3, T)) / (T - 3)
    assert previous_share(uniform_causal(T), 3).item() == pytest.approx(expected)
    assert previous_share(uniform_causal(T), 1).item() == pytest.approx(
        sum(1 / (i + 1) for i in range(1, T)) / (T - 1)
    )
    with pytest.raises(ValueError, match="k must be"):
        previous_share(uniform_causal(T), T)


def test_head_statistics_average_windows_of_the_text():
    model = make_model()
    text = PROMPT * 10  # 280 characters: 8 windows of 32
    stats = head_statistics(model, text, max_windows=5)
    assert set(stats) == {"entropy", "distance", "previous_3"}
    for values in stats.values():
        assert values.shape == (2, 3)
    assert ((stats["previous_3"] > 0) & (stats["previous_3"] < 1)).all()
    # One window: the statistics of attention_weights on that window's text.
    one = head_statistics(model, PROMPT + PROMPT[:4], max_windows=1)
    weights = attention_weights(model, (PROMPT + PROMPT[:4])[:32])
    torch.testing.assert_close(one["entropy"], attention_entropy(weights))
    torch.testing.assert_close(one["distance"], attended_distance(weights))
    with pytest.raises(ValueError, match="block_size"):
        head_statistics(model, "First")


def test_head_statistics_figure_has_a_panel_per_measure_and_a_dot_per_head(tmp_path):
    model = make_model()
    runs = [head_statistics(model, PROMPT * 10), head_statistics(model, PROMPT * 3)]
    fig = head_statistics_figure({"dense": runs, "moe": runs[:1]})
    assert len(fig.axes) == 3
    dots = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert sum(len(line.get_xdata()) for line in dots) == (2 + 1) * 2 * 3  # runs x layers x heads
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "dense\nlayer 0"
    fig.savefig(tmp_path / "heads.png")
    assert (tmp_path / "heads.png").read_bytes().startswith(PNG_MAGIC)
