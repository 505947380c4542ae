"""Loading a checkpoint maps its file instead of reading it whole."""

from pathlib import Path

import pytest
import torch
from helpers import save_checkpoint

from tinygpt import checkpoint
from tinygpt.checkpoint import load_checkpoint, load_model


def test_checkpoints_load_weights_only_from_a_memory_map(tmp_path: Path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.ckpt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", spy)
    state = load_checkpoint(path)["state_dict"]
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    # The tensors read the file's pages; none was copied into memory of its own.
    assert all(is_mapped_from(path, t) for t in state.values())


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """The address ranges at which this process maps ``path`` (Linux's /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    ranges = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path.resolve()):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def is_mapped_from(path: Path, tensor: torch.Tensor) -> bool:
    address = tensor.untyped_storage().data_ptr()
    return any(start <= address < end for start, end in mapped_ranges(path))


def test_a_loaded_model_owns_its_weights_once_the_file_changes(tmp_path: Path):
    path = save_checkpoint(tmp_path / "last.ckpt")
    expected = {k: v.clone() for k, v in load_checkpoint(path)["state_dict"].items()}
    model = load_model(path)
    path.write_bytes(b"overwritten in place")  # a mapped tensor would now read garbage
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected["model." + name])
        assert not is_mapped_from(path, value)
