"""The eager generation loop's cached forward (prefills and one-token steps) as plain tensor calls.

At batch 1 a token of a small model costs a few dozen tiny ops, and on a CPU the time goes to
calling them, not to the arithmetic: every ``nn.Module.__call__``, module attribute lookup,
3-D ``linear`` reshape and additive mask costs about as much as the matmul it wraps. A
:class:`DecodeStep` collects a :class:`~tinygpt.model.TinyGPT`'s weights and KV-cache buffers
once per generation, keeps activations 2-D ``(batch * t, n_embd)``, and attends over the whole
cache with the model's additive cache mask (slicing the filled part instead would make the
keys and values non-contiguous, and attention would copy them on every call). It computes what
``model(tokens, input_pos=...)`` computes, in eval mode (no dropout), and tests hold the two
equal.

The module forward stays the path for training, analysis and the AOTInductor-built step of
:mod:`tinygpt.compiled_step` (``torch.export`` traces modules); mixture-of-experts
feed-forwards are called as modules, since their routing is already a handful of batched ops.
Layer norms are called as ``torch.layer_norm``: ``F.layer_norm``'s Python wrapper costs about a
microsecond a call, a few percent of a step at the seed's size."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt.model import MLP, TinyGPT


class _Layer(NamedTuple):
    ln_1: tuple[torch.Tensor, torch.Tensor | None]
    qkv: tuple[torch.Tensor, torch.Tensor | None]
    proj: tuple[torch.Tensor, torch.Tensor | None]
    ln_2: tuple[torch.Tensor, torch.Tensor | None]
    keys: torch.Tensor  # (batch, n_head, block_size, head_dim), the layer's KV cache
    values: torch.Tensor
    mlp: tuple[torch.Tensor, ...] | None  # dense: fc weight, fc bias, proj weight, proj bias
    moe: nn.Module | None  # a mixture-of-experts feed-forward, called as a module


def _affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    return module.weight, module.bias


class DecodeStep:
    """``step(tokens, start)``: the last position's logits, reading and writing the KV cache.

    Build it after :meth:`TinyGPT.setup_kv_cache`: a call writes its tokens' keys and values
    into those buffers at ``start ..`` and attends to positions ``0 ..`` its own, which earlier
    calls must have filled. It holds the weights themselves, so it reflects later in-place
    updates, but not replaced modules or a new cache.
    """

    def __init__(self, model: TinyGPT) -> None:
        config = model.config
        self.n_embd, self.n_head = config.n_embd, config.n_head
        self.wte, self.wpe = model.wte.weight, model.wpe.weight
        self.ln_f, self.lm_head = _affine(model.ln_f), model.lm_head.weight
        self.layers = []
        for block in model.blocks:
            cache, ffn = block.attn.kv_cache, block.mlp
            if cache is None:
                raise RuntimeError("set up the model's KV cache before building a DecodeStep")
            dense = isinstance(ffn, MLP)
            self.layers.append(
                _Layer(
                    ln_1=_affine(block.ln_1),
                    qkv=_affine(block.attn.qkv),
                    proj=_affine(block.attn.proj),
                    ln_2=_affine(block.ln_2),
                    keys=cache.k,
                    values=cache.v,
                    mlp=(*_affine(ffn.fc), *_affine(ffn.proj)) if dense else None,
                    moe=None if dense else ffn,
                )
            )
        # (block_size, block_size) additive mask: row p lets a query at p see keys 0 .. p.
        self.cache_mask = model.cache_mask

    def __call__(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Logits ``(batch, vocab)`` after ``tokens`` ``(batch, t)`` placed at ``start ..``.

        ``t == 1`` is a decoding step; ``t > 1`` a prefill (or a chunk of one).
        """
        B, T = tokens.shape
        C, H = self.n_embd, self.n_head
        end = start + T
        shape = (C,)
        mask = self.cache_mask[start:end]
        # Activations stay 2-D, (batch * t, n_embd): linear then needs no reshapes.
        x = self.wte.index_select(0, tokens.reshape(-1))
        x = (x.view(B, T, C) + self.wpe[start:end]).view(B * T, C)
        for layer in self.layers:
            h = torch.layer_norm(x, shape, *layer.ln_1)
            qkv = F.linear(h, *layer.qkv).view(B, T, 3, H, C // H)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, head, t, head_dim)
            layer.keys.narrow(2, start, T).copy_(k)
            layer.values.narrow(2, start, T).copy_(v)
            y = F.scaled_dot_product_attention(q, layer.keys, layer.values, attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(B * T, C), *layer.proj)
            h = torch.layer_norm(x, shape, *layer.ln_2)
            if layer.mlp is None:
                x = x + layer.moe(h)
            else:
                fc_w, fc_b, proj_w, proj_b = layer.mlp
                x = x + F.linear(F.gelu(F.linear(h, fc_w, fc_b)), proj_w, proj_b)
        last = x if T == 1 else x.view(B, T, C)[:, -1]
        return F.linear(torch.layer_norm(last, shape, *self.ln_f), self.lm_head)
