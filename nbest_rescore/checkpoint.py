"""Checkpoints: one self-describing file per model, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to use the model (config, vocabularies, tokeniser settings,
weights) and, for training checkpoints, everything needed to resume exactly (optimiser, RNG, data
position) under the key "train_state".
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nbest_rescore.errors import CheckpointError
from nbest_rescore.fileio import PathLike, atomic_write, sha256_file
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import Vocab

FORMAT = "nbest_rescore/checkpoint/1"


@dataclass(frozen=True)
class ModelBundle:
    """A model with the vocabularies and tokeniser settings it was trained with."""

    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_tok: TokenizerConfig
    tgt_tok: TokenizerConfig
    path: str = ""
    sha256: str = ""

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def model_payload(
    model: Seq2Seq,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    src_tok: TokenizerConfig,
    tgt_tok: TokenizerConfig,
    *,
    half: bool = False,
) -> dict[str, Any]:
    """The usable part of a checkpoint; `half` stores float weights as fp16 (for shipping)."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    return {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "src_vocab": src_vocab.to_list(),
        "tgt_vocab": tgt_vocab.to_list(),
        "src_tok": src_tok.to_dict(),
        "tgt_tok": tgt_tok.to_dict(),
        "model": state,
    }


def save_checkpoint(path: PathLike, payload: dict[str, Any]) -> str:
    """Write `payload` atomically; returns the file's SHA-256."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    with atomic_write(path, "wb", gz=False) as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (`weights_only=True`) with clear errors for bad files."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError("no such checkpoint file", str(path))
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint (corrupt, truncated or not a checkpoint): {exc}".splitlines()[
                0
            ],
            str(path),
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"not an nbest_rescore checkpoint (expected format {FORMAT})", str(path)
        )
    return payload


def bundle_from_payload(
    payload: dict[str, Any], *, path: str = "", sha256: str = "", device: str | torch.device = "cpu"
) -> ModelBundle:
    """Build a ready-to-use (eval mode, fp32) model bundle from a checkpoint dict."""
    try:
        config = ModelConfig.from_dict(dict(payload["model_config"]))
        model = Seq2Seq(config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
        model.load_state_dict(state)
        bundle = ModelBundle(
            model=model.to(device).eval(),
            src_vocab=Vocab.from_list(payload["src_vocab"]),
            tgt_vocab=Vocab.from_list(payload["tgt_vocab"]),
            src_tok=TokenizerConfig.from_dict(dict(payload["src_tok"])),
            tgt_tok=TokenizerConfig.from_dict(dict(payload["tgt_tok"])),
            path=path,
            sha256=sha256,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint is incomplete or inconsistent: {exc}", path or None
        ) from exc
    return bundle


def load_model(path: PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a checkpoint file as a `ModelBundle` (its SHA-256 recorded for reports)."""
    payload = read_checkpoint(path)
    return bundle_from_payload(payload, path=str(path), sha256=sha256_file(path), device=device)
