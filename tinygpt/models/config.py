"""The model's shape and its mixture-of-experts settings, validated on construction. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinygpt.errors import ConfigError

FFN_KINDS = ("dense", "moe")


@dataclass
class TinyGPTConfig:
    """Model shape. Defaults are the TinyGPT notebook's size: 2 layers, 4 heads, 64 dims,
    context 32."""

    vocab_size: int = 65
    block_size: int = 32
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True
    ffn: str = "dense"  # feed-forward kind of every block
    compile: bool = False  # torch.compile the training step (decoding: generate(compile=))
    # Mixture of experts, used only when ffn == "moe" (see tinygpt/models/moe.py).
    num_experts: int = 4
    experts_per_token: int = 1  # top-k routing; k > 1 renormalises the chosen weights
    aux_loss_coef: float = 0.01  # Switch Transformer load-balancing loss
    z_loss_coef: float = 0.001  # ST-MoE router z-loss
    capacity_factor: float | None = None  # None = dropless; else per-expert capacity
    router_jitter: float = 0.0  # multiplicative noise on router inputs while training
    moe_layers: list[int] | None = None  # block indices that are MoE; None = all

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be an integer >= 1, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.ffn not in FFN_KINDS:
            raise ConfigError(f"model.ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        self._validate_moe()

    def _validate_moe(self) -> None:
        # Checked whatever ffn is, so a bad value is reported where it is written, not later
        # when someone switches the sweep to MoE.
        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not is_int(self.num_experts) or self.num_experts < 1:
            raise ConfigError(
                f"model.num_experts must be an integer >= 1, got {self.num_experts!r}"
            )
        k = self.experts_per_token
        if not is_int(k) or not 1 <= k <= self.num_experts:
            raise ConfigError(
                f"model.experts_per_token must be an integer in [1, model.num_experts="
                f"{self.num_experts}], got {k!r}"
            )
        for name in ("aux_loss_coef", "z_loss_coef"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ConfigError(f"model.{name} must be a number >= 0, got {value!r}")
        cf = self.capacity_factor
        if cf is not None and (not is_number(cf) or not cf > 0):
            raise ConfigError(
                f"model.capacity_factor must be None (dropless) or a number > 0, got {cf!r}"
            )
        if not is_number(self.router_jitter) or not 0 <= self.router_jitter < 1:
            raise ConfigError(f"model.router_jitter must be in [0, 1), got {self.router_jitter!r}")
        if self.moe_layers is not None:
            # Any sequence (e.g. an OmegaConf ListConfig) is stored as a plain list, which keeps
            # asdict() checkpoint-safe.
            if isinstance(self.moe_layers, (str, bytes)) or not isinstance(
                self.moe_layers, Sequence
            ):
                raise ConfigError(
                    f"model.moe_layers must be None (all blocks) or a list of block indices, "
                    f"got {self.moe_layers!r}"
                )
            layers = list(self.moe_layers)
            bad = [i for i in layers if not is_int(i) or not 0 <= i < self.n_layer]
            if bad:
                raise ConfigError(
                    f"model.moe_layers entries must be block indices in [0, {self.n_layer}), "
                    f"got {bad!r}"
                )
            if len(set(layers)) != len(layers):
                raise ConfigError(f"model.moe_layers has repeated indices: {layers!r}")
            self.moe_layers = layers

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` gets a mixture-of-experts feed-forward."""
        return self.ffn == "moe" and (self.moe_layers is None or layer in self.moe_layers)
