"""A dense TinyGPT checkpoint as a Hugging Face transformers model directory (the library of
``python -m tinygpt export CKPT OUT_DIR``), loaded by ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` with no custom code.

TinyGPT's dense model is GPT-2's architecture (pre-LayerNorm blocks, learned positions, tied
output head), so the weights are written in GPT-2's layout (``model.safetensors``) with a GPT-2
``config.json``, and the character vocabulary as a ``tokenizer.json`` whose ids are ours.
Writing needs ``safetensors`` only. Where GPT-2's defaults differ, the export says so: exact GELU
(``"gelu"``; GPT-2's ``"gelu_new"`` is the tanh one); ``model.bias=false`` gets zero biases,
which compute the same function; ``Conv1D`` stores weights (in, out), the transpose of
``nn.Linear``. MoE checkpoints are refused (:data:`MOE_REFUSAL`).
"""

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from tinygpt.checkpoint import load_model
from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.errors import TinyGPTError
from tinygpt.files import write_error
from tinygpt.models import TinyGPT, TinyGPTConfig

WEIGHTS_FILE = "model.safetensors"
# Checked against transformers 5.x: Mixtral, Qwen2-MoE, OLMoE, GraniteMoE, DBRX and gpt-oss
# experts are gated (SwiGLU-like, three matrices) in RMSNorm blocks with rotary positions, and
# Switch Transformers is an encoder-decoder; none computes TinyGPT's block.
MOE_REFUSAL = (
    "cannot export a mixture-of-experts model: no stock transformers architecture has its "
    "experts (two-matrix GELU MLPs routed top-k by softmax weight, in GPT-2 blocks); "
    "export a dense checkpoint (model=dense)"
)


class ExportError(TinyGPTError):
    """An export that cannot be written: an MoE model, an output directory in the way."""


def gpt2_state_dict(model: TinyGPT) -> dict[str, torch.Tensor]:
    """The dense model's weights under GPT2LMHeadModel's names and layouts.

    GPT-2's ``Conv1D`` computes ``x @ W + b`` with ``W`` stored (in, out): our ``nn.Linear``
    weights transposed. A module without bias (``model.bias=false``) gets a zero bias, which
    GPT-2's always-biased layers need. ``lm_head`` is left out: it is tied to ``wte``, and
    transformers ties it again on loading (``tie_word_embeddings``).
    """
    if model.moe_modules():
        raise ExportError(MOE_REFUSAL)
    state = model.state_dict()
    n_embd = model.config.n_embd

    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size, dtype=state["wte.weight"].dtype))

    out = {
        "transformer.wte.weight": state["wte.weight"],
        "transformer.wpe.weight": state["wpe.weight"],
    }
    for i in range(model.config.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[f"{theirs}{norm}.weight"] = state[f"{ours}{norm}.weight"]
            out[f"{theirs}{norm}.bias"] = bias(f"{ours}{norm}.bias", n_embd)
        for mine, gpt2 in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("ffn.fc", "mlp.c_fc"),
            ("ffn.proj", "mlp.c_proj"),
        ):
            weight = state[f"{ours}{mine}.weight"]  # (out, in)
            out[f"{theirs}{gpt2}.weight"] = weight.t()
            out[f"{theirs}{gpt2}.bias"] = bias(f"{ours}{mine}.bias", weight.size(0))
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", n_embd)
    # safetensors stores each tensor's own contiguous bytes.
    return {name: tensor.detach().cpu().contiguous() for name, tensor in out.items()}


def gpt2_config(config: TinyGPTConfig) -> dict[str, Any]:
    """config.json for a model of this shape: GPT2Config's fields where GPT-2's defaults differ
    (its defaults match ours in the rest: a 4x MLP, tied embeddings)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "activation_function": "gelu",  # exact GELU, as F.gelu; GPT-2's gelu_new is the tanh one
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's (GPT-2's default too, written as the docs say)
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "resid_pdrop": config.dropout,
        # A character vocabulary has no special tokens: generation stops at max_new_tokens.
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "dtype": "float32",
    }


def tokenizer_files(tokenizer: CharTokenizer, block_size: int) -> dict[str, dict[str, Any]]:
    """tokenizer.json, a ``tokenizers`` definition that splits text into single characters and
    gives each its id in our vocabulary (decoding joins them with nothing between), and
    tokenizer_config.json.

    The split pattern ``[\\s\\S]`` matches any one character, line breaks included (``.`` would
    not). A character outside the vocabulary is an error when encoding, as in ours: the
    ``unk_token`` names no token of the vocabulary.
    """
    definition = {
        "version": "1.0",
        "added_tokens": [],
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": "[\\s\\S]"},
            "behavior": "Isolated",
            "invert": False,
        },
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "WordLevel",
            "vocab": {char: i for i, char in enumerate(tokenizer.chars)},
            "unk_token": "<unk>",
        },
    }
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # transformers' clean-up would turn " ." into "." on decoding: every character counts.
        "clean_up_tokenization_spaces": False,
        "model_max_length": block_size,
    }
    return {"tokenizer.json": definition, "tokenizer_config.json": settings}


def write_model_dir(
    out_dir: Path, weights: dict[str, torch.Tensor], config: TinyGPTConfig, tokenizer: CharTokenizer
) -> None:
    """Write a transformers model directory's files into ``out_dir`` (existing): the weights
    (:func:`gpt2_state_dict`), config.json, tokenizer.json, tokenizer_config.json and
    generation_config.json."""
    # Bytes written by Python, so the file gets the usual permissions (safetensors' own
    # save_file makes it readable by its owner only).
    (out_dir / WEIGHTS_FILE).write_bytes(save(weights, metadata={"format": "pt"}))
    files = {
        "config.json": gpt2_config(config),
        **tokenizer_files(tokenizer, config.block_size),
        # GPT-2 has no positions past the window: default generate() calls stop there.
        "generation_config.json": {"max_length": config.block_size},
    }
    for name, content in files.items():
        text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        (out_dir / name).write_text(text, encoding="utf-8")


def export(ckpt_path: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Export the checkpoint to ``out_dir``; returns it.

    Refuses an existing non-empty ``out_dir`` unless ``force`` (then it is replaced, if it is a
    model directory: one holding a config.json). The files are written into a new directory
    beside ``out_dir`` and renamed into place at the end, so an export that fails leaves nothing
    behind, and a replaced directory stays whole until the new one is complete.
    """
    out_dir = Path(out_dir).resolve()  # "." or "a/.." has no name to make siblings from
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ExportError(f"{out_dir} exists and is not empty; add --force to replace it")
        if not (out_dir / "config.json").is_file():
            # --force replaces a model directory, never a directory of other files.
            raise ExportError(
                f"{out_dir} holds files but no config.json: not a model directory, so not "
                "replaced even with --force; choose another OUT_DIR"
            )
    model = load_model(ckpt_path)
    weights = gpt2_state_dict(model)  # refuses an MoE model
    # A hidden sibling of out_dir: the same file system, so the rename is atomic.
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir(parents=True)
        write_model_dir(staging, weights, model.config, model.tokenizer)
        if out_dir.exists():  # --force: a directory cannot be renamed onto a non-empty one,
            # so the old one is moved aside whole (atomic) and removed once the new one is in
            os.replace(out_dir, aside := staging.with_suffix(".old"))
            os.replace(staging, out_dir)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except OSError as exc:  # disk full, permission denied: one line naming the directory
        raise write_error(out_dir, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
