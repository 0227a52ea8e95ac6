"""Pickled checkpoint files are read as tensors only: an object that would run code is refused
and never runs, with a message that says so (not torch's hint to load it unsafely)."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.formats import pickles


class Exploit:
    """Unpickling it runs a command (what a malicious optimizer.pt would hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_object_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    file = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [], "x": Exploit(marker)}, file)
    with pytest.raises(ValueError) as err:
        pickles.load(file, "a Trainer's optimizer state")
    message = str(err.value)
    assert f"{file} (a Trainer's optimizer state) holds objects other than tensors" in message
    assert "system" in message and "is refused" in message
    assert "weights_only=False" not in message and "likely succeed" not in message
    assert not marker.exists()


def test_tensors_load_and_a_truncated_file_is_called_damaged(tmp_path):
    file = tmp_path / "model.pt"
    torch.save({"w": torch.arange(4.0)}, file)
    assert torch.equal(pickles.load(file, "weights")["w"], torch.arange(4.0))
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"cannot read {file} \(weights\).*damaged or truncated"):
        pickles.load(file, "weights")
