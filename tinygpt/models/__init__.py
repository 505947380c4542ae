"""The model: its config, the GPT, the mixture-of-experts feed-forward, the KV cache. Torch only."""

from tinygpt.models.config import TinyGPTConfig
from tinygpt.models.gpt import TinyGPT, evaluating
from tinygpt.models.kv_cache import KVCache
from tinygpt.models.moe import MoEFeedForward

__all__ = ["KVCache", "MoEFeedForward", "TinyGPT", "TinyGPTConfig", "evaluating"]
