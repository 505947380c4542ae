"""The model's shape and its mixture-of-experts settings, range-checked on construction.

Torch-free. ``conf/model/`` is typed by this dataclass (OmegaConf checks the types when Hydra
composes the config: tinygpt.cli.resolvers.register_schemas)."""

from __future__ import annotations

from dataclasses import dataclass

from tinygpt.errors import require

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
        # Checked whatever ffn is: a bad MoE value is reported where it is written, not later
        # when someone switches the sweep to MoE. Types: OmegaConf, at composition.
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "num_experts"):
            value = getattr(self, name)
            require(value >= 1, f"model.{name} must be an integer >= 1, got {value!r}")
        require(
            self.n_embd % self.n_head == 0,
            f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})",
        )
        require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout!r}")
        require(self.ffn in FFN_KINDS, f"model.ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        k = self.experts_per_token
        require(
            1 <= k <= self.num_experts,
            f"model.experts_per_token must be in [1, model.num_experts={self.num_experts}], "
            f"got {k!r}",
        )
        for name in ("aux_loss_coef", "z_loss_coef"):
            value = getattr(self, name)
            require(value >= 0, f"model.{name} must be >= 0, got {value!r}")
        cf = self.capacity_factor
        require(cf is None or cf > 0, f"model.capacity_factor must be null or > 0, got {cf!r}")
        jitter = self.router_jitter
        require(0 <= jitter < 1, f"model.router_jitter must be in [0, 1), got {jitter!r}")
        if self.moe_layers is not None:
            # A plain list (not OmegaConf's ListConfig): asdict() stays checkpoint-safe.
            layers = list(self.moe_layers)
            require(
                not isinstance(self.moe_layers, str)
                and all(isinstance(i, int) and 0 <= i < self.n_layer for i in layers),
                f"model.moe_layers must be block indices in [0, {self.n_layer}), got {layers!r}",
            )
            require(len(set(layers)) == len(layers), f"model.moe_layers repeats: {layers!r}")
            self.moe_layers = layers

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` gets a mixture-of-experts feed-forward."""
        return self.ffn == "moe" and (self.moe_layers is None or layer in self.moe_layers)
