"""Mixed precision as a GPU runs it, emulated on CPU: Lightning's MixedPrecision plugin and
torch's autocast are the same code on both, so bf16-mixed training, clipping, compile, the MoE
router and checkpoints are checked here, where CI runs."""

import json

import pytest
import torch
from helpers import (
    PROBED_RUN,
    TINY_TEXT,
    assert_clipped,
    compose_task,
    run_train,
    train_in_process,
    vocab_loss,
)
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision

import tinygpt.training.module
from tinygpt.analysis.attention import attention_weights
from tinygpt.analysis.moe import expert_load, specialisation
from tinygpt.analysis.plots import read_scalars
from tinygpt.checkpoint import load_checkpoint, load_model
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.generation import generate
from tinygpt.generation.compiled import shape_key
from tinygpt.models import TinyGPT, TinyGPTConfig

# Lightning's CPU 16-mixed: trainer.precision=16-mixed on CPU falls back to bf16-mixed (see the
# test below), so the plugin is given whole, with its real GradScaler, as a GPU run would get it.
FP16_MIXED = [
    "trainer.precision=null",
    "trainer.plugins=[{_target_:lightning.pytorch.plugins.precision.MixedPrecision,"
    "precision:16-mixed,device:cpu},{_target_:tinygpt.training.checkpointing.SafeCheckpointIO}]",
]


@pytest.mark.slow
def test_bf16_mixed_command_line_trains_and_checkpoint_generates_in_float32(
    tiny_text_file, tmp_path
):
    run_dir = tmp_path / "run"
    result = run_train(
        "trainer.precision=bf16-mixed",  # the command as a user types it, on trainer=default
        *PROBED_RUN,
        "callbacks.attention_heatmap=null",
        f"+callbacks.probe.out_dir={run_dir}",
        f"data.path={tiny_text_file}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.5
    probe = json.loads((run_dir / "probe.json").read_text())
    assert (probe["precision"], probe["scaler"], probe["fused"]) == ("bf16-mixed", None, True)
    assert_clipped(probe)

    # Autocast leaves the weights in float32: the checkpoint is a float32 model like any other.
    state = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["state_dict"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
    model = load_model(run_dir / "checkpoints" / "best.ckpt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    text = generate(model, "First", max_new_tokens=30, temperature=0.8, seed=1)
    assert text.startswith("First") and len(text) == 35


def test_bf16_mixed_moe_trains_clips_and_draws(tiny_text_file, tmp_path):
    run_dir = tmp_path / "run"
    summary, probe = train_in_process(
        run_dir,
        tiny_text_file,
        "trainer=cpu",
        "trainer.precision=bf16-mixed",
        "model=moe",
        "callbacks.attention_heatmap.prompt=First",
        heatmaps=True,  # the pictures, drawn after validation, with the MoE dashboard's
    )
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.4
    assert (probe["precision"], probe["fused"]) == ("bf16-mixed", True)
    assert_clipped(probe)
    scalars = read_scalars(run_dir)
    train_loss = [value for _, value in scalars["train/loss"]]
    assert train_loss[-1] < train_loss[0] - 0.4
    loads = [scalars[f"moe/layer0/load/expert{e}"][-1][1] for e in range(4)]
    assert sum(loads) == pytest.approx(1.0)
    assert "attention/entropy/layer0_head0" in scalars
    for name in ("expert_load.png", "expert_specialisation.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000
    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_fused_adamw_under_bf16_mixed_steps_as_the_foreach_one(
    tiny_text_file, tmp_path, monkeypatch
):
    # The safety claim behind keeping the fused AdamW: with no loss scaler it does exactly what
    # the foreach AdamW (which Lightning lets clip) does with the same clipped gradients.
    short = ["trainer=cpu", "trainer.precision=bf16-mixed", "trainer.max_steps=10"]
    train_in_process(tmp_path / "fused", tiny_text_file, *short)
    monkeypatch.setattr(tinygpt.training.module, "fused_adamw", lambda device: False)
    _, probe = train_in_process(tmp_path / "foreach", tiny_text_file, *short)
    assert probe["fused"] is False
    fused, foreach = (
        load_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"]
        for run in ("fused", "foreach")
    )
    # bf16 activations turn float rounding into small differences that grow step by step: the
    # weight matrices end about 5e-4 apart (relative norm), and 1.5e-2 to 3.5e-2 apart when the
    # fused run skips clipping. Biases are left out: the attention key bias has a zero true
    # gradient, so Adam amplifies its rounding noise into steps of up to lr.
    for name, weight in fused.items():
        if weight.dim() >= 2:
            relative = ((weight - foreach[name]).norm() / weight.norm()).item()
            assert relative < 3e-3, (name, relative)


def test_16_mixed_with_a_grad_scaler_clips_true_gradients(tiny_text_file, tmp_path):
    # On CPU, Lightning runs trainer.precision=16-mixed as bf16-mixed; hence the explicit plugin.
    cfg = compose_task("train", ["trainer=cpu", "trainer.precision=16-mixed"], tmp_path / "cfg")
    with pytest.warns(UserWarning, match="Using `precision='bf16-mixed'` instead"):
        trainer = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert trainer.precision == "bf16-mixed"

    run_dir = tmp_path / "run"
    summary, probe = train_in_process(run_dir, tiny_text_file, "trainer=cpu", *FP16_MIXED)
    assert (probe["precision"], probe["scaler"]) == ("16-mixed", "GradScaler")
    # Under a loss scaler AdamW runs foreach, so Lightning unscales before clipping.
    assert probe["fused"] is False
    assert_clipped(probe)
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.5


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        (["trainer.precision=bf16-mixed"], (None, "bf16-mixed")),
        (FP16_MIXED, ("GradScaler", "16-mixed")),
    ],
    ids=["bf16-mixed", "16-mixed"],
)
def test_muon_trains_moe_under_mixed_precision_with_clipping(
    tiny_text_file, tmp_path, precision, expected
):
    # MuonWithAdamW is one optimizer to Lightning: the GradScaler unscales both optimizers'
    # gradients before clipping, and the MoE router's matrix is Muon's.
    summary, probe = train_in_process(
        tmp_path / "run", tiny_text_file, "trainer=cpu", *precision, "model=moe", "optim.name=muon"
    )
    assert (probe["scaler"], probe["precision"]) == expected
    assert_clipped(probe)
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.4


def test_compiled_model_trains_under_bf16_mixed(tiny_text_file, tmp_path):
    # The GPU check's first step (bf16-mixed + compile), at one layer: compiling is the cost.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    summary, probe = train_in_process(
        tmp_path / "run",
        tiny_text_file,
        "trainer=cpu",
        "trainer.precision=bf16-mixed",
        "model.compile=true",
        "model.n_layer=1",
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert (probe["precision"], probe["fused"]) == ("bf16-mixed", True)
    assert_clipped(probe)
    assert summary["final_val_loss"] < vocab_loss(tiny_text_file) - 0.4


def moe_model(**overrides) -> TinyGPT:
    config = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, ffn="moe")
    return TinyGPT(TinyGPTConfig(**{**config, **overrides})).eval()


def test_router_decides_in_float32_under_lightnings_bf16_autocast():
    # Lightning's own autocast context (cache_enabled=False), as training_step runs in it.
    autocast = MixedPrecision("bf16-mixed", "cpu").forward_context
    model = moe_model()
    moe = model.moe_modules()[1]
    x = torch.randn(4, 16, 32)
    reference = moe(x)
    reference_stats = moe.stats()
    reference_choice = moe.stats().expert
    with autocast():
        out = moe(x)
    assert out.dtype == torch.bfloat16  # the experts run in bf16, as F.linear would
    stats = moe.stats()
    # The router saw float32 inputs and computed in float32: bit for bit the same probabilities
    # and choices as without autocast (bf16-rounded logits change the aux loss, at least).
    assert stats.aux_loss.dtype == stats.router_entropy.dtype == torch.float32
    assert torch.equal(moe.stats().expert, reference_choice)
    assert torch.equal(stats.load, reference_stats.load)
    assert torch.equal(stats.aux_loss, reference_stats.aux_loss)
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)

    # In the whole model, where the router's input comes out of bf16 attention blocks.
    ids = torch.randint(40, (2, 16))
    with autocast():
        logits, _ = model(ids)
    assert logits.dtype == torch.bfloat16
    assert all(s.router_entropy.dtype == torch.float32 for s in model.moe_stats().values())


def test_analysis_functions_under_autocast_return_float32():
    # The attention and MoE callbacks run after validation, outside Lightning's autocast; a
    # notebook may call the same functions inside one.
    tokenizer = CharTokenizer.from_text(TINY_TEXT)
    model = moe_model(vocab_size=tokenizer.vocab_size)
    model.tokenizer = tokenizer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = attention_weights(model, "First Citizen:")
        load = expert_load(model, tokenizer.encode(TINY_TEXT[:64]).view(4, 16))
        _, counts = specialisation(model, TINY_TEXT[:64])
    assert weights.dtype == load.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=2e-2, rtol=0)
    torch.testing.assert_close(load.sum(-1), torch.ones(2))
    assert counts.sum() == 2 * 64  # every character routed once in each of the two MoE layers


def test_float32_matmul_precision_high_changes_nothing_on_cpu():
    # train.py asks for TF32 matmuls ("high") for GPUs; CPUs have no TF32, so CPU runs, and the
    # tests that run train() in this process, keep exact float32 results.
    model = TinyGPT(TinyGPTConfig(vocab_size=40, block_size=16, n_layer=2, n_embd=64)).eval()
    ids = torch.randint(40, (4, 16))
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        exact, _ = model(ids)
        torch.set_float32_matmul_precision("high")
        high, _ = model(ids)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(exact, high)


def test_compiled_step_cache_key_tells_dtypes_and_devices_apart():
    # A step built for float32 weights on one device is never served to another dtype or device.
    model = TinyGPT(TinyGPTConfig(vocab_size=40, block_size=16, n_layer=1, n_embd=32))
    base = shape_key(model, 1)
    assert shape_key(model.to(torch.bfloat16), 1) != base
    assert shape_key(model.to(device="meta", dtype=torch.float32), 1) != base
