"""Pictures of MoE routing: the expert load (every assignment, as training logs it) and which
expert each character goes to, drawn by the MoE dashboard callback."""

from types import SimpleNamespace

import torch
from helpers import PNG_MAGIC, TINY_TEXT

from tinygpt.analysis.moe import expert_load, specialisation, text_windows
from tinygpt.data import CharTokenizer
from tinygpt.models import TinyGPT, TinyGPTConfig
from tinygpt.training.callbacks import MoEDashboard


def moe_model(**overrides) -> TinyGPT:
    tokenizer = CharTokenizer.from_text(TINY_TEXT)
    config = dict(vocab_size=tokenizer.vocab_size, block_size=16, n_embd=32, ffn="moe")
    model = TinyGPT(TinyGPTConfig(**{**config, **overrides})).train()
    model.tokenizer = tokenizer
    return model


def test_with_top_1_the_load_is_the_share_of_characters_each_expert_gets():
    model = moe_model()
    text = TINY_TEXT[:640]
    load = expert_load(model, text_windows(model, text))
    _, counts = specialisation(model, text)  # (layers, characters, experts)
    torch.testing.assert_close(load, counts.sum(1) / counts.sum((1, 2)).unsqueeze(-1))
    assert model.training  # both ran in eval mode and restored it


def test_with_top_2_every_assignment_counts():
    model = moe_model(experts_per_token=2, num_experts=3)
    load = expert_load(model, text_windows(model, TINY_TEXT[:640]))
    assert load.shape == (2, 3)
    torch.testing.assert_close(load.sum(-1), torch.ones(2))
    logged = torch.stack([stats.load for stats in model.moe_stats().values()])
    torch.testing.assert_close(load, logged)


def test_the_dashboard_saves_both_pictures_for_a_moe_model_only(tmp_path):
    model = moe_model()
    tokens = model.tokenizer.encode(TINY_TEXT)
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(val_data=tokens))
    MoEDashboard(dirpath=str(tmp_path / "moe"), chars=512).on_fit_end(
        trainer, SimpleNamespace(model=model)
    )
    for name in ("expert_load.png", "expert_specialisation.png"):
        assert (tmp_path / "moe" / name).read_bytes().startswith(PNG_MAGIC)
    dense = SimpleNamespace(model=moe_model(ffn="dense"))
    MoEDashboard(dirpath=str(tmp_path / "dense")).on_fit_end(trainer, dense)
    assert not (tmp_path / "dense").exists()
