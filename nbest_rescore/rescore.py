"""The rescoring job behind `rescore run`: score every hypothesis with an LSTM ensemble, combine
with the baseline's total, optionally tune the weights on a dev list, pick the 1-best, report.

The paper's "even average" of the baseline and LSTM scores assumes the two are on one scale. Moses'
total is on MERT's scale (around -2) while an LSTM log-prob is around -20, so a literal average lets
the LSTM dominate (FINDINGS.md: -4.4 BLEU). Our `even_average` therefore divides each score by its
pooled within-list standard deviation before averaging (`rerank.even_average_weights`); the literal
average is reported too, as `even_average_raw`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbest_rescore import distributed
from nbest_rescore.analysis import (
    build_bleu_tables,
    oracle_selections,
    selected_surfaces,
    source_lengths,
    write_selection,
)
from nbest_rescore.checkpoint import ModelBundle, load_model
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import atomic_write, read_lines
from nbest_rescore.metrics import BleuConfig, HypStats, compute_hyp_stats, signature
from nbest_rescore.nbest import Feature, Hypothesis, read_nbest, write_nbest
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.report import (
    Report,
    plot_bleu_by_length,
    plot_oracle_at_k,
    plot_rank_histogram,
    provenance,
    to_json,
    write_report,
)
from nbest_rescore.rerank import (
    TOTAL,
    FeatureTable,
    even_average_weights,
    expand_weights,
    nbest_feature_table,
    read_weights,
    select_best,
    weight_vector,
)
from nbest_rescore.score_store import NBestScores, bf16_check, score_nbest
from nbest_rescore.scoring import ScoringConfig
from nbest_rescore.tune import MertConfig, MertResult, mert

LSTM = "lstm"
LENGTH = "length"
NEW_FEATURE = "LSTM0"


def lstm_column(i: int) -> str:
    return f"{LSTM}.{i}"


@dataclass(frozen=True)
class RunJob:
    """Settings of `rescore run`."""

    nbest: str
    src: str
    models: tuple[str, ...]
    out: Path
    ref: str | None = None
    weights: str | None = None
    tune_nbest: str | None = None
    tune_src: str | None = None
    tune_ref: str | None = None
    bleu: BleuConfig = BleuConfig()
    scoring: ScoringConfig = ScoringConfig()
    mert: MertConfig = MertConfig()
    max_hyps: int | None = None
    src_lang: str = "en"
    workers: int | None = None
    cache_dir: Path | None = None
    """Score chunk cache (shareable between runs); default OUT/cache."""


@dataclass
class ScoredList:
    """One n-best list with its features (decoder total + LSTM scores + length) and, with a
    reference, its BLEU statistics."""

    table: FeatureTable
    scores: NBestScores
    stats: HypStats | None = None
    timings: dict[str, float] = field(default_factory=dict)


def feature_table(
    nbest: str, n_sentences: int, scores: NBestScores, max_hyps: int | None
) -> FeatureTable:
    """Decoder total, each model's log-prob, the ensemble mean, and the target length."""
    table = nbest_feature_table(read_nbest(nbest, n_sentences=n_sentences, max_hyps=max_hyps))
    if not np.array_equal(table.offsets, scores.offsets):
        raise InputError("n-best list changed while it was being scored", nbest)
    k = scores.logprob.shape[1]
    cols = np.concatenate(
        [scores.logprob, scores.logprob.mean(axis=1, keepdims=True), scores.n_tokens[:, None] - 1],
        axis=1,
    )
    names = [lstm_column(i) for i in range(k)] + [LSTM, LENGTH]
    return table.select([TOTAL]).with_columns(names, cols)


def score_list(
    nbest: str,
    src: str,
    ref: str | None,
    bundles: Sequence[ModelBundle],
    job: RunJob,
    cache_dir: Path,
    progress: ProgressSettings,
) -> ScoredList | None:
    """Check the inputs line up, score the list (sharded under torchrun); None on non-main ranks."""
    sources = read_lines(src)
    refs = None
    if ref is not None:
        refs = read_lines(ref)
        if len(refs) != len(sources):
            raise InputError(f"has {len(refs)} lines but the source {src} has {len(sources)}", ref)
    scores = score_nbest(
        nbest,
        sources,
        bundles,
        job.scoring,
        cache_dir,
        progress,
        max_hyps=job.max_hyps,
        sources_path=src,
    )
    if not distributed.is_main():
        return None
    table = feature_table(nbest, len(sources), scores, job.max_hyps)
    stats = None
    if refs is not None:
        stats = compute_hyp_stats(
            read_nbest(nbest, n_sentences=len(sources), max_hyps=job.max_hyps),
            refs,
            job.bleu,
            progress_settings=progress,
            workers=job.workers,
        )
    return ScoredList(table=table, scores=scores, stats=stats)


def real_rows(hs: HypStats) -> tuple[np.ndarray, np.ndarray]:
    """BLEU statistics of real hypotheses only (FeatureTable layout) and the constant row sum of
    sentences without hypotheses (whose only choice is the empty translation)."""
    keep = np.ones(len(hs.stats), dtype=bool)
    keep[hs.offsets[:-1][hs.missing]] = False
    base = hs.stats[~keep].sum(axis=0) if (~keep).any() else np.zeros(hs.stats.shape[1], np.int64)
    return hs.stats[keep], base


def as_selection(choice: np.ndarray) -> np.ndarray:
    """FeatureTable choices (-1 = empty list) as HypStats ranks (the empty row is rank 0)."""
    return np.maximum(choice, 0)


def start_weights(table: FeatureTable, n_models: int) -> dict[str, float]:
    """Scale-aware even average of the decoder total and the ensemble's mean log-prob, spread
    over the individual model columns (their mean is the ensemble score)."""
    even = even_average_weights(table, [TOTAL, LSTM])
    weights = {TOTAL: even[TOTAL], LENGTH: 0.0}
    weights.update({lstm_column(i): even[LSTM] / n_models for i in range(n_models)})
    return weights


def tune_weights(
    dev: ScoredList, n_models: int, cfg: MertConfig
) -> tuple[dict[str, float], MertResult]:
    """MERT on the dev list over total, each model's log-prob and length, from the even average."""
    assert dev.stats is not None
    names = [TOTAL, *[lstm_column(i) for i in range(n_models)], LENGTH]
    table = dev.table.select(names)
    stats, base = real_rows(dev.stats)
    result = mert(table, stats, start_weights(dev.table, n_models), cfg, base=base)
    return result.weights, result


def lstm_features(scores: NBestScores) -> list[list[Feature]]:
    """Per hypothesis, `LSTM0= <model 1> .. <model k> <ensemble mean>` for the augmented n-best."""
    lp = scores.logprob
    comb = lp.mean(axis=1)
    return [[Feature(NEW_FEATURE, (*lp[i].tolist(), float(comb[i])))] for i in range(len(lp))]


def write_augmented(
    nbest: str, out: Path, scores: NBestScores, n_sentences: int, max_hyps: int | None
) -> None:
    """The n-best list with `LSTM0=` appended to every line (Moses tuners read it as dense)."""
    feats = lstm_features(scores)
    counter = iter(range(len(feats)))

    def extra(_h: Hypothesis) -> list[Feature]:
        return feats[next(counter)]

    write_nbest(out, read_nbest(nbest, n_sentences=n_sentences, max_hyps=max_hyps), extra)


def write_scores_table(path_stem: Path, data: ScoredList, choices: dict[str, np.ndarray]) -> Path:
    """Every hypothesis with its features, to parquet (pyarrow installed) or CSV."""
    t = data.table
    gid = np.repeat(np.arange(t.n_sentences), np.diff(t.offsets))
    df = pd.DataFrame({"sent_id": gid, "rank": np.arange(len(gid)) - t.offsets[gid]})
    for i, n in enumerate(t.names):
        df[n] = t.values[:, i]
    for k in range(data.scores.n_unk.shape[1]):
        df[f"n_unk.{k}"] = data.scores.n_unk[:, k]
    for name, choice in choices.items():
        chosen = np.zeros(len(gid), dtype=bool)
        ok = choice >= 0
        chosen[t.offsets[:-1][ok] + choice[ok]] = True
        df[f"chosen.{name}"] = chosen
    try:
        import pyarrow  # noqa: F401

        path = path_stem.with_suffix(".parquet")
        with atomic_write(path, "wb", gz=False) as fh:
            df.to_parquet(fh, index=False)
    except ImportError:
        path = path_stem.with_suffix(".csv")
        with atomic_write(path) as fh:
            df.to_csv(fh, index=False)
    return path


def scoring_info(scores: NBestScores) -> dict[str, Any]:
    """What the report says about scoring: OOV rates, escaping, timings."""
    return {
        "model_sha256": list(scores.model_sha256),
        "tgt_oov_rate": list(scores.tgt_oov_rate),
        "src_oov_rate": list(scores.src_oov_rate),
        "nbest_escaped": scores.escaped,
        "timing": scores.timing,
    }


def run_rescore_job(job: RunJob, progress: ProgressSettings = QUIET) -> dict[str, Any] | None:
    """Run the whole job and write `--out`; returns `summary.json`'s content (None off rank 0)."""
    if not job.models:
        raise InputError("no model given (-m CKPT)")
    if job.tune_nbest is not None and (job.tune_src is None or job.tune_ref is None):
        raise InputError("--tune-nbest needs --tune-src and --tune-ref")
    bundles = [load_model(m, device=job.scoring.device) for m in job.models]
    cache_dir = job.cache_dir or job.out / "cache"

    dev: ScoredList | None = None
    if job.tune_nbest is not None:
        assert job.tune_src is not None
        dev = score_list(
            job.tune_nbest, job.tune_src, job.tune_ref, bundles, job, cache_dir, progress
        )
    test = score_list(job.nbest, job.src, job.ref, bundles, job, cache_dir, progress)
    if test is None:
        return None
    k = len(bundles)
    table = test.table

    weight_sets: dict[str, dict[str, float]] = {
        "baseline": {TOTAL: 1.0},
        LSTM: {LSTM: 1.0},
        "even_average": even_average_weights(table, [TOTAL, LSTM]),
        "even_average_raw": {TOTAL: 0.5, LSTM: 0.5},
    }
    if k > 1:
        for i in range(k):
            weight_sets[f"lstm_model{i}"] = {lstm_column(i): 1.0}
    tuning: dict[str, Any] = {}
    if job.weights is not None:
        raw = read_weights(job.weights)
        weight_sets["weights"] = expand_weights(raw, table.names)
    if dev is not None:
        tuned, result = tune_weights(dev, k, job.mert)
        weight_sets["tuned"] = tuned
        tuning = {
            "dev_bleu": result.dev_bleu,
            "dev_bleu_even_average": result.start_bleu,
            "weights": tuned,
            "mert": asdict(job.mert),
            "tune_nbest": job.tune_nbest,
        }
        with atomic_write(job.out / "weights.json") as fh:
            fh.write(to_json({"weights": tuned, "tuning": tuning}))

    choices = {
        name: select_best(table.values @ weight_vector(w, table.names), table.offsets)
        for name, w in weight_sets.items()
    }
    final = "tuned" if "tuned" in choices else "weights" if "weights" in choices else "even_average"

    job.out.mkdir(parents=True, exist_ok=True)
    n_sent = table.n_sentences
    write_augmented(job.nbest, job.out / "nbest.with-lstm.gz", test.scores, n_sent, job.max_hyps)
    surfaces = selected_surfaces(job.nbest, choices[final], n_sent)
    write_selection(job.out, "best", surfaces, job.bleu)
    scores_path = write_scores_table(job.out / "scores", test, choices)

    model_info = [
        {
            "path": b.path,
            "sha256": b.sha256,
            "config": b.config.to_dict(),
            "reverse_source": b.config.reverse_source,
        }
        for b in bundles
    ]
    summary: dict[str, Any] = {
        "n_sentences": n_sent,
        "n_hypotheses": len(table.values),
        "signature": signature(job.bleu),
        "final_system": final,
        "weights": weight_sets,
        "tuning": tuning,
        "models": model_info,
        "scoring": scoring_info(test.scores),
        "systems": {},
    }
    if job.scoring.bf16:
        summary["scoring"]["bf16_max_abs_diff_vs_fp32"] = bf16_check(
            job.nbest, read_lines(job.src), bundles, job.scoring
        )
    report = Report(
        title=f"Rescoring {job.nbest} with {k} LSTM model(s)",
        summary=summary,
        provenance=provenance(
            {
                "nbest": job.nbest,
                "src": job.src,
                "ref": job.ref,
                "tune_nbest": job.tune_nbest,
                "tune_src": job.tune_src,
                "tune_ref": job.tune_ref,
                "weights": job.weights,
            },
            models=model_info,
            signature=signature(job.bleu),
            scoring=asdict(job.scoring),
            max_hyps=job.max_hyps,
        ),
        notes=[
            f"{n_sent} sentences, {len(table.values)} hypotheses, {k} model(s); "
            f"best.*.txt hold the '{final}' system's choices.",
            "even_average: baseline total and LSTM log-prob each divided by its pooled within-list "
            "standard deviation, then averaged (scale-aware version of the paper's even average); "
            "even_average_raw: the literal 0.5/0.5 average.",
        ],
    )
    weights_df = pd.DataFrame(
        [{"system": s, **{n: w.get(n, 0.0) for n in table.names}} for s, w in weight_sets.items()]
    )
    report.tables["weights"] = weights_df
    if test.stats is not None:
        hs = test.stats
        model_sel = {n: as_selection(c) for n, c in choices.items()}
        oracle_sel, at_k = oracle_selections(hs)
        selections = {**model_sel, **{n: s for n, s in oracle_sel.items() if n != "baseline"}}
        src_len = source_lengths(job.src, n_sent, job.src_lang)
        systems, sig, by_len, hist = build_bleu_tables(hs, selections, src_len)
        summary["systems"] = {r["system"]: {"bleu": r["bleu"]} for r in systems.to_dict("records")}
        summary["oracle_at_k"] = at_k
        summary["significance"] = sig
        report.tables["systems"] = systems
        report.tables["oracle_at_k"] = pd.DataFrame(
            {"k": [int(x) for x in at_k], "bleu": list(at_k.values())}
        )
        report.tables["rank_histogram"] = hist
        report.figures["oracle_at_k"] = plot_oracle_at_k(
            {int(x): v for x, v in at_k.items()}, summary["systems"]["baseline"]["bleu"]
        )
        shown = [s for s in ("baseline", final, LSTM, "oracle") if s in hist.columns]
        report.figures["chosen_ranks"] = plot_rank_histogram(hist[["rank", *dict.fromkeys(shown)]])
        if by_len is not None:
            report.tables["bleu_by_length"] = by_len
            report.figures["bleu_by_length"] = plot_bleu_by_length(
                by_len, list(dict.fromkeys(["baseline", final, "oracle"]))
            )
    report.notes.append(f"per-hypothesis scores: {scores_path.name}")
    write_report(report, job.out)
    return summary
