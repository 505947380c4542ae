"""Training with Lightning: the LightningModule, the optimizer, checkpoints and callbacks."""

from tinygpt.training.module import TinyGPTModule
from tinygpt.training.optim import OptimConfig

__all__ = ["OptimConfig", "TinyGPTModule"]
