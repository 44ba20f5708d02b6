"""The names of the features `rescore run` adds to an n-best list.

One name per feature column, the same everywhere: in `weights.json`, as the label of the
augmented n-best list (`LSTM0= -9.83`) and in the report. Labels follow Moses' convention (a
CamelCase name and an index, no `_`: Moses' tuners read a label with `_` as a sparse feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nbest_rescore.errors import InputError

if TYPE_CHECKING:
    from nbest_rescore.checkpoint import ModelBundle

BASELINE = "Baseline0"
"""The decoder's own total (the 4th field of the input list), kept as a feature because the
augmented list's 4th field becomes the rescored total."""
LENGTH = "Length0"
"""Target words of the hypothesis (a length reward or penalty, as MERT sets its weight)."""
MBR = "MBR0"
"""With `rescore run --mbr`: the hypothesis' expected sentence BLEU against its list (`mbr.py`)."""

MODEL_PREFIX = {"lstm": "LSTM", "r2l": "R2L", "t2s": "T2S"}
"""Label prefix of each model kind; models of one kind are numbered in command-line order.
`lstm`: log p(hypothesis | source) read left to right (the paper's score; these models form the
ensemble of the `lstm` and even-average systems); `r2l`: the same read right to left; `t2s`:
log p(source | hypothesis) from a model trained with the languages swapped."""


def model_kind(bundle: ModelBundle) -> str:
    """The kind of scorer a checkpoint holds (a key of MODEL_PREFIX), from its config and the
    direction `checkpoint.assign_directions` gave it."""
    if bundle.direction == "t2s":
        return "t2s"
    return "r2l" if bundle.config.reverse_target else "lstm"


def ensemble_features(names: Sequence[str]) -> list[str]:
    """The left-to-right source-to-target model features (`LSTM0`, `LSTM1`, ...) among `names`:
    the paper's LSTM score, averaged into the `lstm` and even-average systems."""
    prefix = MODEL_PREFIX["lstm"]
    return [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]


def model_features(kinds: Sequence[str]) -> list[str]:
    """One feature name per model: `LSTM0`, `LSTM1`, ... (numbered within each kind)."""
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        i = seen.get(kind, 0)
        seen[kind] = i + 1
        names.append(f"{MODEL_PREFIX[kind]}{i}")
    return names


def check_free_labels(names: Sequence[str], total: str, path: str) -> None:
    """An input list's feature columns `names` may not carry a label `rescore run` writes
    (`LSTM0=`, `R2L0=`, `T2S0=`, `Length0=`, `MBR0=`, `Baseline0=`) or a second `total`: the augmented
    list would hold it twice and a weight of that name could not say which column it weighs.
    Rescoring a run's own `nbest.with-lstm.gz` is such a case: rescore the decoder's list."""
    prefixes = tuple(MODEL_PREFIX.values())
    for name in names:
        label = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name
        ours = label in (BASELINE, LENGTH, MBR) or any(
            label.startswith(p) and label[len(p) :].isdigit() for p in prefixes
        )
        if ours or (label == total and names.count(name) > 1):
            raise InputError(
                f"the list already has a feature {label!r}, a label rescore run writes: rescore "
                "the decoder's list, not an augmented one (or rename the feature)",
                path,
            )
