"""Mixture-of-Experts feed-forward layer: a router sends each token to its top-k expert MLPs.

A drop-in for the dense MLP of a block. Each expert has the dense MLP's shape
(n_embd -> 4*n_embd -> GELU -> n_embd), so with top-1 routing a token costs about what it costs
in the dense model while the layer holds ``num_experts`` times the feed-forward parameters.

Imports torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # model.py imports this module, so the config is imported for typing only
    from tinygpt.model import TinyGPTConfig


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


def _grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs for these operands.

    It is a private op that needs 16-byte aligned rows; on CPU it takes float32 and bf16, on
    CUDA only bf16 on sm90+. Elsewhere :func:`grouped_mm` loops over the experts instead.
    """
    if not hasattr(torch, "_grouped_mm") or x.dtype != w.dtype:
        return False
    if any(n * x.element_size() % 16 for n in (x.size(1), w.size(2))):
        return False
    if x.device.type == "cpu":
        return x.dtype in (torch.float32, torch.bfloat16)
    if x.device.type == "cuda":
        sm90 = torch.cuda.get_device_capability(x.device)[0] >= 9
        return sm90 and x.dtype == torch.bfloat16
    return False


def grouped_mm(
    x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor, sizes: list[int] | None
) -> torch.Tensor:
    """``x[rows of group e] @ weight[e]`` for each expert e, rows grouped contiguously.

    x: (M, in), weight: (E, in, out), offsets: (E,) int32 end row of each group. ``sizes`` (rows
    per group, on the host) selects the fallback loop; None runs one fused grouped matmul whose
    offsets stay on the device, so that path never syncs with the host.
    """
    if sizes is None:
        return torch._grouped_mm(x, weight, offs=offsets)
    return torch.cat([xe @ weight[e] for e, xe in enumerate(x.split(sizes))])


def grouped_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor, sizes: list[int] | None
) -> torch.Tensor:
    """``x[group e].T @ grad[group e]`` for each expert e: (E, in, out), zero for empty groups."""
    if sizes is None:
        return torch._grouped_mm(x.t(), grad, offs=offsets)
    return torch.stack(
        [xe.t() @ ge for xe, ge in zip(x.split(sizes), grad.split(sizes), strict=True)]
    )


class _ExpertMLPs(torch.autograd.Function):
    """Every token's k expert MLPs, gated and summed: dispatch, two grouped matmuls, combine.

    One autograd node with a hand-written backward instead of a dozen small ones: at the seed's
    size the per-op bookkeeping of autograd costs as much as the arithmetic, and the backward
    of the permutations can be gathers by the inverse permutation rather than scatter-adds.

    Inputs: x (N, C) with a ones column (and zero padding) when the first layer has a bias;
    gate, expert (N, k); order, inverse (N*k,) sort permutation of the token-major assignments
    by expert and its inverse; offsets (E,) group ends; w_fc (E, C', 4C) with the first bias as
    the ones column's row; w_proj (E, 4C, C); b_proj (E, C) or None; sizes for the fallback.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        gate: torch.Tensor,
        expert: torch.Tensor,
        order: torch.Tensor,
        inverse: torch.Tensor,
        offsets: torch.Tensor,
        w_fc: torch.Tensor,
        w_proj: torch.Tensor,
        b_proj: torch.Tensor | None,
        sizes: list[int] | None,
    ) -> torch.Tensor:
        N, k = gate.shape
        token = order if k == 1 else order.div(k, rounding_mode="floor")
        xs = x.index_select(0, token)  # assignments grouped by expert
        a = grouped_mm(xs, w_fc, offsets, sizes)
        h = F.gelu(a)
        y = grouped_mm(h, w_proj, offsets, sizes).index_select(0, inverse)  # token-major
        # Weighted sum over each token's k experts.
        out = y * gate if k == 1 else torch.bmm(gate.unsqueeze(1), y.view(N, k, -1)).squeeze(1)
        if b_proj is not None:
            # Each token's gated expert biases: (N, E) gate matrix @ (E, C), in one addmm.
            gate_matrix = gate.new_zeros(N, b_proj.size(0)).scatter_(1, expert, gate)
            out = torch.addmm(out, gate_matrix, b_proj)
        else:
            gate_matrix = None
        ctx.sizes = sizes
        ctx.save_for_backward(
            xs, a, h, y, gate, expert, order, inverse, offsets, w_fc, w_proj, b_proj, gate_matrix
        )
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xs, a, h, y, gate, expert, order, inverse, offsets, w_fc, w_proj, b_proj, gate_matrix = (
            ctx.saved_tensors
        )
        sizes = ctx.sizes
        N, k = gate.shape
        C = grad.size(1)
        grad = grad.contiguous()
        needs = ctx.needs_input_grad
        grad_gate = grad_b_proj = grad_x = grad_w_fc = grad_w_proj = None

        if needs[1]:
            # d out / d gate_j = y_j + b_proj[expert_j]
            if k == 1:
                grad_gate = (grad * y).sum(dim=1, keepdim=True)
            else:
                grad_gate = torch.bmm(y.view(N, k, C), grad.unsqueeze(2)).squeeze(2)
            if b_proj is not None:
                grad_gate = grad_gate + (grad @ b_proj.t()).gather(1, expert)
        if b_proj is not None and needs[8]:
            grad_b_proj = gate_matrix.t() @ grad

        # Gradient of each assignment's expert output, gated, in grouped (sorted) order.
        grad_y = (
            grad * gate if k == 1 else (grad.unsqueeze(1) * gate.unsqueeze(2)).reshape(N * k, C)
        )
        grad_ys = grad_y.index_select(0, order)
        if needs[7]:
            grad_w_proj = grouped_weight_grad(h, grad_ys, offsets, sizes)
        grad_a = torch.ops.aten.gelu_backward(
            grouped_mm(grad_ys, w_proj.transpose(1, 2), offsets, sizes), a
        )
        if needs[6]:
            grad_w_fc = grouped_weight_grad(xs, grad_a, offsets, sizes)
        if needs[0]:
            grad_xs = grouped_mm(grad_a, w_fc.transpose(1, 2), offsets, sizes)
            grad_x = grad_xs.index_select(0, inverse)  # token-major
            if k > 1:
                grad_x = grad_x.view(N, k, -1).sum(dim=1)
        return (
            grad_x,
            grad_gate,
            None,
            None,
            None,
            None,
            grad_w_fc,
            grad_w_proj,
            grad_b_proj,
            None,
        )


class MoEFeedForward(nn.Module):
    """Top-k routed experts with Switch load balancing, router z-loss and optional capacity.

    Tokens are dispatched by sorting their expert ids, so each expert's tokens are contiguous
    and all experts run as one grouped matmul (``torch._grouped_mm``); there is no Python loop
    over tokens, and none over experts where the grouped matmul is available.
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
        # Stacked expert weights stored (in, out), the layout grouped matmuls take.
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
        softmax/max over a leading dim of size E run vectorised across tokens, about 10x faster
        on CPU than over a trailing dim of size 4.
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
        N, E, k = x.size(0), self.num_experts, self.top_k

        logits = self.router_logits(x)  # (E, N)
        log_probs = logits.log_softmax(dim=0)
        probs = log_probs.exp()
        if k == 1:
            gate, expert = probs.max(dim=0, keepdim=True)  # (1, N) each
        else:
            gate, expert = probs.topk(k, dim=0)  # (k, N), best first
            gate = gate / gate.sum(dim=0, keepdim=True)
        gate, expert = gate.t(), expert.t()  # (N, k)

        # Assignments in token-major order (token i's choices at i*k .. i*k+k-1). A stable sort
        # groups them by expert and keeps each group in token order, the order capacity drops in.
        flat_expert = expert.reshape(-1)
        order = flat_expert.argsort(stable=True)
        arange = torch.arange(N * k, device=x.device)
        inverse = torch.empty_like(order).scatter_(0, order, arange)
        counts = torch.bincount(flat_expert, minlength=E)

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

        # Under autocast the experts run in the autocast dtype, as F.linear would.
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
        x, w_fc = x.to(dtype), self.w_fc.to(dtype)
        if self.b_fc is not None:
            # Fold the first bias into the matmul: columns of ones on x, and b_fc as the weight
            # row of the first (zeros for the rest, which only keep rows 16-byte aligned for the
            # grouped matmul). Cheaper than gathering and adding a (tokens, 4C) bias.
            pad = 16 // x.element_size()
            x = F.pad(x, (0, pad), value=1.0)
            bias_rows = F.pad(self.b_fc.to(dtype).unsqueeze(1), (0, 0, 0, pad - 1))
            w_fc = torch.cat([w_fc, bias_rows], dim=1)
        w_proj = self.w_proj.to(dtype)
        b_proj = None if self.b_proj is None else self.b_proj.to(dtype)

        offsets = counts.cumsum(0).to(torch.int32)
        # The fallback loop's one host sync; the grouped matmul needs none.
        sizes = None if _grouped_mm_supported(x, w_fc) else counts.tolist()
        with torch.autocast(device_type, enabled=False):  # dtypes are settled above
            out = _ExpertMLPs.apply(
                x, gate.to(dtype), expert, order, inverse, offsets, w_fc, w_proj, b_proj, sizes
            )
        self._record(logits, log_probs, probs, counts, expert, dropped)
        return self.dropout(out).reshape(shape)

    def _record(
        self,
        logits: torch.Tensor,
        log_probs: torch.Tensor,
        probs: torch.Tensor,
        counts: torch.Tensor,
        expert: torch.Tensor,
        dropped: torch.Tensor,
    ) -> None:
        """Keep this forward's losses and routing as tensors; entropy is computed on request.

        ``logits``, ``log_probs`` and ``probs`` are ``(E, tokens)``; ``expert`` is ``(tokens, k)``.
        """
        E, N = probs.shape
        load = counts.float() / expert.numel()
        # Switch: E * sum_i f_i * P_i; f_i has no gradient, P_i carries it to the router.
        aux = torch.dot(load, probs.mean(dim=1)) * (self.aux_loss_coef * E)
        # ST-MoE z-loss: mean over tokens of logsumexp(logits)^2, where
        # logsumexp = logit - log_softmax for any expert (the first, here).
        lse = logits[0] - log_probs[0]
        z = torch.dot(lse, lse) * (self.z_loss_coef / N)
        self._stats = {
            "aux_loss": aux,
            "z_loss": z,
            "load": load,
            "probs": probs.detach(),
            "log_probs": log_probs.detach(),
            "expert": expert.detach(),
            "dropped_fraction": dropped.detach(),
        }

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
