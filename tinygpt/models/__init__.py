"""The model: its config, the GPT, the mixture-of-experts feed-forward. Torch only."""

from tinygpt.models.config import TinyGPTConfig
from tinygpt.models.gpt import TinyGPT, evaluating

__all__ = ["TinyGPT", "TinyGPTConfig", "evaluating"]
