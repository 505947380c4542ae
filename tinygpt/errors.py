"""Errors a user can cause: entry points turn these into one line on stderr and a non-zero exit."""


class TinyGPTError(Exception):
    """A problem with the user's input (a path, a value, a prompt), not a bug in TinyGPT."""


class ConfigError(TinyGPTError, ValueError):
    """A configuration value outside its allowed range."""


class DataError(TinyGPTError):
    """A data file that is missing, unreadable, corrupt or too short."""


class CheckpointError(TinyGPTError):
    """A checkpoint that is missing, unreadable, unsafe or incompatible."""


class NonFiniteLogitsError(TinyGPTError, ArithmeticError):
    """The model produced NaN or infinite logits, so there is nothing sound to sample from."""


class CompileError(TinyGPTError):
    """The decoding step could not be compiled here (no C++ compiler, for instance)."""
