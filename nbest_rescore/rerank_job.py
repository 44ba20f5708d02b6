"""The job behind `rescore rerank`: the 1-best of every list under a linear model of its features."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path

from nbest_rescore.bleu_report import check_parallel
from nbest_rescore.fileio import atomic_write, read_lines, spooled_inputs
from nbest_rescore.metrics import (
    BleuConfig,
    compute_hyp_stats,
    detokenize_moses,
    score_from_stats,
    signature,
)
from nbest_rescore.output_guard import check_outputs
from nbest_rescore.outputs import missing_note
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.rerank import (
    Weights,
    expand_weights,
    parse_weight_options,
    read_weights_for_list,
    rerank,
)
from nbest_rescore.table import TOTAL, NBestTable, read_table


@dataclass(frozen=True)
class RerankJob:
    """Settings of `rescore rerank`.

    The model is the `weights_file` (absent features weigh 0), else the decoder's total alone
    (`total=1`); each `weight_options` entry then sets one weight on top of it.
    """

    nbest: str
    _: KW_ONLY
    weights_file: Path | None = None
    weight_options: tuple[str, ...] = ()
    ref: str | None = None
    output: str = "-"
    tokenized_output: bool = False
    bleu: BleuConfig = BleuConfig()


@dataclass(frozen=True)
class RerankResult:
    weights: Weights
    """The weights used, by feature column (zeros left out)."""
    bleu: str | None
    """BLEU of the selection with its signature, when a reference was given."""
    n_sentences: int = 0
    n_missing: int = 0
    """Sentences without hypotheses (an empty output line each)."""
    missing_note: str | None = None


def job_weights(job: RerankJob, table: NBestTable) -> Weights:
    """The weights file (or `total=1`), then each `--weight` option set on top."""
    weights: Weights = {TOTAL: 1.0}
    if job.weights_file is not None:
        raw = read_weights_for_list(job.weights_file, table.labeled)
        weights = expand_weights(raw, table.names, str(job.weights_file))
    weights.update(
        expand_weights(parse_weight_options(job.weight_options), table.names, "--weight")
    )
    return {n: w for n, w in weights.items() if w != 0.0}


def run_rerank_job(job: RerankJob, progress: ProgressSettings = QUIET) -> RerankResult:
    """Write the reranked 1-best (detokenized text unless `tokenized_output`); `-` inputs are
    read from stdin (one of them)."""
    weights_file = None if job.weights_file is None else str(job.weights_file)
    check_outputs(
        {"--nbest": job.nbest, "--weights": weights_file, "--ref": job.ref},
        {"--output": job.output},
    )
    with spooled_inputs(nbest=job.nbest, ref=job.ref, weights=weights_file) as p:
        return _rerank(
            replace(
                job,
                nbest=str(p["nbest"]),
                ref=p["ref"],
                weights_file=None if p["weights"] is None else Path(p["weights"]),
            ),
            progress,
        )


def _rerank(job: RerankJob, progress: ProgressSettings) -> RerankResult:
    table = read_table(job.nbest)
    refs = None
    if job.ref is not None:
        refs = read_lines(job.ref)
        check_parallel("reference", job.ref, len(refs), table.n_sentences, job.nbest)
        table = table.padded(len(refs))
    weights = job_weights(job, table)
    choice = rerank(table, weights)
    surfaces = table.chosen_surfaces(choice)
    lang = job.bleu.tgt_lang
    lines = [
        (s if job.tokenized_output else detokenize_moses(s.split(), lang)) + "\n" for s in surfaces
    ]
    with atomic_write(job.output) as fh:
        fh.writelines(lines)
    missing = (table.n_sentences, int(table.missing.sum()), missing_note(table.missing))
    if refs is None:
        return RerankResult(weights, None, *missing)
    hs = compute_hyp_stats(table.sentences(), refs, job.bleu, progress_settings=progress)
    score = score_from_stats(hs.totals(choice))
    return RerankResult(weights, f"{score} ({signature(job.bleu)})", *missing)
