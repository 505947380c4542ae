"""TinyGPT: compact character-level GPTs, trained with Lightning and configured with Hydra."""
