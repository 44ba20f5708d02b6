"""The job behind `rescore oracle`: how good could a reranker of this n-best list be (no model)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path
from typing import Any

from nbest_rescore.bleu_report import (
    add_bleu_section,
    bleu_section,
    check_parallel,
    model_free_selections,
    read_source_lengths,
)
from nbest_rescore.fileio import read_lines, spooled_inputs
from nbest_rescore.metrics import BleuConfig, compute_hyp_stats, signature
from nbest_rescore.output_guard import OutDir, check_outputs
from nbest_rescore.outputs import (
    check_out_dir,
    missing_note,
    selection_files,
    write_scores_table,
    write_selection,
)
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.report import REPORT_FILES, Report, provenance, write_report
from nbest_rescore.table import read_table
from nbest_rescore.validate import option_at_least


@dataclass(frozen=True)
class OracleJob:
    """Settings of `rescore oracle`."""

    nbest: str
    ref: str
    out: Path
    _: KW_ONLY
    src: str | None = None
    bleu: BleuConfig = BleuConfig()
    max_hyps: int | None = None
    src_lang: str = "en"
    workers: int | None = None

    def __post_init__(self) -> None:
        option_at_least("--max-hyps", self.max_hyps, 1)


def run_oracle_job(job: OracleJob, progress: ProgressSettings = QUIET) -> dict[str, Any]:
    """Compute and write the oracle analysis report; returns `summary.json`'s content (its
    `warnings` are for the console too). One of the inputs may be `-` (stdin)."""
    check_outputs(
        {"--nbest": job.nbest, "--ref": job.ref, "--src": job.src},
        dirs=[
            OutDir(
                "--out",
                job.out,
                (*REPORT_FILES, *selection_files("best"), "scores.parquet", "scores.csv"),
            )
        ],
    )
    check_out_dir(job.out)
    with spooled_inputs(nbest=job.nbest, ref=job.ref, src=job.src) as p:
        return _oracle(
            replace(job, nbest=str(p["nbest"]), ref=str(p["ref"]), src=p["src"]), progress
        )


def _oracle(job: OracleJob, progress: ProgressSettings) -> dict[str, Any]:
    refs = read_lines(job.ref)
    table = read_table(job.nbest, max_hyps=job.max_hyps)
    check_parallel("reference", job.ref, len(refs), table.n_sentences, job.nbest)
    table = table.padded(len(refs))
    hs = compute_hyp_stats(
        table.sentences(), refs, job.bleu, progress_settings=progress, workers=job.workers
    )
    selections = model_free_selections(hs)
    section = bleu_section(hs, selections, read_source_lengths(job.src, len(refs), job.src_lang))
    summary: dict[str, Any] = {
        "n_sentences": hs.n_sentences,
        "n_hypotheses": hs.n_hypotheses,
        "n_missing": int(hs.missing.sum()),
        "signature": signature(job.bleu),
        "warnings": [w for w in [missing_note(table.missing)] if w],
    }
    report = Report(
        title=f"Oracle analysis of {job.nbest}",
        summary=summary,
        provenance=provenance(
            {"nbest": job.nbest, "ref": job.ref, "src": job.src},
            signature=signature(job.bleu),
            max_hyps=job.max_hyps,
        ),
        notes=[
            f"{hs.n_sentences} sentences, {hs.n_hypotheses} hypotheses, "
            f"{int(hs.missing.sum())} sentences without hypotheses (empty output lines).",
            *summary["warnings"],
            f"BLEU signature: {signature(job.bleu)}",
            "best.tok.txt and best.detok.txt hold the oracle's choices (the `--out` layout of "
            "`rescore run`); scores.parquet every hypothesis' features and which system chose it.",
        ],
    )
    add_bleu_section(
        report, section, ["baseline", "oracle", "oracle_sentence"], "Rank of the oracle's choices"
    )
    write_report(report, job.out)
    write_selection(job.out, "best", table.chosen_surfaces(selections["oracle"]), job.bleu)
    write_scores_table(job.out / "scores", table, selections)
    return report.summary
