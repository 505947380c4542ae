"""The sample-text and custom-scalars callbacks in a short in-process fit, read back with
TensorBoard's reader; the layout's regular expressions against the tags the runs log."""

import re

import lightning as L
import pytest
from helpers import make_module
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from tinygpt.analysis.writing import code_block
from tinygpt.errors import ConfigError
from tinygpt.generation import generate
from tinygpt.training.callbacks import CustomScalarsLayout, SampleText, scalar_layout

LAYOUT_TAG = "custom_scalars__config__"


def fit(tmp_path, module, datamodule, callbacks) -> EventAccumulator:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        val_check_interval=2,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="", version="tb"),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    return events


def test_a_seeded_sample_is_logged_at_each_validation_and_a_layout_at_the_start(
    tiny_text_file, tmp_path
):
    L.seed_everything(0, verbose=False)
    datamodule, module = make_module(tiny_text_file)
    prompt = "First Citizen:\n"
    sample = SampleText(prompt=prompt, max_new_tokens=40, temperature=0.8, seed=3)
    events = fit(tmp_path, module, datamodule, [sample, CustomScalarsLayout()])

    texts = events.Tensors("sample/text_summary")
    assert [t.step for t in texts] == [2, 4]  # validations after steps 2 and 4
    last = texts[-1].tensor_proto.string_val[0].decode()
    heading, body = last.split("\n\n", 1)
    assert heading == "step 4, temperature 0.8, seed 3:"
    # The prompt and 40 new characters, as a Markdown code block (four spaces a line).
    assert body == code_block(sample.last_text)
    assert sample.last_text.startswith(prompt) and len(sample.last_text) == len(prompt) + 40

    # Reproducible: the same weights, prompt and seed give the same text.
    assert generate(module.model, prompt, 40, temperature=0.8, seed=3) == sample.last_text

    # The layout, for this dense model without an attention callback: the loss chart only.
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors(LAYOUT_TAG)[0].tensor_proto.string_val[0])
    assert [c.title for c in layout.category] == ["loss"]
    assert list(layout.category[0].chart[0].multiline.tag) == ["train/loss$", "val/loss$"]


def test_a_prompt_outside_the_vocabulary_samples_from_the_validation_text(tiny_text_file, tmp_path):
    datamodule, module = make_module(tiny_text_file)
    assert "Z" not in datamodule.tokenizer.chars
    sample = SampleText(prompt="Zounds!", max_new_tokens=5)
    fit(tmp_path, module, datamodule, [sample])
    assert sample.last_text[:7] == datamodule.tokenizer.decode(datamodule.val_data[:7])


def chart_tags(layout, category: str, chart: str, tags: list[str]) -> list[str]:
    """The tags a chart of the layout shows: those its regexes match, as TensorBoard does."""
    patterns = layout[category][chart][1]
    return [t for t in tags if any(re.match(p, t) for p in patterns)]


def test_the_layout_puts_each_layers_heads_and_experts_in_one_chart():
    n_layer, n_head, n_expert = 12, 2, 3
    tags = ["train/loss", "val/loss", "train/loss_x", "moe/layer1/router_entropy"]
    tags += [
        f"attention/{m}/layer{i}_head{h}"
        for m in ("entropy", "distance")
        for i in range(n_layer)
        for h in range(n_head)
    ]
    tags += [f"moe/layer{i}/load/expert{e}" for i in (1, 11) for e in range(n_expert)]
    layout = scalar_layout(n_layer, moe_layers=[1, 11])

    assert chart_tags(layout, "loss", "train and val loss", tags) == ["train/loss", "val/loss"]
    entropy = "attention entropy per head (nats)"
    assert list(layout[entropy]) == [f"layer {i}" for i in range(n_layer)]
    # layer 1's chart: its heads only, not layer 11's.
    assert chart_tags(layout, entropy, "layer 1", tags) == [
        "attention/entropy/layer1_head0",
        "attention/entropy/layer1_head1",
    ]
    distance = "attention distance per head (characters back)"
    assert chart_tags(layout, distance, "layer 11", tags) == [
        "attention/distance/layer11_head0",
        "attention/distance/layer11_head1",
    ]
    load = "MoE expert load (share of tokens)"
    assert list(layout[load]) == ["layer 1", "layer 11"]
    assert chart_tags(layout, load, "layer 1", tags) == [
        f"moe/layer1/load/expert{e}" for e in range(n_expert)
    ]
    # Every per-head and per-expert tag is in exactly one chart.
    charted = [
        t
        for category in layout
        for chart in layout[category]
        for t in chart_tags(layout, category, chart, tags)
    ]
    per_unit = [t for t in tags if "head" in t or "/load/" in t]
    assert sorted(charted) == sorted(per_unit + ["train/loss", "val/loss"])

    assert list(scalar_layout(2, attention=False)) == ["loss"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "callbacks.sample_text.max_new_tokens must be an integer in [1,"),
        ({"temperature": -1}, "callbacks.sample_text.temperature must be a number >= 0"),
        ({"every_n_validations": 0}, "callbacks.sample_text.every_n_validations must be"),
        ({"seed": -1}, "callbacks.sample_text.seed must be an integer in [0,"),
        ({"prompt": ""}, "callbacks.sample_text.prompt must be non-empty text"),
    ],
)
def test_bad_sample_settings_name_the_config_key(kwargs, message):
    with pytest.raises(ConfigError) as error:
        SampleText(**kwargs)
    assert str(error.value).startswith(message)
