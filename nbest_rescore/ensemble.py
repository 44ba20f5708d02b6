"""Ensembles: several checkpoints that share a target vocabulary, combined at every decoder step.

Each model reads the source through its own vocabulary (and tokeniser, see `translate.py`); only the
target side must agree, since the search compares next-token distributions over one vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.model import State, select_state
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.validate import OptionError, option_finite
from nbest_rescore.vocab import PAD, Vocab

Combine = Literal["prob", "logprob"]
COMBINE_MODES: tuple[str, ...] = ("prob", "logprob")

SourceIds = tuple[Sequence[int], ...]
"""One sentence's source token ids, one id list per model of the ensemble (vocabularies may differ)."""


@dataclass(frozen=True, kw_only=True)
class EnsembleConfig:
    """How per-model next-token distributions are combined.

    `prob`: log of the weighted mean of probabilities (logsumexp); `logprob`: weighted mean of
    log-probabilities. `weights` (one per model, normalised to sum 1) default to equal weights.
    """

    combine: Combine = "prob"
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """A known `combine` and finite weights, the errors naming the translate options."""
        if self.combine not in COMBINE_MODES:
            raise OptionError(f"--combine {self.combine!r}: choose prob or logprob")
        for w in self.weights or ():
            option_finite("--ensemble-weights", w)


def _bundle_name(b: ModelBundle, i: int) -> str:
    return b.path or f"model #{i}"


def _vocab_difference(a: Vocab, b: Vocab) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} tokens"
    for i, (x, y) in enumerate(zip(a.itos, b.itos, strict=True)):
        if x != y:
            return f"first difference at id {i}: {x!r} vs {y!r}"
    return "identical"


def _tok_difference(a: TokenizerConfig, b: TokenizerConfig) -> str:
    diffs = [
        f"{f.name}={getattr(a, f.name)!r} vs {getattr(b, f.name)!r}"
        for f in fields(TokenizerConfig)
        if getattr(a, f.name) != getattr(b, f.name)
    ]
    return ", ".join(diffs)


def check_compatible(bundles: Sequence[ModelBundle]) -> None:
    """Raise `CheckpointError` unless all models share the target vocabulary and tokeniser settings."""
    if not bundles:
        raise InputError("an ensemble needs at least one model")
    first = bundles[0]
    name0 = _bundle_name(first, 0)
    for i, b in enumerate(bundles[1:], start=1):
        name = _bundle_name(b, i)
        if b.tgt_vocab.itos != first.tgt_vocab.itos:
            raise CheckpointError(
                f"target vocabularies differ between {name0} and {name} "
                f"({_vocab_difference(first.tgt_vocab, b.tgt_vocab)}); "
                "an ensemble's models must share one target vocabulary",
                b.path or None,
            )
        if b.tgt_tok != first.tgt_tok:
            raise CheckpointError(
                f"target tokeniser settings differ between {name0} and {name} "
                f"({_tok_difference(first.tgt_tok, b.tgt_tok)})",
                b.path or None,
            )
        if b.config.reverse_target != first.config.reverse_target:
            raise CheckpointError(
                f"{name0} and {name} read the target in opposite directions (right-to-left and "
                "left-to-right models cannot decode in lockstep; use R2L models as rescoring "
                "features in `rescore run`)",
                b.path or None,
            )


def normalised_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """Per-model weights summing to 1 (equal when `weights` is None); bad weights are an InputError."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise InputError(f"got {len(weights)} ensemble weights for {n} models")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"ensemble weights must be >= 0 and not all 0, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


class Ensemble:
    """Models decoding in lockstep: `encode` a batch, then `step` returns combined and per-model log-probs."""

    def __init__(
        self, bundles: Sequence[ModelBundle], config: EnsembleConfig | None = None
    ) -> None:
        config = config or EnsembleConfig()
        check_compatible(bundles)
        self.bundles = tuple(bundles)
        self.config = config
        self.weights = normalised_weights(len(bundles), config.weights)
        dev = self.device
        w = torch.tensor(self.weights, dtype=torch.float32, device=dev).view(-1, 1, 1)
        self._w = w
        self._log_w = torch.log(w)  # log(0) = -inf drops a model cleanly from the mixture

    def __len__(self) -> int:
        return len(self.bundles)

    @property
    def device(self) -> torch.device:
        return next(self.bundles[0].model.parameters()).device

    @property
    def tgt_vocab(self) -> Vocab:
        return self.bundles[0].tgt_vocab

    @property
    def tgt_tok(self) -> TokenizerConfig:
        return self.bundles[0].tgt_tok

    def encode(self, sources: Sequence[SourceIds]) -> list[State]:
        """Encode a batch with every model (its own ids); returns one decoder state per model."""
        if any(len(s) != len(self.bundles) for s in sources):
            raise ValueError(f"every source needs {len(self.bundles)} id lists, one per model")
        states: list[State] = []
        for m, bundle in enumerate(self.bundles):
            seqs = [s[m] for s in sources]
            width = max(1, max((len(x) for x in seqs), default=0))
            src = torch.full((len(seqs), width), PAD, dtype=torch.long)
            for i, ids in enumerate(seqs):
                src[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            lengths = torch.tensor([len(x) for x in seqs], dtype=torch.long)
            states.append(bundle.model.encode(src.to(self.device), lengths.to(self.device)))
        return states

    def step(self, prev: Tensor, states: Sequence[State]) -> tuple[Tensor, Tensor, list[State]]:
        """One step for `prev` (n,): combined log-probs (n, V), per-model log-probs (M, n, V), new states.

        With one model of weight 1 the combined tensor is the model's own (no copy).
        """
        outs = [b.model.step(prev, s) for b, s in zip(self.bundles, states, strict=True)]
        per_model = torch.stack([o[0] for o in outs]) if len(outs) > 1 else outs[0][0].unsqueeze(0)
        new_states = [o[1] for o in outs]
        return self.combine(per_model), per_model, new_states

    def grid_step(
        self,
        prev: Tensor,
        hcs: Sequence[tuple[Tensor, Tensor]],
        encs: Sequence[State],
        slots: Tensor | None,
        width: int,
    ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """`step` for beam search's rows on a (sentences x `width`) grid (see `Seq2Seq.grid_step`):
        every model's (h, c) per row, its encoder state per sentence."""
        outs = [
            b.model.grid_step(prev, hc, enc, slots, width)
            for b, hc, enc in zip(self.bundles, hcs, encs, strict=True)
        ]
        per_model = torch.stack([o[0] for o in outs]) if len(outs) > 1 else outs[0][0].unsqueeze(0)
        return self.combine(per_model), per_model, [o[1] for o in outs]

    def combine(self, per_model: Tensor) -> Tensor:
        """Combine per-model log-probs (M, n, V) into one (n, V) with the configured rule and weights."""
        if per_model.size(0) == 1:
            return per_model[0]
        if self.config.combine == "prob":
            return torch.logsumexp(per_model + self._log_w, dim=0)
        # Zero weights must not turn -inf log-probs into NaN (0 * -inf).
        weighted = torch.where(self._w > 0, per_model * self._w, torch.zeros_like(per_model))
        return weighted.sum(dim=0)

    @staticmethod
    def select(states: Sequence[State], index: Tensor) -> list[State]:
        """Reorder/pick rows of every model's decoder state (beam bookkeeping)."""
        return [select_state(s, index) for s in states]
