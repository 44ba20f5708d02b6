"""Reranking: linear combinations of per-hypothesis features and the 1-best of every n-best list.

Everything here is pure maths over a `table.NBestTable` (CSR layout: the hypotheses of sentence i
are rows offsets[i]:offsets[i+1]); reading weight files is the only I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, read_lines
from nbest_rescore.table import NBestTable

# ---------------------------------------------------------------------------------------------
# Weights


Weights = dict[str, float]


def expand_weights(
    raw: Mapping[str, Sequence[float]], names: Sequence[str], source: str = "weight"
) -> Weights:
    """Map `name -> values` (Moses style: `TranslationModel0= a b c d`) onto flat column names.

    A group needs exactly one value per column (`TranslationModel0.0` .. `.3`): a shorter or
    longer vector is an error, never padded or cut. `source` names where the weights came from.
    """
    out: Weights = {}
    for name, vals in raw.items():
        vals = list(vals)
        bad = [v for v in vals if not math.isfinite(v)]
        if bad:
            raise InputError(f"{source}: weight {name!r} is not a finite number ({bad[0]})")
        if name in names and len(vals) == 1:
            out[name] = vals[0]
            continue
        cols = [n for n in names if n.startswith(f"{name}.") and n[len(name) + 1 :].isdigit()]
        if len(cols) > 1 and len(vals) == len(cols):
            out.update(zip([f"{name}.{i}" for i in range(len(vals))], vals, strict=True))
            continue
        if cols or name in names:
            raise InputError(
                f"{source}: weight {name!r} has {len(vals)} value(s) but the feature has "
                f"{len(cols) or 1}"
            )
        raise InputError(
            f"{source}: weight {name!r} matches no feature; features are: {', '.join(names)}"
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
    """Weights from a file (see `parse_weights`)."""
    return parse_weights(read_lines(path), str(path))


def read_weights_for_list(path: PathLike, labeled: bool) -> dict[str, list[float]]:
    """Weights from a file for a list whose features are `labeled` or not: on an unlabelled
    list, a run's weights.json names each feature the run added by its column there (its
    `columns` field), since an unlabelled augmented list cannot carry the names."""
    lines = read_lines(path)
    raw = parse_weights(lines, str(path))
    columns = _run_columns(lines)
    if labeled or not columns:
        return raw
    return {columns.get(name, name): vals for name, vals in raw.items()}


def parse_weights(lines: Sequence[str], p: str) -> dict[str, list[float]]:
    """Weights from the lines of file `p`: a JSON object (`{"name": value or [values]}`, e.g. a
    saved `weights.json`) or a Moses `[weight]` section / `Name= v1 v2` lines."""
    text = "\n".join(lines).strip()
    if text.startswith("{"):
        obj = _json_object(text, p)
        if isinstance(obj, dict) and "weights" in obj:
            obj = _run_weights(obj, p)
        if not isinstance(obj, dict) or not obj:
            raise InputError("expected a JSON object of weights {name: number or [numbers]}", p)
        raw_json: dict[str, list[float]] = {}
        for k, v in obj.items():
            vals = v if isinstance(v, list) else [v]
            if not vals or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in vals
            ):
                raise InputError(f"weight {k!r}: expected a number or a list of numbers", p)
            raw_json[k] = [float(x) for x in vals]
        return raw_json
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
            if not raw[head.strip()] or not head.strip():
                raise ValueError
        except ValueError:
            raise InputError(f"expected 'Name= value ...', got {line!r}", p, i) from None
        if not all(math.isfinite(v) for v in raw[head.strip()]):
            raise InputError(f"weight {head.strip()!r} is not a finite number", p, i)
    if not raw:
        raise InputError("no weights found", p)
    return raw


def _json_object(text: str, p: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        at = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise InputError(f"invalid JSON ({msg})", p, at) from exc


def _run_columns(lines: Sequence[str]) -> dict[str, str]:
    """The `columns` field of a run's weights.json (checked by `parse_weights`), else {}."""
    text = "\n".join(lines).strip()
    if not text.startswith("{"):
        return {}
    obj = json.loads(text)
    return dict(obj.get("columns") or {}) if isinstance(obj, dict) and "weights" in obj else {}


RUN_WEIGHTS_FIELDS = {"system": str, "weights": dict, "tuning": dict, "columns": dict}
"""The fields of a run's `weights.json` and their JSON types (`tuning` may also be null;
`columns`, written for an unlabelled list only, maps feature names to columns F<n>)."""
_COLUMN = re.compile(r"F\d+")


def _run_weights(obj: dict[str, object], p: str) -> object:
    """The weights of a run's `weights.json` object, after checking its other fields' types."""
    for key, value in obj.items():
        kind = RUN_WEIGHTS_FIELDS.get(key)
        if kind is None:
            raise InputError(
                f'unknown field {key!r} beside "weights" (a run\'s weights.json has '
                f"{', '.join(RUN_WEIGHTS_FIELDS)})",
                p,
            )
        if not isinstance(value, kind) and not (key == "tuning" and value is None):
            raise InputError(
                f"field {key!r} must be a JSON {'object' if kind is dict else 'string'}, "
                f"got {type(value).__name__}",
                p,
            )
    columns = obj.get("columns") or {}
    assert isinstance(columns, dict)
    for name, col in columns.items():
        if not isinstance(col, str) or not _COLUMN.fullmatch(col):
            raise InputError(
                f"field 'columns': {name!r} must map to a column name F<n>, got {col!r}", p
            )
    if len(set(columns.values())) != len(columns):
        raise InputError("field 'columns': two features map to the same column", p)
    return obj["weights"]


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
    return select_best(linear_scores(table, weights), table.offsets)


def linear_scores(table: NBestTable, weights: Mapping[str, float]) -> np.ndarray:
    """Every hypothesis' weighted sum of features; a score that is not finite (a weight so large
    that a product or the sum overflows, or `inf - inf`) is an `InputError` naming the weights
    that made it, since no hypothesis could be chosen by it."""
    w = weight_vector(weights, table.names)
    with np.errstate(over="ignore", invalid="ignore"):
        scores = table.values @ w
        bad = np.flatnonzero(~np.isfinite(scores))
        if not len(bad):
            return scores
        row = int(bad[0])
        terms = table.values[row] * w
    cols = np.flatnonzero(~np.isfinite(terms))
    if not len(cols):  # finite products whose sum overflows: the largest of either sign
        cols = np.unique([int(np.argmax(terms)), int(np.argmin(terms))])
    named = ", ".join(f"{table.names[c]}={w[c]:g}" for c in cols)
    sent = int(np.searchsorted(table.offsets, row, side="right") - 1)
    raise InputError(
        f"weight(s) {named} make a hypothesis' score non-finite (sentence {sent}): "
        "every weighted sum of features must be a finite number (--weight/--weights)"
    )


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
