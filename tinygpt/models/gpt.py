"""The TinyGPT transformer: a GPT-2 style decoder for character-level language modelling.

One function, :meth:`TinyGPT.forward_with`, computes the model for training, analysis and
decoding, from the tensors that :meth:`TinyGPT.tensors` gathers out of the modules. Decoding
gathers them once per generation: at batch 1 a token of a small model is a few dozen tiny ops,
and a module call or attribute lookup per weight would cost about as much as the op itself.
For the same reason activations stay 2-D, ``(batch * t, n_embd)``, and layer norms are called
as ``torch.layer_norm``. Torch only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt.models.config import TinyGPTConfig
from tinygpt.models.moe import MoEFeedForward, MoEStats

Affine = tuple[torch.Tensor, torch.Tensor | None]  # weight, bias


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode (no dropout, no router jitter), then restore it.

    A model already in eval mode is left alone: ``train()`` and ``eval()`` walk every module,
    which costs more than a short decoding call at the notebook's size.
    """
    if not model.training:
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        model.train()


# What the forward reads (TinyGPT.tensors): (wte, wpe, ln_f, layers, cache_mask), with per layer
# (ln_1, qkv, proj, ln_2, ffn, cache): affines as (weight, bias), ffn the dense (fc, proj) or the
# MoE layer itself, cache (keys, values) each (batch, head, block, dim), or None. wte is also the
# output head (tied); cache_mask is (block, block) additive: row p lets a query at p see keys 0..p.
ModelTensors = tuple


def _affine(module: nn.Module) -> Affine:
    return module.weight, module.bias


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention with the softmax written out, so its weights can be inspected."""
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)


class MLP(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)


def _renamed_mlp(module: nn.Module, state: dict, prefix: str, *_: object) -> None:
    """Checkpoints written before ``Block.mlp`` became ``Block.ffn`` load as they did."""
    for key in [key for key in state if key.startswith(prefix + "mlp.")]:
        state[prefix + "ffn." + key.removeprefix(prefix + "mlp.")] = state.pop(key)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + ffn(ln_2(x)); its weights
    (the math is :meth:`TinyGPT.forward_with`)."""

    def __init__(self, config: TinyGPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.ffn = MoEFeedForward(config) if config.is_moe_layer(layer) else MLP(config)
        self.register_load_state_dict_pre_hook(_renamed_mlp)


class TinyGPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, final LayerNorm, tied output head."""

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = None  # set by checkpoint loading, so the model can decode text itself
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf, 2017)
        block = config.block_size
        mask = torch.full((block, block), float("-inf")).triu(1)
        self.register_buffer("cache_mask", mask, persistent=False)
        # Keys and values per layer, (batch, n_head, block_size, head_dim): setup_kv_cache.
        self.kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth. MoE experts are stacked Parameters, not Linears, so
        # apply() does not reach them: they get the same init from their own reset_parameters.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def moe_modules(self) -> dict[int, MoEFeedForward]:
        """The MoE feed-forward layers, by block index (empty for a dense model)."""
        ffns = {i: block.ffn for i, block in enumerate(self.blocks)}
        return {i: ffn for i, ffn in ffns.items() if isinstance(ffn, MoEFeedForward)}

    def moe_stats(self) -> dict[int, MoEStats]:
        """Routing statistics and losses of the last forward, by block index; tensors only."""
        return {i: moe.stats() for i, moe in self.moe_modules().items()}

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' load-balancing and z-losses from the last forward (scalar).

        Zero for a dense model. The trainer adds it to the cross-entropy loss.
        """
        zero = torch.zeros((), device=self.wte.weight.device)
        return sum((moe.aux_loss() for moe in self.moe_modules().values()), zero)

    @torch.no_grad()
    def expert_assignments(self, idx: torch.Tensor) -> torch.Tensor:
        """Expert chosen for each position, per MoE layer: ``(n_moe_layers, B, T)`` int64.

        With top-k routing this is the highest-weighted of the k. Runs in eval mode (no router
        jitter or dropout) and restores the previous mode.
        """
        with evaluating(self):
            self(idx)
        B, T = idx.shape
        choices = [moe.stats().expert[:, 0].view(B, T) for moe in self.moe_modules().values()]
        if not choices:
            return torch.empty(0, B, T, dtype=torch.long, device=idx.device)
        return torch.stack(choices)

    def num_parameters(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab)`` and, with ``targets``, the mean cross-entropy.

        With ``input_pos`` (positions of ``idx`` in the sequence), attention reads and writes the
        KV cache set up by :meth:`setup_kv_cache`.
        """
        if input_pos is not None and self.kv_cache is None:
            raise RuntimeError("input_pos given but no KV cache is set up (setup_kv_cache)")
        logits, _ = self.forward_with(self.tensors(), idx, input_pos)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def forward_with_attention(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every layer's attention weights ``(B, n_head, T, T)``, for analysis.

        Uses an explicit softmax instead of the fused kernel; outputs match ``forward``.
        """
        return self.forward_with(self.tensors(), idx, need_weights=True)

    def tensors(self) -> ModelTensors:
        """The parameters, the KV cache (once set up) and the cache mask, as the forward reads
        them. They are the modules' own tensors, so in-place updates show; replaced ones do not."""
        caches, layers = self.kv_cache or [None] * len(self.blocks), []
        for block, cache in zip(self.blocks, caches, strict=True):
            ffn = block.ffn
            if isinstance(ffn, MLP):
                ffn = (_affine(ffn.fc), _affine(ffn.proj))
            modules = (block.ln_1, block.attn.qkv, block.attn.proj, block.ln_2)
            layers.append((*map(_affine, modules), ffn, cache))
        return self.wte.weight, self.wpe.weight, _affine(self.ln_f), tuple(layers), self.cache_mask

    def forward_with(
        self,
        t: ModelTensors,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The model on tensors ``t`` (:meth:`tensors`): logits ``(B, T, vocab)``, and with
        ``need_weights`` each layer's attention weights.

        With ``input_pos`` each layer writes the keys and values of those positions into its
        cache and its queries attend over the whole cache under the cache mask: fixed shapes,
        so the step can be compiled, and contiguous keys and values, which attention would
        otherwise copy at every call.
        """
        wte, wpe, ln_f, layers, cache_mask = t
        B, T = idx.shape
        C, H = self.config.n_embd, self.config.n_head
        p = self.config.dropout if self.training else 0.0
        if input_pos is None:
            if T > self.config.block_size:
                raise ValueError(
                    f"sequence of length {T} is longer than block_size {self.config.block_size}"
                )
            pos, mask = torch.arange(T, device=idx.device), None
        else:
            pos, mask = input_pos, cache_mask.index_select(0, input_pos)
        x = wte.index_select(0, idx.reshape(-1)).view(B, T, C) + wpe.index_select(0, pos)
        x = x.view(B * T, C)
        x = F.dropout(x, p) if p else x
        attention = []
        for ln_1, qkv, attn_proj, ln_2, ffn, cache in layers:
            h = torch.layer_norm(x, (C,), *ln_1)
            # Split on the (B, T, 3, head, head_dim) view: its gradient then stacks straight
            # into the layout of qkv's (a permuted split trains about 2% slower).
            q, k, v = F.linear(h, *qkv).view(B, T, 3, H, C // H).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, head, T, dim)
            if input_pos is not None:
                keys, values = cache
                keys.index_copy_(2, input_pos, k)
                values.index_copy_(2, input_pos, v)
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            elif need_weights:
                y, weights = explicit_attention(q, k, v)
                attention.append(weights)
            else:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            y = F.linear(y.transpose(1, 2).reshape(B * T, C), *attn_proj)
            x = x + (F.dropout(y, p) if p else y)
            h = torch.layer_norm(x, (C,), *ln_2)
            if isinstance(ffn, nn.Module):
                x = x + ffn(h)  # mixture of experts
            else:
                fc, proj = ffn
                h = F.linear(F.gelu(F.linear(h, *fc)), *proj)
                x = x + (F.dropout(h, p) if p else h)
        x = torch.layer_norm(x, (C,), *ln_f)
        return F.linear(x, wte).view(B, T, -1), attention

    def setup_kv_cache(self, batch_size: int) -> None:
        """Allocate each layer's KV cache: ``block_size`` positions, in the dtype the keys will
        have (the weights', or autocast's where it is on)."""
        config, weight = self.config, self.wte.weight
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        device = weight.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else weight.dtype
        self.kv_cache = [
            (weight.new_zeros(shape, dtype=dtype), weight.new_zeros(shape, dtype=dtype))
            for _ in self.blocks
        ]

    def clear_kv_cache(self) -> None:
        self.kv_cache = None
