"""The TinyGPT transformer: a GPT-2 style decoder for character-level language modelling.

Imports torch only, so it can be used from a notebook without Lightning or Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt.models.config import TinyGPTConfig
from tinygpt.models.kv_cache import KVCache
from tinygpt.models.moe import MoEFeedForward, MoEStats


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


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        cache_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        weights = None
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos given but no KV cache is set up")
            k, v = self.kv_cache.update(input_pos, k, v)
            # cache_mask (T, max_len): 0 for the cached keys at or before a query's position,
            # -inf for the others (an additive mask, so SDPA does not convert it every step).
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache_mask)
        elif need_weights:
            y, weights = explicit_attention(q, k, v)
        else:
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y)), weights


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention with the softmax written out, so its weights can be inspected."""
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


class MLP(nn.Module):
    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


def build_feed_forward(config: TinyGPTConfig, layer: int) -> nn.Module:
    """The feed-forward layer of block ``layer``, of the kind ``config.ffn`` names."""
    if config.is_moe_layer(layer):
        return MoEFeedForward(config)
    return MLP(config)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, config: TinyGPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = build_feed_forward(config, layer)

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        cache_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attn(self.ln_1(x), input_pos, cache_mask, need_weights)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class TinyGPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, final LayerNorm, tied output head."""

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = None  # set by checkpoint loading, so the model can decode text itself
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf, 2017)
        self.register_buffer("cache_mask", torch.empty(0, dtype=torch.bool), persistent=False)
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
        return {
            i: block.mlp
            for i, block in enumerate(self.blocks)
            if isinstance(block.mlp, MoEFeedForward)
        }

    def moe_stats(self) -> dict[int, MoEStats]:
        """Routing statistics and losses of the last forward, by block index; tensors only."""
        return {i: moe.stats() for i, moe in self.moe_modules().items()}

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' load-balancing and z-losses from the last forward (scalar).

        Zero for a dense model. The trainer adds it to the cross-entropy loss.
        """
        total = torch.zeros((), device=self.wte.weight.device)
        for moe in self.moe_modules().values():
            total = total + moe.aux_loss()
        return total

    @torch.no_grad()
    def expert_assignments(self, idx: torch.Tensor) -> torch.Tensor:
        """Expert chosen for each position, per MoE layer: ``(n_moe_layers, B, T)`` int64.

        With top-k routing this is the highest-weighted of the k. Runs in eval mode (no router
        jitter or dropout) and restores the previous mode.
        """
        with evaluating(self):
            self._run(idx)
        B, T = idx.shape
        choices = [moe.last_assignments()[:, 0].view(B, T) for moe in self.moe_modules().values()]
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
        logits, _ = self._run(idx, input_pos=input_pos)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def forward_with_attention(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every layer's attention weights ``(B, n_head, T, T)``, for analysis.

        Uses an explicit softmax instead of the fused kernel; outputs match ``forward``.
        """
        logits, weights = self._run(idx, need_weights=True)
        return logits, weights

    def _run(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        T = idx.size(1)
        if input_pos is None:
            if T > self.config.block_size:
                raise ValueError(
                    f"sequence of length {T} is longer than block_size {self.config.block_size}"
                )
            pos = torch.arange(T, device=idx.device)
            cache_mask = None
        else:
            pos = input_pos
            cache_mask = self.cache_mask.index_select(0, input_pos)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        all_weights = []
        for block in self.blocks:
            x, weights = block(x, input_pos, cache_mask, need_weights)
            if weights is not None:
                all_weights.append(weights)
        return self.lm_head(self.ln_f(x)), all_weights

    def setup_kv_cache(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate one cache per layer holding ``block_size`` positions."""
        param = self.wte.weight
        device = device or param.device
        dtype = dtype or param.dtype
        max_len = self.config.block_size
        head_dim = self.config.n_embd // self.config.n_head
        for block in self.blocks:
            block.attn.kv_cache = KVCache(
                batch_size, self.config.n_head, max_len, head_dim, device, dtype
            )
        causal = torch.ones(max_len, max_len, dtype=torch.bool, device=device).tril()
        self.cache_mask = torch.zeros(max_len, max_len, device=device, dtype=dtype).masked_fill(
            ~causal, float("-inf")
        )

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None
        # Made outside inference mode: decoding clears the cache inside it, and an inference
        # tensor left as a buffer breaks DDP, which syncs every buffer before each forward
        # (the text-sample callback decodes on rank 0 between training steps).
        with torch.inference_mode(False):
            self.cache_mask = torch.empty(0, dtype=torch.bool, device=self.wte.weight.device)
