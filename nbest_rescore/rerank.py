"""Reranking: linear combinations of per-hypothesis features and the 1-best of every n-best list.

Everything here is pure maths over a `table.NBestTable` (CSR layout: the hypotheses of sentence i
are rows offsets[i]:offsets[i+1]); reading weight files is the only I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, read_lines
from nbest_rescore.table import NBestTable

# ---------------------------------------------------------------------------------------------
# Weights


Weights = dict[str, float]


def expand_weights(raw: Mapping[str, Sequence[float]], names: Sequence[str]) -> Weights:
    """Map `name -> values` (Moses style: `TranslationModel0= a b c d`) onto flat column names."""
    out: Weights = {}
    for name, vals in raw.items():
        vals = list(vals)
        if name in names and len(vals) == 1:
            out[name] = vals[0]
            continue
        cols = [f"{name}.{i}" for i in range(len(vals))]
        if len(vals) > 1 and all(c in names for c in cols):
            out.update(zip(cols, vals, strict=True))
            continue
        raise InputError(
            f"weight {name!r} with {len(vals)} value(s) matches no feature; "
            f"features are: {', '.join(names)}"
        )
    return out


def parse_weight_options(options: Sequence[str]) -> dict[str, list[float]]:
    """`NAME=VALUE[,VALUE...]` command-line options -> raw weights."""
    raw: dict[str, list[float]] = {}
    for opt in options:
        name, sep, vals = opt.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            raw[name.strip()] = [float(v) for v in vals.replace(",", " ").split()]
            if not raw[name.strip()]:
                raise ValueError
        except ValueError:
            raise InputError(f"--weight {opt!r}: expected NAME=VALUE[,VALUE...]") from None
    return raw


def read_weights(path: PathLike) -> dict[str, list[float]]:
    """Weights from a JSON object (`{"name": value or [values]}`, e.g. a saved `weights.json`)
    or a Moses `[weight]` section / `Name= v1 v2` lines."""
    lines = read_lines(path)
    text = "\n".join(lines).strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", str(path), exc.lineno) from exc
        obj = obj.get("weights", obj)
        return {k: [float(x) for x in (v if isinstance(v, list) else [v])] for k, v in obj.items()}
    raw: dict[str, list[float]] = {}
    for i, line in enumerate(lines, start=1):
        s = line.split("#", 1)[0].strip()
        if not s or s.startswith("["):
            continue
        head, sep, rest = s.partition("=")
        try:
            if not sep:
                raise ValueError
            raw[head.strip()] = [float(v) for v in rest.split()]
        except ValueError:
            raise InputError(f"expected 'Name= value ...', got {line!r}", str(path), i) from None
    if not raw:
        raise InputError("no weights found", str(path))
    return raw


def weight_vector(weights: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """Dense weight vector over `names` (absent features weigh 0); unknown names are an error."""
    unknown = [n for n in weights if n not in names]
    if unknown:
        raise InputError(f"unknown feature(s) {unknown}; features are: {', '.join(names)}")
    return np.asarray([weights.get(n, 0.0) for n in names], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Selection


def group_ids(offsets: np.ndarray) -> np.ndarray:
    """The sentence index of every row of a CSR layout."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def select_best(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per sentence, the rank (0-based, within its list) of the highest score; ties -> best rank.

    An empty range gets -1; an `NBestTable` has none (a sentence without hypotheses is one
    synthetic empty row there, so every choice is a real row index).
    """
    n_sent = len(offsets) - 1
    choice = np.full(n_sent, -1, dtype=np.int64)
    if len(scores) == 0:
        return choice
    sizes = np.diff(offsets)
    nonempty = np.flatnonzero(sizes > 0)
    maxes = np.maximum.reduceat(scores, offsets[nonempty])
    gid = group_ids(offsets)
    is_max = scores == np.repeat(maxes, sizes[nonempty])
    rows = np.flatnonzero(is_max)
    first_groups, first_idx = np.unique(gid[rows], return_index=True)
    choice[first_groups] = rows[first_idx] - offsets[first_groups]
    return choice


def rerank(table: NBestTable, weights: Mapping[str, float]) -> np.ndarray:
    """1-best rank per sentence under a linear model of `table`'s features."""
    return select_best(table.values @ weight_vector(weights, table.names), table.offsets)


def within_list_scale(x: np.ndarray, offsets: np.ndarray) -> float:
    """Pooled within-list standard deviation of one score: its typical spread inside an n-best list.

    Used to put scores of very different ranges (Moses' MERT-scaled total, an LSTM log-prob) on one
    scale before averaging; a constant score gives 1.0 so it is left unchanged.
    """
    sizes = np.diff(offsets)
    nonempty = sizes > 0
    if not nonempty.any():
        return 1.0
    sums = np.add.reduceat(x, offsets[:-1][nonempty])
    means = np.repeat(sums / sizes[nonempty], sizes[nonempty])
    dof = len(x) - int(nonempty.sum())
    if dof <= 0:
        return 1.0
    var = float(((x - means) ** 2).sum() / dof)
    return math.sqrt(var) if var > 0 else 1.0
