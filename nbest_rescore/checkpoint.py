"""Checkpoints: one self-describing file per model, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to use the model (config, vocabularies, tokeniser settings,
weights) and, for training checkpoints, everything needed to resume exactly (optimiser, RNG, data
position) under the key "train_state".
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    direction: str = "s2t"
    """`s2t` scores p(hypothesis | source); `t2s` (a model trained with the languages swapped)
    scores p(source | hypothesis). Set by `assign_directions` for rescoring."""

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def kind(self) -> str:
        """What the model is, for reports: its config's kind plus `target-to-source`."""
        return self.config.kind + (" target-to-source" if self.direction == "t2s" else "")


def assign_directions(bundles: Sequence[ModelBundle], src_lang: str | None) -> list[ModelBundle]:
    """Mark each model source-to-target or target-to-source for rescoring a list whose sources are
    in `src_lang` (default: the first model's source language).

    A model whose source language is the list's source language is source-to-target; one whose
    target language is it (trained with the languages swapped) is target-to-source. Anything
    else, or a list with no source-to-target model, is a `CheckpointError`.
    """
    if not bundles:
        return []
    lang = src_lang or bundles[0].src_tok.lang
    out = []
    for b in bundles:
        if b.src_tok.lang == lang:
            out.append(replace(b, direction="s2t"))
        elif b.tgt_tok.lang == lang:
            out.append(replace(b, direction="t2s"))
        else:
            raise CheckpointError(
                f"model translates {b.src_tok.lang}->{b.tgt_tok.lang}, which neither reads nor "
                f"writes the list's source language {lang!r}",
                b.path or None,
            )
    if all(b.direction == "t2s" for b in out):
        raise CheckpointError(
            f"no source-to-target model (source language {lang!r}): a target-to-source model "
            "can only add a feature beside one"
        )
    return out


def model_payload(
    model: Seq2Seq,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    src_tok: TokenizerConfig,
    tgt_tok: TokenizerConfig,
    *,
    half: bool = False,
    int8: bool = False,
) -> dict[str, Any]:
    """The usable part of a checkpoint; `half` stores float weights as fp16 (for shipping);
    `int8` stores every weight matrix as int8 with a scale per row (`quantize_rows`; the rest
    in fp16), a quarter of fp32's size, dequantized to fp32 at load."""
    state = {
        k: (v.half() if (half or int8) and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    scales: dict[str, torch.Tensor] = {}
    if int8:
        for k, v in model.state_dict().items():
            if v.is_floating_point() and v.dim() == 2:
                state[k], scales[k] = quantize_rows(v.detach().cpu().float())
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "src_vocab": src_vocab.to_list(),
        "tgt_vocab": tgt_vocab.to_list(),
        "src_tok": src_tok.to_dict(),
        "tgt_tok": tgt_tok.to_dict(),
        "model": state,
    }
    if scales:
        payload["int8_row_scales"] = scales
    return payload


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: q = round(w / s) with s = max|row| / 127 (fp32 scales; an
    all-zero row gets s = 1). `q.float() * s[:, None]` is within s / 2 of `w`."""
    s = w.abs().amax(dim=1) / 127.0
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(w / s[:, None]), -127, 127).to(torch.int8)
    return q, s


def dequantized(
    state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor], path: str | None
) -> dict[str, torch.Tensor]:
    """`state` with its int8 matrices back in fp32 (`quantize_rows`' inverse), after checking
    that every scale belongs to an int8 matrix, has one finite positive value per row."""
    out = dict(state)
    for name, s in scales.items():
        q = state.get(name)
        if q is None or q.dtype != torch.int8 or q.dim() != 2:
            raise CheckpointError(f"int8 row scales for {name}, which is not an int8 matrix", path)
        if s.dim() != 1 or len(s) != len(q) or not s.is_floating_point():
            raise CheckpointError(f"{name}: expected {len(q)} row scales, got {tuple(s.shape)}",
                                  path)  # fmt: skip
        if not bool(torch.isfinite(s).all() and (s > 0).all()):
            raise CheckpointError(f"{name}: a row scale is not a finite positive number", path)
        out[name] = q.float() * s.float()[:, None]
    unscaled = sorted(k for k, v in out.items() if v.dtype == torch.int8)
    if unscaled:
        raise CheckpointError(f"{unscaled[0]} is stored as int8 without row scales", path)
    return out


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
    if not p.is_file():  # a FIFO or device is refused at once: a checkpoint is read twice
        what = "is a directory" if p.is_dir() else "is not a regular file" if p.exists() else ""
        raise CheckpointError(f"{what}, expected a checkpoint file" if what else "no such "
                              "checkpoint file", str(path))  # fmt: skip
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        # Running out of memory (e.g. too many --threads' stacks) is not a corrupt file.
        oom = isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)
        why = "out of memory" if oom else "corrupt, truncated or not a checkpoint"
        raise CheckpointError(
            f"cannot read checkpoint ({why}): {exc}".splitlines()[0], str(path)
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"not an nbest_rescore checkpoint (expected format {FORMAT})", str(path)
        )
    return payload


def bundle_from_payload(
    payload: dict[str, Any], *, path: str = "", sha256: str = "", device: str | torch.device = "cpu"
) -> ModelBundle:
    """Build a ready-to-use (eval mode, fp32) model bundle from a checkpoint dict, after checking
    that its config, vocabularies and weights agree (see `check_consistency`). The model takes
    the payload's fp32 tensors as its weights (no copy): hand it a payload read for it."""
    where = path or None
    try:
        config = ModelConfig.from_dict(dict(payload["model_config"]))
        src_vocab = Vocab.from_list(payload["src_vocab"])
        tgt_vocab = Vocab.from_list(payload["tgt_vocab"])
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
        state = dequantized(state, dict(payload.get("int8_row_scales") or {}), where)
        src_tok = TokenizerConfig.from_dict(dict(payload["src_tok"]))
        tgt_tok = TokenizerConfig.from_dict(dict(payload["tgt_tok"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint is incomplete or inconsistent: {exc}", where) from exc
    check_config(config, len(src_vocab), len(tgt_vocab), where)
    with torch.device("meta"):  # shapes only: the config may claim more than the file holds
        model = Seq2Seq(config, init=False)
    check_consistency(config, src_vocab, tgt_vocab, state, model, where)
    # The file's tensors become the weights (strict: every one of them), nothing allocated twice.
    model.load_state_dict(state, assign=True)
    return ModelBundle(
        model=model.to(device).eval(),
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        src_tok=src_tok,
        tgt_tok=tgt_tok,
        path=path,
        sha256=sha256,
    )


MAX_WIDTH = 1 << 16
"""Largest embedding or hidden size, and vocabulary, a checkpoint's config may claim (the paper's
model is 1000 wide with 160k words): anything above is a corrupt or hostile file, and building
the model would allocate by it."""
MAX_LAYERS = 64


def check_config(config: ModelConfig, n_src: int, n_tgt: int, path: str | None) -> None:
    """Every field of a checkpoint's model config in range, before any allocation by it:
    `CheckpointError` naming the field (sizes positive integers, layers >= 1, dropout in [0, 1),
    vocabulary sizes equal to the stored vocabularies)."""
    sizes = {"src_vocab_size": (config.src_vocab_size, 4 << 20), "emb_dim": (config.emb_dim,
             MAX_WIDTH), "hidden": (config.hidden, MAX_WIDTH), "layers": (config.layers,
             MAX_LAYERS), "tgt_vocab_size": (config.tgt_vocab_size, 4 << 20)}  # fmt: skip
    problems = [
        f"{name} must be an integer in [1, {top}], got {value!r}"
        for name, (value, top) in sizes.items()
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top
    ]
    for name, value, lo, hi in (("dropout", config.dropout, 0.0, 1.0),
                                ("init_range", config.init_range, 0.0, 10.0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value < hi:
            problems.append(f"{name} must be a number in [{lo:g}, {hi:g}), got {value!r}")
    for name in ("reverse_source", "reverse_target"):
        if not isinstance(getattr(config, name), bool):
            problems.append(f"{name} must be true or false, got {getattr(config, name)!r}")
    for side, n, size in (("source", n_src, config.src_vocab_size),
                          ("target", n_tgt, config.tgt_vocab_size)):  # fmt: skip
        if not problems and n != size:
            problems.append(f"the {side} vocabulary has {n} entries, the model {size}")
    if problems:
        raise CheckpointError("invalid model config: " + "; ".join(problems), path)


def check_consistency(
    config: ModelConfig,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    state: dict[str, torch.Tensor],
    model: Seq2Seq,
    path: str | None,
) -> None:
    """Raise `CheckpointError` saying what disagrees: vocabulary sizes against the config, weight
    names and shapes against the architecture, non-finite weights."""
    problems = []
    for side, vocab, size in (
        ("source", src_vocab, config.src_vocab_size),
        ("target", tgt_vocab, config.tgt_vocab_size),
    ):
        if len(vocab) != size:
            problems.append(f"the {side} vocabulary has {len(vocab)} entries, the model {size}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"weights missing: {', '.join(missing[:5])}")
    if extra:
        problems.append(f"unexpected weights: {', '.join(extra[:5])}")
    for name in sorted(set(expected) & set(state)):
        if tuple(state[name].shape) != tuple(expected[name].shape):
            problems.append(
                f"{name} has shape {tuple(state[name].shape)}, the config implies "
                f"{tuple(expected[name].shape)}"
            )
        elif state[name].is_floating_point() and not _all_finite(state[name]):
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        raise CheckpointError("inconsistent checkpoint: " + "; ".join(problems), path)


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in `x`: its minimum and maximum are finite (NaN propagates through
    both). One pass without a mask: 30x faster than `isfinite(x).all()` at load time."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def load_model(path: PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a checkpoint file as a `ModelBundle` (its SHA-256 recorded for reports)."""
    payload = read_checkpoint(path)
    return bundle_from_payload(payload, path=str(path), sha256=sha256_file(path), device=device)
