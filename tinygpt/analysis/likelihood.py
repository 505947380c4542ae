"""How likely a text is under a model, and how much choice a decoder had: negative
log-likelihood and sampled entropy per character (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinygpt.generation import Decoder, filter_logits
from tinygpt.models import TinyGPT, evaluating


@torch.no_grad()
def predictions(
    model: TinyGPT, text: str, stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits for every character of ``text`` after the first, ``(len - 1, vocab)``
    in float32, and those characters' ids.

    The first character has no context to be predicted from (the model has no start token). A
    text longer than the context is read in windows of ``block_size`` characters that advance
    by ``stride`` (default: half a window, as the KV cache refills while decoding); each window
    predicts only the characters not predicted before, so all but the first window's are
    predicted from at least ``block_size - stride`` characters. ``stride == 1`` gives every
    character the full context (slow). Characters outside the vocabulary raise
    ``UnknownCharactersError``.
    """
    block = model.config.block_size
    if stride is None:
        stride = max(1, block // 2)
    if not 1 <= stride <= block:
        raise ValueError(f"stride must be in [1, block_size={block}], got {stride}")
    ids = model.tokenizer.encode(text).to(next(model.parameters()).device)
    if len(ids) < 2:
        raise ValueError("a text needs at least 2 characters to be scored")
    chunks, scored, end = [], 0, min(block, len(ids) - 1)
    with evaluating(model):
        while True:
            # Inputs ids[start:end] predict ids[start + 1:end + 1]; keep the new predictions.
            logits, _ = model(ids[max(0, end - block) : end][None])
            chunks.append(logits[0, scored - end :].float())
            scored = end
            if end == len(ids) - 1:
                return torch.cat(chunks), ids[1:]
            end = min(end + stride, len(ids) - 1)


def mean_nll(model: TinyGPT, text: str, stride: int | None = None) -> float:
    """Mean negative log-likelihood of ``text`` under ``model``, in nats per character, over
    the characters :func:`predictions` predicts."""
    logits, targets = predictions(model, text, stride)
    return F.cross_entropy(logits, targets).item()


def sampled_entropy(model: TinyGPT, text: str, decoder: Decoder) -> float:
    """The mean entropy (nats) of the distributions ``decoder`` draws the characters of
    ``text`` from, after temperature and filtering, recomputed from :func:`predictions`
    (:class:`SampledEntropy` observes them while decoding instead); 0 for greedy. The
    repetition penalty, which depends on each sample's history, is left out."""
    if decoder.greedy:
        return 0.0
    logits, _ = predictions(model, text)
    return entropy(filter_logits(logits, decoder).softmax(-1)).mean().item()


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
