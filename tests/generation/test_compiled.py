"""The AOTInductor-compiled decoding step: same tokens as eager decoding, one build per shape.

A build is a real C++ compile (10-20 s), so most tests share one: batch 2 (whose token column
is not contiguous in the generation buffer) of the same small model; the cache tests build
again on purpose, into fresh cache directories.
"""

import tempfile

import pytest
import torch
from helpers import spread_model

from tinygpt.errors import CompileError, ConfigError
from tinygpt.generation import Decoder, generate_ids, loop
from tinygpt.generation import compiled as compiled_module
from tinygpt.generation.compiled import can_compile, compiled_step
from tinygpt.generation.loop import decoding_settings
from tinygpt.models import TinyGPT

BLOCK, BATCH = 8, 2  # spread_model's context


@pytest.fixture(scope="module")
def model() -> TinyGPT:
    return spread_model()


def prompt(batch: int = BATCH) -> torch.Tensor:
    return torch.tensor([[3, 1, 4, 1, 5]]).expand(batch, -1)


@pytest.mark.slow  # a C++ build
@pytest.mark.parametrize(
    "params",
    [
        Decoder(temperature=0.0),
        Decoder(temperature=0.9, top_k=8, top_p=0.95),
        Decoder(temperature=0.9, top_k=8, repetition_penalty=1.3),
    ],
    ids=["greedy", "sampled", "penalised"],
)
def test_compiled_decoding_chooses_the_eager_tokens(model, params):
    # Greedy and sampled use the token chosen in the step's graph; a repetition penalty needs the
    # history, so "penalised" uses the step's logits and samples eagerly.
    # 3 windows long, so the compiled steps also follow the eager refills of the cache.
    runs = [
        generate_ids(model, prompt(), 3 * BLOCK, params, torch.Generator().manual_seed(0), **kw)
        for kw in (dict(compile=True), dict(compile=False))
    ]
    assert torch.equal(*runs)


@pytest.mark.slow  # a C++ build
def test_a_one_token_prompt_decodes_compiled_as_eager(model):
    # The prompt's last token runs through the compiled step: here it is the whole prompt, so
    # no eager prefill comes before it.
    params = Decoder(temperature=0.9, top_k=8, top_p=0.95)
    runs = [
        generate_ids(
            model, prompt()[:, :1], BLOCK + 3, params, torch.Generator().manual_seed(0), compile=c
        )
        for c in (True, False)
    ]
    assert torch.equal(*runs)


def flip_final_norm(model: TinyGPT) -> None:
    """Negate the last layer norm's affine weights in place, which negates the logits."""
    model.ln_f.weight.mul_(-1)
    model.ln_f.bias.mul_(-1)


@pytest.mark.slow  # a C++ build
@torch.no_grad()
def test_the_step_writes_the_models_cache_and_sees_weight_updates(model):
    # That each step computes the plain forward: tests/generation/test_cached_paths.py.
    seq = torch.randint(0, 20, (BATCH, BLOCK), generator=torch.Generator().manual_seed(1))
    model.setup_kv_cache(BATCH)
    try:
        with decoding_settings(1):  # one thread, as generate_ids runs it: the same build
            step = compiled_step(model)
            for pos in range(BLOCK):
                logits = step(seq[:, pos : pos + 1], pos)[1]
            filled = model.kv_cache[0][0].clone()
            flip_final_norm(model)  # an in-place update, as an optimizer step makes
            flipped = step(seq[:, -1:], BLOCK - 1)[1]
    finally:
        flip_final_norm(model)
        model.clear_kv_cache()
    torch.testing.assert_close(flipped, -logits, atol=1e-5, rtol=0)
    assert filled.abs().sum() > 0


@pytest.mark.slow  # a C++ build
def test_a_second_model_of_the_same_shape_reuses_the_build(model, monkeypatch):
    generate_ids(model, prompt(), 2, compile=True)  # built here if no other test built it yet

    def refuse(*args):
        raise AssertionError("compiled a shape that was compiled already")

    monkeypatch.setattr(compiled_module, "_compile", refuse)
    other = spread_model()
    with torch.no_grad():
        other.wte.weight.add_(1.0)
    greedy = Decoder(temperature=0.0)
    compiled = generate_ids(other, prompt(), BLOCK, greedy, compile=True)
    assert torch.equal(compiled, generate_ids(other, prompt(), BLOCK, greedy, compile=False))


def test_a_mixture_of_experts_decodes_uncompiled_with_a_warning():
    moe = spread_model(ffn="moe")
    assert not can_compile(moe)
    greedy = Decoder(temperature=0.0)
    with pytest.warns(UserWarning, match="dense feed-forwards only"):
        compiled = generate_ids(moe, prompt(1), BLOCK, greedy, compile=True)
    assert torch.equal(compiled, generate_ids(moe, prompt(1), BLOCK, greedy, compile=False))


def test_refusals(model):
    with pytest.raises(RuntimeError, match="KV cache"):
        compiled_step(model)
    training = spread_model().train()
    training.setup_kv_cache(1)
    with pytest.raises(ValueError, match="in eval mode"):
        compiled_step(training)
    moe = spread_model(ffn="moe")
    moe.setup_kv_cache(1)
    with pytest.raises(ValueError, match="dense feed-forwards only"):
        compiled_step(moe, Decoder(), None)


def test_a_failed_build_is_one_clear_error(monkeypatch, tmp_path):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler: g++ not found\n(a long inductor log follows)")

    monkeypatch.setattr(compiled_module, "_COMPILED", {})  # so this shape is built afresh
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(tmp_path))  # ... and not found on disk
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiler)
    training = spread_model().train()
    with pytest.raises(CompileError, match=r"\(Compiler: g\+\+ not found\); decode without"):
        generate_ids(training, prompt(), 2, compile=True)
    assert training.training  # the model is left as it was: training, no cache
    assert training.kv_cache is None
    assert list(tmp_path.rglob("*")) == [tmp_path / "decode_steps"]  # no scratch left behind


def test_decoding_compiles_only_when_asked(monkeypatch):
    def refuse(*args):
        raise AssertionError("built a compiled step nobody asked for")

    monkeypatch.setattr(loop, "compiled_step", refuse)
    trained_compiled = spread_model(compile=True)  # model.compile is about training
    generate_ids(trained_compiled, prompt(1), 3)
    generate_ids(trained_compiled, prompt(1), 1, compile=True)  # no one-token step: no build
    with pytest.raises(ConfigError, match="compile must be true or false, got 'yes'"):
        generate_ids(trained_compiled, prompt(1), 3, compile="yes")


@pytest.mark.slow  # a C++ build
def test_a_later_process_loads_the_build_from_disk_and_rebuilds_a_bad_one(
    model, monkeypatch, tmp_path
):
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    greedy = Decoder(temperature=0.0)
    eager = generate_ids(model, prompt(), BLOCK, greedy, compile=False)
    assert torch.equal(generate_ids(model, prompt(), BLOCK, greedy, compile=True), eager)
    [package] = compiled_module.package_dir().glob("*.pt2")
    real_build = compiled_module._build

    def refuse(*args):
        raise AssertionError("built a step that was on disk")

    monkeypatch.setattr(compiled_module, "_COMPILED", {})  # a new process, as far as memory goes
    monkeypatch.setattr(compiled_module, "_build", refuse)
    assert torch.equal(generate_ids(model, prompt(), BLOCK, greedy, compile=True), eager)

    package.write_bytes(b"half a package")  # a crash mid-write, a disk error
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    monkeypatch.setattr(compiled_module, "_build", real_build)
    assert torch.equal(generate_ids(model, prompt(), BLOCK, greedy, compile=True), eager)
    assert package.stat().st_size > 1000  # rebuilt in place


@pytest.mark.slow  # a C++ build
def test_an_unwritable_cache_costs_a_build_not_an_error(monkeypatch, tmp_path, capsys):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(not_a_directory))
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = spread_model()
    greedy = Decoder(temperature=0.0)
    compiled = generate_ids(model, prompt(), BLOCK, greedy, compile=True)
    assert torch.equal(compiled, generate_ids(model, prompt(), BLOCK, greedy, compile=False))
    # The build's scratch directory is gone (Inductor's own cache lands in the first tempdir
    # a process uses: here, when this test runs alone).
    assert [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []
    assert capsys.readouterr().err.splitlines() == [
        f"compiled decoding: cannot write {not_a_directory}/decode_steps (Not a directory); the "
        "step is built for this process only, not kept"
    ]


def test_the_build_key_holds_what_the_library_depends_on(model):
    key = compiled_module.shape_key(model, batch_size=2)
    assert key == compiled_module.shape_key(spread_model(dropout=0.1, compile=True), batch_size=2)
    assert key != compiled_module.shape_key(model, batch_size=3)
    assert key != compiled_module.shape_key(spread_model(bias=False), batch_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # Inductor emits threaded loops or not from this
    try:
        assert key != compiled_module.shape_key(model, batch_size=2)
    finally:
        torch.set_num_threads(threads)
