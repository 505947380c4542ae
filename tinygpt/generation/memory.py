"""The memory a generation request needs, checked against what the machine has before any of it
is allocated: a request too big is one clear error, not an allocator failure or a swapping host.

The bound: 80% of the memory available when the request starts (``MemAvailable`` in
/proc/meminfo; no host bound where there is none), and 80% of the GPU's free
memory for what lives there. The environment variable ``TINYGPT_GENERATION_MEMORY`` (bytes, or
a number with K, M, G or T) replaces the host bound, e.g. to allow more on a machine that swaps
by design or to keep a shared one safe.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from tinygpt.errors import ConfigError
from tinygpt.models import TinyGPTConfig

MEMORY_ENV = "TINYGPT_GENERATION_MEMORY"
AVAILABLE_FRACTION = 0.8
ID_BYTES = 8  # each token's id in the decoding buffer (int64), on the model's device
# On the host, per character of text: the samples and their copies (samples.json, where JSON
# escapes each non-ASCII character in 6 or 12 bytes, samples.txt, the TensorBoard record, the
# word lists of the diversity metrics). Measured through generate.py as the growth of peak RSS
# from 0.5M to 3M tokens, ids included: 27 bytes a token for ASCII text, 36 for Cyrillic, 45 for
# emoji. Counted here with about twice that margin (ids excluded):
TEXT_BYTES_ASCII = 48
TEXT_BYTES_OTHER = 80
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class GenerationMemoryError(ConfigError):
    """A generation request needs more memory than it may use."""


def parse_bytes(value: str) -> int:
    """``"4G"``, ``"512M"``, ``"1000000"``: a byte count (K, M, G, T are powers of 1024)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", value, re.IGNORECASE)
    if not found:
        raise ConfigError(
            f"{MEMORY_ENV} must be a number of bytes such as 8G or 512M, got {value!r}"
        )
    return int(float(found.group(1)) * UNITS[found.group(2).upper()])


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation without swapping, if the OS says."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:  # Linux only
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def device_bytes(config: TinyGPTConfig, rows: int, columns: int, itemsize: int) -> int:
    """What decoding allocates where the model lives: the ids, the KV cache (keys and values,
    every layer, the whole window) and a full-window prefill's activations."""
    kv_cache = 2 * config.n_layer * rows * config.block_size * config.n_embd * itemsize
    per_position = 16 * config.n_embd + config.n_head * config.block_size + config.vocab_size
    prefill = rows * config.block_size * per_position * itemsize
    return rows * columns * ID_BYTES + kv_cache + prefill


def text_bytes(chars: str) -> int:
    """Host bytes per generated character of text in the vocabulary ``chars`` (see above)."""
    return TEXT_BYTES_ASCII if chars.isascii() else TEXT_BYTES_OTHER


def check_generation_memory(
    model: torch.nn.Module, rows: int, columns: int, chars: str | None = None
) -> None:
    """Refuse, naming the sizes, a request of ``rows`` sequences of ``columns`` tokens (prompt
    included), decoded to text in the vocabulary ``chars`` (None: ids only), whose buffers
    would not fit the bounds of the module docstring."""
    weight = model.wte.weight
    on_device = device_bytes(model.config, rows, columns, weight.element_size())
    on_host = 0 if chars is None else rows * columns * text_bytes(chars)
    if weight.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(weight.device)
        bound = int(AVAILABLE_FRACTION * free)
        _check(on_device, bound, f"80% of the {_size(free)} free on {weight.device}", rows, columns)
    else:
        on_host += on_device
    if setting := os.environ.get(MEMORY_ENV):
        _check(on_host, parse_bytes(setting), MEMORY_ENV, rows, columns)
    elif (available := available_memory()) is not None:
        source = f"80% of the {_size(available)} available"
        _check(on_host, int(AVAILABLE_FRACTION * available), source, rows, columns)


def _check(need: int, bound: int, source: str, rows: int, columns: int) -> None:
    if need > bound:
        raise GenerationMemoryError(
            f"this generation would need about {_size(need)} ({rows} sequences of {columns} "
            f"tokens), more than the {_size(bound)} it may use ({source}); ask for fewer samples "
            f"or tokens, or set {MEMORY_ENV} (bytes, e.g. 64G) to allow more"
        )


def _size(n: int) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
