"""Mixture-of-Experts feed-forward layer: a router sends each token to its top-k expert MLPs.

A drop-in for the dense MLP of a block. Each expert has the dense MLP's shape
(n_embd -> 4*n_embd -> GELU -> n_embd), so with top-1 routing a token costs about what it costs
in the dense model while the layer holds ``num_experts`` times the feed-forward parameters.
Autograd differentiates it all: a hand-written backward measured no faster (docs/moe.md).

Imports torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt.models.config import TinyGPTConfig


@dataclass
class MoEStats:
    """What one MoE layer measured in its last forward; all tensors, so reading them never syncs.

    ``aux_loss`` and ``z_loss`` have their coefficients applied and keep their graph (the trainer
    adds them to the loss); the others are detached.
    """

    aux_loss: torch.Tensor  # Switch Transformer load-balancing loss, scalar
    z_loss: torch.Tensor  # ST-MoE router z-loss, scalar
    load: torch.Tensor  # (num_experts,) fraction of token assignments each expert received
    router_entropy: torch.Tensor  # mean entropy of the router's distribution, scalar
    dropped_fraction: torch.Tensor  # fraction of assignments dropped by capacity, scalar
    expert: torch.Tensor  # (tokens, k) the experts chosen, best first


class MoEFeedForward(nn.Module):
    """Top-k routed experts with Switch load balancing, router z-loss and optional capacity.

    Tokens are dispatched by sorting their expert ids, so each expert's tokens are contiguous
    and each expert runs once on its group; there is no Python loop over tokens.
    """

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        C, H, E = config.n_embd, 4 * config.n_embd, config.num_experts
        self.config, self.num_experts, self.top_k = config, E, config.experts_per_token
        self.router = nn.Linear(C, E, bias=False)
        # Stacked expert weights, stored (in, out), as checkpoints hold them.
        self.w_fc = nn.Parameter(torch.empty(E, C, H))
        self.w_proj = nn.Parameter(torch.empty(E, H, C))
        self.b_fc = nn.Parameter(torch.empty(E, H)) if config.bias else None
        self.b_proj = nn.Parameter(torch.empty(E, C)) if config.bias else None
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters(config.n_layer)
        self.last: MoEStats | None = None

    def reset_parameters(self, n_layer: int) -> None:
        """GPT-2 init, as the dense MLP gets it from TinyGPT: N(0, 0.02), zero biases, and the
        residual projection scaled by 1/sqrt(2 * n_layer)."""
        nn.init.normal_(self.router.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.w_fc, mean=0.0, std=0.02)
        nn.init.normal_(self.w_proj, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        for bias in (self.b_fc, self.b_proj):
            if bias is not None:
                nn.init.zeros_(bias)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits, experts first: ``(E, tokens)``, in float32 even under autocast.

        float32 because softmax and top-k are sensitive to bf16 rounding. Experts-first because
        softmax/max over a leading dim of size E run vectorised across tokens, where over a
        trailing dim of size 4 a CPU works through each token's four values on their own.
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if self.training and self.config.router_jitter > 0:
                eps = self.config.router_jitter
                x = x * torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)
            return torch.mm(self.router.weight.float(), x.t())

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert accepts in a call of ``num_tokens`` tokens; None = dropless."""
        if self.config.capacity_factor is None:
            return None
        return math.ceil(self.config.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast the experts run in the autocast dtype, as F.linear would, and the
        # router in float32; autocast itself is off inside, so each op keeps the dtype chosen.
        device = x.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
        with torch.autocast(device, enabled=False):
            out = self._moe(x.reshape(-1, x.size(-1)), dtype)
        return self.dropout(out).view(x.shape)

    def _moe(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        N, k = x.size(0), self.top_k
        logits = self.router_logits(x)  # (E, N)
        E = logits.size(0)
        log_probs = logits.log_softmax(dim=0)
        probs = log_probs.exp()
        if k == 1:
            gate, expert = probs.max(dim=0, keepdim=True)  # Switch: the probability itself
        else:
            # Renormalised top-k probabilities are the softmax over the chosen logits.
            top, expert = logits.topk(k, dim=0)
            gate = top.softmax(dim=0)
        gate, expert = gate.t(), expert.t()  # (N, k) token-major
        counts = torch.bincount(expert.reshape(-1), minlength=E)
        load = counts.float() / (N * k)
        # Switch: E * sum_i f_i * P_i; f_i has no gradient, P_i = mean router probability.
        aux = torch.dot(load, probs.mean(dim=1)) * (self.config.aux_loss_coef * E)
        # ST-MoE z-loss: mean of logsumexp(logits)^2; logsumexp = logit - log_softmax.
        lse = logits[0] - log_probs[0]
        z = torch.dot(lse, lse) * (self.config.z_loss_coef / N)

        # Assignments in token-major order (token i's choices at i*k .. i*k+k-1). A stable sort
        # groups them by expert and keeps each group in token order, the order capacity drops in.
        flat_expert = expert.reshape(-1)
        order = flat_expert.argsort(stable=True)
        arange = torch.arange(N * k, device=x.device)
        inverse = torch.empty_like(order).scatter_(0, order, arange)

        capacity = self.capacity(N)
        if capacity is not None:
            # An assignment's rank within its expert's group; past capacity it is dropped by
            # zeroing its gate, so it adds exactly nothing to its token's output.
            starts = counts.cumsum(0) - counts
            rank = arange - starts.index_select(0, flat_expert.index_select(0, order))
            keep = (rank.index_select(0, inverse) < capacity).view(N, k)
            gate = gate * keep
            dropped = 1.0 - keep.float().mean()
        else:
            dropped = torch.zeros((), device=x.device)

        # Each expert runs once, on its contiguous group of assignments. Group sizes on the
        # host: the layer's one device sync on GPU (none on CPU).
        sizes = counts.tolist()
        token = order if k == 1 else order.div(k, rounding_mode="floor")
        w_fc, b_fc, w_proj, b_proj = (
            [None] * E if p is None else p.to(dtype).unbind(0)
            for p in (self.w_fc, self.b_fc, self.w_proj, self.b_proj)
        )
        outputs = []
        for e, group in enumerate(x.to(dtype).index_select(0, token).split(sizes)):
            if sizes[e]:  # weights stored (in, out): an expert is group @ w[e]
                h = F.gelu(F.linear(group, w_fc[e].t(), b_fc[e]))
                outputs.append(F.linear(h, w_proj[e].t(), b_proj[e]))
        y = torch.cat(outputs).index_select(0, inverse)  # back to token-major order
        gate = gate.to(dtype)
        out = y * gate if k == 1 else (y.view(N, k, -1) * gate.unsqueeze(2)).sum(dim=1)
        entropy = -(probs * log_probs).detach().sum(dim=0).mean()
        self.last = MoEStats(aux, z, load, entropy, dropped.detach(), expert)
        return out

    def stats(self) -> MoEStats:
        """Losses and routing statistics of the last forward."""
        if self.last is None:
            raise RuntimeError("the MoE layer has not run a forward yet")
        return self.last

    def aux_loss(self) -> torch.Tensor:
        """Load-balancing plus z-loss of the last forward, coefficients applied."""
        return self.stats().aux_loss + self.stats().z_loss
