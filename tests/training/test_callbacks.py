"""The analysis callbacks in a short in-process fit, read back through TensorBoard's reader."""

import math
from types import SimpleNamespace

import lightning as L
import pytest
from helpers import PNG_MAGIC, make_module
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tinygpt.errors import ConfigError
from tinygpt.training.callbacks import AttentionHeatmapCallback, MetricPlots, RunConfigText


def test_callbacks_log_heatmaps_entropy_config_and_plots(tiny_text_file, tmp_path):
    L.seed_everything(0, verbose=False)
    datamodule, module = make_module(tiny_text_file)
    prompt = "First Citizen:\n"
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        val_check_interval=1,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="", version="tb"),
        callbacks=[
            AttentionHeatmapCallback(prompt=prompt, every_n_validations=2),
            RunConfigText(),
            MetricPlots(dirpath=str(tmp_path / "plots")),
            LearningRateMonitor(logging_interval="step"),
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    # Four validations, every second one logged: after steps 2 and 4.
    images = events.Images(AttentionHeatmapCallback.IMAGE_TAG)
    assert [image.step for image in images] == [2, 4]
    assert images[0].encoded_image_string.startswith(PNG_MAGIC)
    assert images[0].width > 400 and images[0].height > 300
    entropy_tags = sorted(t for t in tags["scalars"] if t.startswith("attention/entropy/"))
    expected = [f"attention/entropy/layer{layer}_head{h}" for layer in (0, 1) for h in range(4)]
    assert entropy_tags == expected
    for tag in entropy_tags:
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == 2
        # Between a one-hot head (0) and uniform causal attention (mean of log(i + 1)).
        uniform = sum(math.log(i + 1) for i in range(len(prompt))) / len(prompt)
        assert all(0.0 <= v <= uniform + 1e-4 for v in values)
    distances = events.Scalars("attention/distance/layer0_head0")
    assert 0.0 <= distances[0].value <= (len(prompt) - 1) / 2 + 1e-4
    assert "config/text_summary" in tags["tensors"]
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "seed: 7" in config_text and "n_layer: 2" in config_text

    for name in ("loss.png", "val_ppl.png", "lr.png", "grad_norm.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1024


def test_prompt_outside_the_vocabulary_falls_back_to_the_validation_text(tiny_text_file):
    datamodule, module = make_module(tiny_text_file, block_size=16)
    trainer = SimpleNamespace(datamodule=datamodule)
    val_start = datamodule.tokenizer.decode(datamodule.val_data[:16])
    assert "Z" not in datamodule.tokenizer.chars
    callback = AttentionHeatmapCallback(prompt="Zounds, my lord!")  # 16 characters
    assert callback.resolve_prompt(trainer, module) == val_start
    # A known prompt is kept; one longer than the context keeps its last block_size characters.
    assert AttentionHeatmapCallback("Speak.").resolve_prompt(trainer, module) == "Speak."
    long_prompt = "First Citizen:\nSpeak, speak."
    resolved = AttentionHeatmapCallback(long_prompt).resolve_prompt(trainer, module)
    assert resolved == long_prompt[-16:]


def test_bad_arguments_name_the_config_key():
    with pytest.raises(ConfigError, match="attention_heatmap.every_n_validations"):
        AttentionHeatmapCallback(every_n_validations=0)
    with pytest.raises(ConfigError, match="attention_heatmap.prompt"):
        AttentionHeatmapCallback(prompt="")
