"""Errors a user can cause: entry points turn these into one line on stderr and a non-zero exit."""


class TinyGPTError(Exception):
    """A problem with the user's input (a path, a value, a prompt), not a bug in TinyGPT."""

    exit_code = 2  # what the entry points exit with: a usage error, as argparse's


class ConfigError(TinyGPTError, ValueError):
    """A configuration value outside its allowed range."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(``message``) unless ``ok``: one range check of a config value (their
    types are checked by OmegaConf, whose schemas are the config dataclasses)."""
    if not ok:
        raise ConfigError(message)


class DataError(TinyGPTError):
    """A data file that is missing, unreadable, corrupt or too short."""


class CheckpointError(TinyGPTError):
    """A checkpoint that is missing, unreadable, unsafe or incompatible."""


class NonFiniteLogitsError(TinyGPTError, ArithmeticError):
    """The model produced NaN or infinite logits, so there is nothing sound to sample from."""


class CompileError(TinyGPTError):
    """The decoding step could not be compiled here (no C++ compiler, for instance)."""


class RunDirInUseError(TinyGPTError):
    """Another live process is writing into the run directory this run would write into."""


class WriteError(TinyGPTError):
    """An output (checkpoint, summary, plot) could not be written: disk full, no permission.

    Not a mistake in the user's input, so its exit status is 1, not 2: the same command may
    succeed once there is room.
    """

    exit_code = 1
