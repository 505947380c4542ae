"""Mixture-of-Experts feed-forward layer: a router sends each token to its top-k expert MLPs.

A drop-in for the dense MLP of a block. Each expert has the dense MLP's shape
(n_embd -> 4*n_embd -> GELU -> n_embd), so with top-1 routing a token costs about what it costs
in the dense model while the layer holds ``num_experts`` times the feed-forward parameters.

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


class _ExpertMLPs(torch.autograd.Function):
    """Every token's k expert MLPs, gated and summed: dispatch, per-expert matmuls, combine.

    One autograd node with a hand-written backward instead of a dozen small ones: at the
    notebook's size autograd's per-op bookkeeping costs as much as the arithmetic, the permutations'
    gradients can be gathers by the inverse permutation rather than scatter-adds, and each
    expert's matmuls write straight into row ranges of one buffer, biases fused into addmm as
    in ``nn.Linear``.

    Each expert runs once, on its contiguous group of rows. (``F.grouped_mm`` would do all groups
    in one call, and its backward works given a contiguous gradient, but on CPU it measured a few
    percent slower than these MKL calls, and it has no bias; padded ``bmm`` over the experts and
    running every expert on every token were slower too: docs/moe.md, "Speed".)

    Inputs: x (N, C); gate (N, k); order, inverse (N*k,): the sort of the token-major
    assignments by expert, and its inverse; sizes: assignments per expert; w_fc (E, C, 4C),
    b_fc (E, 4C) or None, w_proj (E, 4C, C), b_proj (E, C) or None.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        gate: torch.Tensor,
        order: torch.Tensor,
        inverse: torch.Tensor,
        sizes: list[int],
        w_fc: torch.Tensor,
        b_fc: torch.Tensor | None,
        w_proj: torch.Tensor,
        b_proj: torch.Tensor | None,
    ) -> torch.Tensor:
        N, k = gate.shape
        token = order if k == 1 else order.div(k, rounding_mode="floor")
        xs = x.index_select(0, token)  # assignments grouped by expert
        a = xs.new_empty(xs.size(0), w_fc.size(2))
        ys = xs.new_empty(xs.size(0), w_proj.size(2))
        # Per-expert views, taken once: split/unbind are single calls, cheaper than indexing.
        experts = [e for e, size in enumerate(sizes) if size]
        xs_, a_, ys_ = (t.split(sizes) for t in (xs, a, ys))
        w_fc_, w_proj_ = w_fc.unbind(0), w_proj.unbind(0)
        b_fc_ = [None] * len(sizes) if b_fc is None else b_fc.unbind(0)
        b_proj_ = [None] * len(sizes) if b_proj is None else b_proj.unbind(0)
        for e in experts:
            _linear_into(a_[e], xs_[e], w_fc_[e], b_fc_[e])
        h = F.gelu(a)
        h_ = h.split(sizes)
        for e in experts:
            _linear_into(ys_[e], h_[e], w_proj_[e], b_proj_[e])
        y = ys.index_select(0, inverse)  # back to token-major order
        # Weighted sum over each token's k experts.
        out = y * gate if k == 1 else torch.bmm(gate.unsqueeze(1), y.view(N, k, -1)).squeeze(1)
        ctx.sizes, ctx.experts = sizes, experts
        ctx.has_bias = (b_fc is not None, b_proj is not None)
        ctx.save_for_backward(xs, a, h, y, gate, order, inverse, w_fc, w_proj)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xs, a, h, y, gate, order, inverse, w_fc, w_proj = ctx.saved_tensors
        sizes, experts = ctx.sizes, ctx.experts
        N, k = gate.shape
        C = grad.size(1)
        grad = grad.contiguous()
        needs = ctx.needs_input_grad
        grad_x = grad_gate = grad_w_fc = grad_b_fc = grad_w_proj = grad_b_proj = None

        if needs[1]:  # d out / d gate_j = y_j, the expert's output
            if k == 1:
                grad_gate = (grad * y).sum(dim=1, keepdim=True)
            else:
                grad_gate = torch.bmm(y.view(N, k, C), grad.unsqueeze(2)).squeeze(2)

        # Each assignment's output gradient (gated), grouped by expert like the forward rows.
        grad_y = (
            grad * gate if k == 1 else (grad.unsqueeze(1) * gate.unsqueeze(2)).reshape(N * k, C)
        )
        grad_ys = grad_y.index_select(0, order)
        grad_h = torch.empty_like(h)
        # zeros, not empty: an expert that got no tokens gets a zero gradient.
        grad_w_proj = torch.zeros_like(w_proj) if needs[7] else None
        grad_b_proj = grad.new_zeros(w_proj.size(0), C) if ctx.has_bias[1] and needs[8] else None
        grad_ys_, grad_h_, h_ = (t.split(sizes) for t in (grad_ys, grad_h, h))
        w_proj_t = w_proj.transpose(1, 2).unbind(0)
        for e in experts:
            torch.mm(grad_ys_[e], w_proj_t[e], out=grad_h_[e])
            if grad_w_proj is not None:
                torch.mm(h_[e].t(), grad_ys_[e], out=grad_w_proj[e])
            if grad_b_proj is not None:
                torch.sum(grad_ys_[e], dim=0, out=grad_b_proj[e])

        grad_a = torch.ops.aten.gelu_backward(grad_h, a)
        grad_w_fc = torch.zeros_like(w_fc) if needs[5] else None
        grad_b_fc = (
            grad_a.new_zeros(w_fc.size(0), w_fc.size(2)) if ctx.has_bias[0] and needs[6] else None
        )
        grad_xs = torch.empty_like(xs) if needs[0] else None
        grad_a_, xs_ = grad_a.split(sizes), xs.split(sizes)
        grad_xs_ = None if grad_xs is None else grad_xs.split(sizes)
        w_fc_t = w_fc.transpose(1, 2).unbind(0)
        for e in experts:
            if grad_w_fc is not None:
                torch.mm(xs_[e].t(), grad_a_[e], out=grad_w_fc[e])
            if grad_b_fc is not None:
                torch.sum(grad_a_[e], dim=0, out=grad_b_fc[e])
            if grad_xs_ is not None:
                torch.mm(grad_a_[e], w_fc_t[e], out=grad_xs_[e])
        if grad_xs is not None:
            grad_x = grad_xs.index_select(0, inverse)  # token-major
            if k > 1:
                grad_x = grad_x.view(N, k, C).sum(dim=1)
        return (
            grad_x,
            grad_gate,
            None,
            None,
            None,
            grad_w_fc,
            grad_b_fc,
            grad_w_proj,
            grad_b_proj,
        )


def _linear_into(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """``out = x @ weight + bias``, written in place (out is a row range of a larger buffer)."""
    if bias is None:
        torch.mm(x, weight, out=out)
    else:
        torch.addmm(bias, x, weight, out=out)


class _Router(torch.autograd.Function):
    """Top-k gates, the load-balancing loss and the z-loss from router logits, in one node.

    The gradient is written out (below) rather than left to a dozen tiny autograd ops on
    (E, tokens) tensors, whose bookkeeping dominated the router's cost at the notebook's size.

    Input logits (E, N) float32. Outputs: gate (k, N), expert (k, N) best first, counts (E,)
    assignments per expert, aux and z losses (coefficients applied), probs and log_probs (E, N)
    for statistics. Only gate, aux and z carry gradients.
    """

    @staticmethod
    def forward(
        ctx, logits: torch.Tensor, k: int, aux_coef: float, z_coef: float
    ) -> tuple[torch.Tensor, ...]:
        E, N = logits.shape
        log_probs = logits.log_softmax(dim=0)
        probs = log_probs.exp()
        if k == 1:
            gate, expert = probs.max(dim=0, keepdim=True)  # Switch: the probability itself
        else:
            # Renormalised top-k probabilities are the softmax over the chosen logits.
            top, expert = logits.topk(k, dim=0)
            gate = top.softmax(dim=0)
        counts = torch.bincount(expert.view(-1), minlength=E)
        load = counts.to(probs.dtype) / (N * k)
        # Switch: E * sum_i f_i * P_i; f_i has no gradient, P_i = mean router probability.
        aux = torch.dot(load, probs.mean(dim=1)) * (aux_coef * E)
        # ST-MoE z-loss: mean of logsumexp(logits)^2; logsumexp = logit - log_softmax.
        lse = logits[0] - log_probs[0]
        z = torch.dot(lse, lse) * (z_coef / N)
        ctx.k, ctx.aux_coef, ctx.z_coef = k, aux_coef, z_coef
        ctx.save_for_backward(probs, gate, expert, load, lse)
        ctx.mark_non_differentiable(expert, counts, probs, log_probs)
        ctx.set_materialize_grads(False)
        return gate, expert, counts, aux, z, probs, log_probs

    @staticmethod
    def backward(
        ctx, grad_gate: torch.Tensor | None, _e, _c, grad_aux, grad_z, _p, _lp
    ) -> tuple[torch.Tensor | None, None, None, None]:
        probs, gate, expert, load, lse = ctx.saved_tensors
        E, N = probs.shape
        grad = torch.zeros_like(probs)
        if grad_gate is not None:
            if ctx.k == 1:
                # d p_e / d logit_j = p_e (delta_je - p_j)
                gg = grad_gate * gate
                grad = grad.addcmul_(probs, gg, value=-1.0).scatter_add_(0, expert, gg)
            else:
                # softmax over the chosen logits: gate * (g - sum(g * gate)), zero elsewhere
                gg = gate * (grad_gate - (grad_gate * gate).sum(dim=0, keepdim=True))
                grad.scatter_(0, expert, gg)
        if grad_aux is not None:
            # d aux / d logit_j = coef * E / N * p_j (f_j - sum_i f_i p_i)
            f = load.unsqueeze(1)
            centred = f - (f * probs).sum(dim=0, keepdim=True)
            grad.addcmul_(probs, centred * (grad_aux * (ctx.aux_coef * E / N)))
        if grad_z is not None:
            # d z / d logit_j = coef * 2 lse / N * p_j
            scale = grad_z * (2.0 * ctx.z_coef / N)
            grad.addcmul_(probs, lse.unsqueeze(0) * scale)
        return grad, None, None, None


class MoEFeedForward(nn.Module):
    """Top-k routed experts with Switch load balancing, router z-loss and optional capacity.

    Tokens are dispatched by sorting their expert ids, so each expert's tokens are contiguous
    and each expert runs once on its group; there is no Python loop over tokens.
    """

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        C, H, E = config.n_embd, 4 * config.n_embd, config.num_experts
        self.num_experts = E
        self.top_k = config.experts_per_token
        self.aux_loss_coef = config.aux_loss_coef
        self.z_loss_coef = config.z_loss_coef
        self.capacity_factor = config.capacity_factor
        self.router_jitter = config.router_jitter
        self.router = nn.Linear(C, E, bias=False)
        # Stacked expert weights, stored (in, out) so an expert is x @ w[e] with no transpose.
        self.w_fc = nn.Parameter(torch.empty(E, C, H))
        self.w_proj = nn.Parameter(torch.empty(E, H, C))
        self.b_fc = nn.Parameter(torch.empty(E, H)) if config.bias else None
        self.b_proj = nn.Parameter(torch.empty(E, C)) if config.bias else None
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters(config.n_layer)
        self._stats: dict[str, torch.Tensor] | None = None

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
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                return self.router_logits(x)
        x = x.float()
        if self.training and self.router_jitter > 0:
            eps = self.router_jitter
            x = x * torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)
        return torch.mm(self.router.weight.float(), x.t())

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert accepts in a call of ``num_tokens`` tokens; None = dropless."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        # Under autocast the experts run in the autocast dtype, as F.linear would, and the
        # router in float32; autocast itself is switched off so each op keeps the dtype chosen.
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
        if autocast:
            with torch.autocast(device_type, enabled=False):
                out = self._moe(x, dtype)
        else:
            out = self._moe(x, dtype)
        return self.dropout(out).reshape(shape)

    def _moe(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        N, k = x.size(0), self.top_k
        logits = self.router_logits(x)  # (E, N)
        gate, expert, counts, aux, z, probs, log_probs = _Router.apply(
            logits, k, self.aux_loss_coef, self.z_loss_coef
        )
        # (N, k) token-major; for k = 1 these are free views.
        gate, expert = (gate.view(N, 1), expert.view(N, 1)) if k == 1 else (gate.t(), expert.t())

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

        params = [
            None if p is None else p.to(dtype)
            for p in (self.w_fc, self.b_fc, self.w_proj, self.b_proj)
        ]
        # Group sizes on the host: the layer's one device sync on GPU (none on CPU).
        sizes = counts.tolist()
        out = _ExpertMLPs.apply(x.to(dtype), gate.to(dtype), order, inverse, sizes, *params)
        self._stats = {
            "aux_loss": aux,
            "z_loss": z,
            "load": counts.float() / (N * k),
            "probs": probs,
            "log_probs": log_probs,
            "expert": expert,
            "dropped_fraction": dropped.detach(),
        }
        return out

    def _require_stats(self) -> dict[str, torch.Tensor]:
        if self._stats is None:
            raise RuntimeError("the MoE layer has not run a forward yet")
        return self._stats

    def aux_loss(self) -> torch.Tensor:
        """Load-balancing plus z-loss of the last forward, coefficients applied."""
        stats = self._require_stats()
        return stats["aux_loss"] + stats["z_loss"]

    def stats(self) -> MoEStats:
        """Losses and routing statistics of the last forward."""
        s = self._require_stats()
        entropy = -(s["probs"] * s["log_probs"]).sum(dim=0).mean()
        return MoEStats(
            aux_loss=s["aux_loss"],
            z_loss=s["z_loss"],
            load=s["load"],
            router_entropy=entropy,
            dropped_fraction=s["dropped_fraction"],
        )

    def last_assignments(self) -> torch.Tensor:
        """Expert ids ``(tokens, k)`` of the last forward, best first."""
        return self._require_stats()["expert"]
