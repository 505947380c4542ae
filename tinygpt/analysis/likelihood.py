"""How likely a text is under a model: mean negative log-likelihood per character (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinygpt.models import TinyGPT, evaluating


@torch.no_grad()
def mean_nll(model: TinyGPT, text: str, stride: int | None = None) -> float:
    """Mean negative log-likelihood of ``text`` under ``model``, in nats per character.

    Every character after the first is predicted once (the first has no context to be predicted
    from, as the model has no start token). A text longer than the context is scored with
    windows of ``block_size`` characters that advance by ``stride`` (default: half a window);
    each window scores only the characters not scored before, so all but the first window's
    characters are predicted from at least ``block_size - stride`` characters of context.
    ``stride == block_size`` gives non-overlapping windows (fast, less context); ``stride == 1``
    gives every character the full context (slow). Characters outside the model's vocabulary
    raise ``UnknownCharactersError``.
    """
    block = model.config.block_size
    if stride is None:
        stride = max(1, block // 2)
    if not 1 <= stride <= block:
        raise ValueError(f"stride must be in [1, block_size={block}], got {stride}")
    device = next(model.parameters()).device
    ids = model.tokenizer.encode(text).to(device)
    if len(ids) < 2:
        raise ValueError("a text needs at least 2 characters to be scored")
    with evaluating(model):
        total, scored, end = 0.0, 0, min(block, len(ids) - 1)
        while True:
            # Inputs ids[start:end] predict targets ids[start + 1:end + 1]; score the new ones.
            start = max(0, end - block)
            logits, _ = model(ids[start:end][None])
            new = end - scored
            targets = ids[end - new + 1 : end + 1]
            total += F.cross_entropy(logits[0, -new:].float(), targets, reduction="sum").item()
            scored = end
            if end == len(ids) - 1:
                return total / scored
            end = min(end + stride, len(ids) - 1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each distribution along the last dimension (``0 log 0 = 0``): 0 for
    a one-hot distribution, ``log V`` for a uniform one over ``V`` tokens."""
    plogp = torch.where(probs > 0, probs * probs.clamp_min(1e-30).log(), 0.0)
    return -plogp.sum(-1)


class SampledEntropy:
    """An ``observe`` hook for :func:`tinygpt.generation.generate_ids`: the entropy of each
    step's distribution the decoder draws from, after temperature and filtering. Its mean per
    row, :meth:`per_row`, says how much choice the decoder actually had: 0 for greedy."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, probs: torch.Tensor) -> None:
        self.steps.append(entropy(probs.float()))

    def per_row(self) -> list[float]:
        """The mean entropy over the steps, one value per row of the batch."""
        if not self.steps:
            return []
        return torch.stack(self.steps).mean(0).tolist()
