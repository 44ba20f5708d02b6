"""`rescore translate --rerank`: the beam's n-best list of every sentence rescored with more
models and a length feature, and the best hypothesis by tuned weights.

The search models give one feature each (`LSTM0`, ...: their summed log-probs of the hypothesis);
the rerankers, models the beam search cannot use left to right, give theirs as `rescore run` does
(`R2L0`: the target read right to left, `T2S0`: log p(source | hypothesis)); `Length0` counts the
words. The weights are tuned by MERT (`tune.py`) on a dev set translated the same way
(`tune_reranker`), and stored with the feature names they weigh (`rerank.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.errors import InputError
from nbest_rescore.features import LENGTH, model_features, model_kind
from nbest_rescore.fileio import PathLike, atomic_write, read_lines_hashed
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.rerank import Weights, select_best
from nbest_rescore.scoring import ScoringConfig, score_hypotheses, score_source_given_hypotheses
from nbest_rescore.table import NBestTable, Surfaces
from nbest_rescore.translate import TranslateConfig, TranslationResult, translate_lines

if TYPE_CHECKING:  # BLEU and MERT (sacrebleu) only when tuning: translating starts faster
    from nbest_rescore.metrics import BleuConfig
    from nbest_rescore.tune import MertConfig

RERANK_FILE = "rerank.json"
"""The shipped reranking weights, beside the shipped models."""

CHUNK = 64
"""Sentences whose n-best lists are scored together by the rerankers."""


@dataclass(frozen=True)
class Reranker:
    """The models that rescore the beam's lists (not the search's), the feature names of the
    search models and of these, and the weights over them (with `Length0`)."""

    scorers: tuple[ModelBundle, ...]
    search_names: tuple[str, ...]
    scorer_names: tuple[str, ...]
    weights: Weights

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.search_names, *self.scorer_names, LENGTH)


def feature_names(n_search: int, scorers: Sequence[ModelBundle]) -> tuple[tuple[str, ...], ...]:
    """(search model features, reranker features): `LSTM0..`, then `R2L0`/`T2S0`/`LSTM<k>..`
    numbered after the search models'."""
    kinds = ["lstm"] * n_search + [model_kind(b) for b in scorers]
    names = model_features(kinds)
    return tuple(names[:n_search]), tuple(names[n_search:])


def feature_table(
    results: Sequence[TranslationResult],
    scorers: Sequence[ModelBundle],
    cfg: ScoringConfig,
    *,
    escaped: bool,
) -> NBestTable:
    """The features of every hypothesis of `results` (a row each, sentences in order): the search
    models' scores, each reranker's log-prob and the length in words. `escaped`: whether the
    hypotheses' tokens carry Moses XML escapes (the search model's convention)."""
    hyps = [h.tokens for r in results for h in r.hypotheses]
    counts = [len(r.hypotheses) for r in results]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    hyp_src = np.repeat(np.arange(len(results)), counts)
    sources = [r.source for r in results]
    n_search = len(results[0].hypotheses[0].model_scores) if hyps else 0
    cols: list[np.ndarray] = []
    for k in range(n_search):
        cols.append(np.array([h.model_scores[k] for r in results for h in r.hypotheses]))
    for b in scorers:
        score = score_source_given_hypotheses if model_kind(b) == "t2s" else score_hypotheses
        cols.append(score(b, sources, hyps, hyp_src, cfg, escaped=escaped).logprob)
    cols.append(np.array([len(h) for h in hyps], dtype=np.float64))
    search_names, scorer_names = feature_names(n_search, scorers)
    values = np.stack(cols, axis=1) if hyps else np.zeros((0, len(cols)))
    return NBestTable(
        (*search_names, *scorer_names, LENGTH),
        values,
        offsets,
        surfaces=Surfaces.of(" ".join(h) for h in hyps),
    )


def _reordered(result: TranslationResult, best: int) -> TranslationResult:
    if best == 0:
        return result
    hyps = result.hypotheses
    return replace(result, hypotheses=(hyps[best], *hyps[:best], *hyps[best + 1 :]))


def rerank_results(
    ens: Ensemble,
    results: Iterable[TranslationResult],
    reranker: Reranker,
    cfg: ScoringConfig,
) -> Iterator[TranslationResult]:
    """`results` with each sentence's hypotheses reordered so the best by `reranker` comes
    first (and is the output text); chunks of `CHUNK` sentences are scored together."""
    escaped = ens.tgt_tok.escape
    it = iter(results)
    while chunk := list(islice(it, CHUNK)):
        scored = [r for r in chunk if r.hypotheses]
        if scored:
            table = feature_table(scored, reranker.scorers, cfg, escaped=escaped)
            check_features(table.names, reranker.weights, "the reranking weights")
            w = np.array([reranker.weights[n] for n in table.names])
            best = iter(select_best(table.values @ w, table.offsets).tolist())
        for r in chunk:
            yield _reordered(r, next(best)) if r.hypotheses else r


def check_features(names: Sequence[str], weights: Weights, source: str) -> None:
    """The weights must weigh exactly these features: ones tuned for other models do not apply."""
    if set(names) != set(weights):
        raise InputError(
            f"{source} weigh the features {', '.join(sorted(weights))} but these models give "
            f"{', '.join(names)}: tune weights for them (rescore translate --rerank --tune-src "
            "... --tune-ref ... --rerank-weights NEW.json)"
        )


def tune_reranker(
    ens: Ensemble,
    scorers: Sequence[ModelBundle],
    sources: Sequence[str],
    refs: Sequence[str],
    translate: TranslateConfig,
    scoring: ScoringConfig,
    mert: MertConfig,
    bleu: BleuConfig,
    progress: ProgressSettings = QUIET,
) -> tuple[Weights, dict[str, Any]]:
    """Translate the dev `sources` into n-best lists, score them with `scorers`, and tune the
    weights by MERT against `refs`, starting from the search's own choice (the first search
    model's score alone for one model; their sum for an ensemble)."""
    from nbest_rescore.metrics import compute_hyp_stats, signature
    from nbest_rescore.tune import tune

    if len(sources) != len(refs):
        raise InputError(f"the dev source has {len(sources)} lines but its reference {len(refs)}")
    results = list(translate_lines(ens, sources, translate, progress, total=len(sources)))
    table = feature_table(results, scorers, scoring, escaped=ens.tgt_tok.escape)
    stats = compute_hyp_stats(table.sentences(), refs, bleu)
    search_names, _ = feature_names(len(ens.bundles), scorers)
    start = {n: (1.0 if n in search_names else 0.0) for n in table.names}
    result = tune(table, stats.stats, start, mert)
    record = {
        "dev_bleu": result.dev_bleu,
        "dev_bleu_search": result.start_bleu,
        "dev_sentences": len(sources),
        "beam": translate.search.beam,
        "nbest": translate.search.nbest,
        "mert": asdict(mert),
        "signature": signature(bleu),
    }
    return result.weights, record


def write_rerank_weights(
    path: PathLike,
    weights: Weights,
    record: dict[str, Any],
    models: dict[str, Sequence[str]],
) -> None:
    """`rerank.json`: the weights, the models they were tuned for (by role: file name and
    sha256, not a path that exists only here) and the tuning."""
    from nbest_rescore.fileio import sha256_file

    named = {
        role: [{"name": Path(p).name, "sha256": sha256_file(p)} for p in paths]
        for role, paths in models.items()
    }
    doc = {"weights": weights, "models": named, "tuning": record}
    with atomic_write(path) as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")


def read_rerank_weights(path: PathLike) -> tuple[Weights, dict[str, Any]]:
    """The weights of a `rerank.json` and the rest of the file; errors name the file."""
    lines, _ = read_lines_hashed(path)
    try:
        doc = json.loads("\n".join(lines))
        weights = {str(k): float(v) for k, v in doc["weights"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"not a reranking weights file ({e})", str(path)) from None
    if not all(np.isfinite(list(weights.values()))):
        raise InputError("a reranking weight is not a finite number", str(path))
    return weights, doc


def shipped_rerank_file(directory: Path) -> Path | None:
    path = directory / RERANK_FILE
    return path if path.is_file() else None
