"""Model-free jobs over n-best lists: the oracle analysis report and linear reranking."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbest_rescore import oracle as orc
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import atomic_write, read_lines
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    bleu_of_selection,
    compute_hyp_stats,
    hypothesis_text,
    paired_bootstrap,
    signature,
)
from nbest_rescore.nbest import read_nbest
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.report import (
    Report,
    plot_bleu_by_length,
    plot_oracle_at_k,
    plot_rank_histogram,
    provenance,
    write_report,
)
from nbest_rescore.rerank import (
    TOTAL,
    expand_weights,
    nbest_feature_table,
    parse_weight_options,
    read_weights,
    rerank,
)
from nbest_rescore.text import TokenizerConfig, tokenize

ORACLE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def check_parallel(name: str, path: str, n_lines: int, n_ids: int) -> None:
    """A reference/source must have one line per n-best sentence id (trailing ids may be absent)."""
    if n_lines < n_ids:
        raise InputError(
            f"has {n_lines} lines but the n-best list has sentence ids up to {n_ids - 1}: "
            f"the {name} must have one line per source sentence",
            path,
        )


def count_ids(nbest: str) -> int:
    """Number of sentence ids (last id + 1) of an n-best list, by a quick streaming pass."""
    n = 0
    for g in read_nbest(nbest):
        n = g.sent_id + 1
    return n


def selected_surfaces(nbest: str, selection: np.ndarray, n_sentences: int) -> list[tuple[str, ...]]:
    """Tokens of the chosen hypothesis (rank per sentence, -1/missing = empty) by a streaming pass."""
    out: list[tuple[str, ...]] = [() for _ in range(n_sentences)]
    for g in read_nbest(nbest, n_sentences=n_sentences):
        r = int(selection[g.sent_id])
        if 0 <= r < len(g.hyps):
            out[g.sent_id] = g.hyps[r].tokens
    return out


def write_selection(
    out_dir: Path, stem: str, surfaces: Sequence[tuple[str, ...]], config: BleuConfig
) -> None:
    """`{stem}.tok.txt` and `{stem}.detok.txt`: the chosen hypotheses, one per sentence."""
    detok = BleuConfig(tokenize="13a", tgt_lang=config.tgt_lang)
    with atomic_write(out_dir / f"{stem}.tok.txt") as fh:
        fh.writelines(" ".join(t) + "\n" for t in surfaces)
    with atomic_write(out_dir / f"{stem}.detok.txt") as fh:
        fh.writelines(hypothesis_text(t, detok) + "\n" for t in surfaces)


def source_lengths(src: str | None, n: int, lang: str = "en") -> np.ndarray | None:
    """Source lengths in Moses tokens (for the BLEU-by-length analysis)."""
    if src is None:
        return None
    lines = read_lines(src)
    check_parallel("source", src, len(lines), n)
    cfg = TokenizerConfig(lang=lang)
    return np.asarray([len(tokenize(line, cfg)) for line in lines[:n]], dtype=np.int64)


def system_row(name: str, hs: HypStats, selection: np.ndarray) -> dict[str, Any]:
    """BLEU with its components for one selection."""
    sc = bleu_of_selection(hs, selection)
    return {
        "system": name,
        "bleu": float(sc.score),
        "1-gram": sc.precisions[0],
        "2-gram": sc.precisions[1],
        "3-gram": sc.precisions[2],
        "4-gram": sc.precisions[3],
        "bp": sc.bp,
        "hyp_len": sc.sys_len,
        "ref_len": sc.ref_len,
    }


def build_bleu_tables(
    hs: HypStats,
    selections: dict[str, np.ndarray],
    src_len: np.ndarray | None,
    *,
    significance_against: str = "baseline",
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None, pd.DataFrame]:
    """Systems table, significance, BLEU by length and rank histogram for named selections."""
    systems = pd.DataFrame([system_row(n, hs, s) for n, s in selections.items()])
    base_rows = hs.rows(selections[significance_against])
    sig = {
        n: {"p_value": paired_bootstrap(base_rows, hs.rows(s))}
        for n, s in selections.items()
        if n != significance_against
    }
    by_len = None
    if src_len is not None:
        cols: dict[str, Any] = {}
        for n, s in selections.items():
            rows = orc.bleu_by_length(hs, s, src_len)
            cols.setdefault("length", [r[0] for r in rows])
            cols.setdefault("sentences", [r[1] for r in rows])
            cols[n] = [r[2] for r in rows]
        by_len = pd.DataFrame(cols)
    hist: dict[str, Any] = {}
    for n, s in selections.items():
        h = orc.rank_histogram(s, missing=hs.missing)
        hist.setdefault("rank", list(h.keys()))
        hist[n] = list(h.values())
    return systems, sig, by_len, pd.DataFrame(hist)


@dataclass(frozen=True)
class OracleJob:
    """Settings of `rescore oracle`."""

    nbest: str
    ref: str
    out: Path
    src: str | None = None
    bleu: BleuConfig = BleuConfig()
    max_hyps: int | None = None
    src_lang: str = "en"
    workers: int | None = None


def oracle_selections(
    hs: HypStats, ks: Iterable[int] = ORACLE_KS
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The model-free systems (1-best, oracles, anti-oracle) and oracle@k BLEU."""
    selections = {
        "baseline": hs.one_best(),
        "oracle": orc.corpus_oracle(hs),
        "oracle_sentence": orc.sentence_oracle(hs),
        "anti_oracle": orc.anti_oracle(hs),
    }
    at_k = {str(k): float(v) for k, v in orc.oracle_at_k(hs, tuple(ks)).items()}
    return selections, at_k


def run_oracle_job(job: OracleJob, progress: ProgressSettings = QUIET) -> dict[str, Any]:
    """Compute and write the oracle analysis report; returns `summary.json`'s content."""
    refs = read_lines(job.ref)
    n_ids = count_ids(job.nbest)
    check_parallel("reference", job.ref, len(refs), n_ids)
    hs = compute_hyp_stats(
        read_nbest(job.nbest, n_sentences=len(refs), max_hyps=job.max_hyps),
        refs,
        job.bleu,
        progress_settings=progress,
        workers=job.workers,
    )
    src_len = source_lengths(job.src, len(refs), job.src_lang)
    selections, at_k = oracle_selections(hs)
    systems, sig, by_len, hist = build_bleu_tables(hs, selections, src_len)
    summary: dict[str, Any] = {
        "n_sentences": hs.n_sentences,
        "n_hypotheses": hs.n_hypotheses,
        "signature": signature(job.bleu),
        "systems": {r["system"]: {"bleu": r["bleu"]} for r in systems.to_dict("records")},
        "oracle_at_k": at_k,
        "significance": sig,
    }
    report = Report(
        title=f"Oracle analysis of {job.nbest}",
        summary=summary,
        tables={
            "systems": systems,
            "oracle_at_k": pd.DataFrame({"k": [int(k) for k in at_k], "bleu": list(at_k.values())}),
            "rank_histogram": hist,
        },
        provenance=provenance(
            {"nbest": job.nbest, "ref": job.ref, "src": job.src},
            signature=signature(job.bleu),
            max_hyps=job.max_hyps,
        ),
        notes=[
            f"{hs.n_sentences} sentences, {hs.n_hypotheses} hypotheses, "
            f"{int(hs.missing.sum())} sentences without hypotheses.",
            f"BLEU signature: {signature(job.bleu)}",
            "oracle: corpus-level greedy hill-climbing on BLEU statistics; oracle_sentence: best "
            "smoothed sentence BLEU per sentence; anti_oracle: worst, a floor.",
        ],
    )
    if by_len is not None:
        report.tables["bleu_by_length"] = by_len
        report.figures["bleu_by_length"] = plot_bleu_by_length(by_len, ["baseline", "oracle"])
    report.figures["oracle_at_k"] = plot_oracle_at_k(
        {int(k): v for k, v in at_k.items()}, summary["systems"]["baseline"]["bleu"]
    )
    report.figures["oracle_ranks"] = plot_rank_histogram(
        hist[["rank", "oracle", "oracle_sentence"]], "Rank of the oracle's choices"
    )
    write_report(report, job.out)
    surfaces = selected_surfaces(job.nbest, selections["oracle"], hs.n_sentences)
    write_selection(job.out, "oracle", surfaces, job.bleu)
    return summary


@dataclass(frozen=True)
class RerankJob:
    """Settings of `rescore rerank`."""

    nbest: str
    weights_file: Path | None = None
    weight_options: tuple[str, ...] = ()
    ref: str | None = None
    output: str = "-"
    detok: bool = False
    tokenize: str = "13a"
    tgt_lang: str = "fr"


def run_rerank_job(job: RerankJob, progress: ProgressSettings = QUIET) -> str | None:
    """Write the reranked 1-best; returns a BLEU line when a reference is given."""
    import sys

    table = nbest_feature_table(read_nbest(job.nbest))
    raw: dict[str, list[float]] = {}
    if job.weights_file is not None:
        raw.update(read_weights(job.weights_file))
    raw.update(parse_weight_options(job.weight_options))
    weights = expand_weights(raw, table.names) if raw else {TOTAL: 1.0}
    choice = rerank(table, weights)
    surfaces = selected_surfaces(job.nbest, choice, table.n_sentences)
    bleu_cfg = BleuConfig(tokenize=job.tokenize, tgt_lang=job.tgt_lang)
    detok_cfg = BleuConfig(tokenize="13a", tgt_lang=job.tgt_lang)
    lines = [(hypothesis_text(t, detok_cfg) if job.detok else " ".join(t)) + "\n" for t in surfaces]
    if job.output == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        with atomic_write(job.output) as fh:
            fh.writelines(lines)
    if job.ref is None:
        return None
    refs = read_lines(job.ref)
    check_parallel("reference", job.ref, len(refs), table.n_sentences)
    hs = compute_hyp_stats(
        read_nbest(job.nbest, n_sentences=len(refs)), refs, bleu_cfg, progress_settings=progress
    )
    sel = np.maximum(choice, 0)
    sel = np.concatenate([sel, np.zeros(len(refs) - len(sel), dtype=np.int64)])
    return f"{bleu_of_selection(hs, sel)} ({signature(bleu_cfg)})"
