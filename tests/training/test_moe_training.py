"""A short `model=moe` training run: loss goes down, routing is logged and drawn, it generates."""

import json
import math

from helpers import PNG_MAGIC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tinygpt.analysis.plots import read_scalars
from tinygpt.checkpoint import load_model
from tinygpt.cli import train as train_cli
from tinygpt.generation import generate


def test_moe_run_trains_logs_routing_and_generates(tiny_text_file, tmp_path):
    run_dir = tmp_path / "run"
    train_cli.main(
        [
            "model=moe",
            "trainer=cpu",
            "trainer.max_steps=40",
            "trainer.val_check_interval=20",
            "trainer.log_every_n_steps=10",
            "model.block_size=16",
            "data.batch_size=8",
            "callbacks.attention_heatmap=null",  # drawn in tests/training/test_precision.py
            f"data.path={tiny_text_file}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = len(set(tiny_text_file.read_text()))
    assert summary["final_val_loss"] < math.log(vocab) - 0.5

    scalars = read_scalars(run_dir)
    for layer in (0, 1):
        loads = [scalars[f"moe/layer{layer}/load/expert{e}"][-1][1] for e in range(4)]
        assert abs(sum(loads) - 1.0) < 1e-5  # every token goes to exactly one expert
        for name in ("router_entropy", "dropped_fraction", "aux_loss", "z_loss"):
            assert f"moe/layer{layer}/{name}" in scalars
    assert scalars["moe/layer0/dropped_fraction"][-1][1] == 0.0  # dropless by default
    assert (run_dir / "plots" / "expert_load.png").stat().st_size > 1000
    assert (run_dir / "plots" / "expert_specialisation.png").stat().st_size > 1000
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("moe/expert_load", "moe/specialisation"):  # at each validation, as PNGs
        images = events.Images(tag)
        assert [i.step for i in images] == [20, 40], tag
        assert images[-1].encoded_image_string.startswith(PNG_MAGIC) and images[-1].width > 300

    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert model.config.ffn == "moe" and model.config.num_experts == 4
    text = generate(model, "First", max_new_tokens=40, temperature=0.8, seed=1)
    assert text.startswith("First") and len(text) == 45
