"""Checkpoints: a round trip that keeps the model, full SHA-256 of the file, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.errors import CheckpointError


def test_load_records_the_full_file_hash(slice_checkpoint: Path) -> None:
    bundle = load_model(slice_checkpoint)
    assert bundle.sha256 == hashlib.sha256(slice_checkpoint.read_bytes()).hexdigest()
    again = load_model(slice_checkpoint)
    for (k, a), (_, b) in zip(
        bundle.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert bundle.src_vocab.itos == again.src_vocab.itos


def test_bad_checkpoints_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"missing\.pt"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_model(junk)
