"""The job behind `rescore oracle` (nbest_rescore.oracle_job), called directly on the real Moses
slice: its choices come from each sentence's list, its BLEU is sacrebleu's, and a list cut to
one hypothesis has the 1-best as its oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu
from sacremoses import MosesDetokenizer

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.oracle_job import OracleJob, run_oracle_job
from nbest_rescore.validate import OptionError


def bleu(hyps: list[str], refs: list[str]) -> float:
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_oracle_choices_are_hypotheses_and_its_bleu_is_sacrebleus(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    summary = run_oracle_job(OracleJob(str(slice_paths["nbest"]), str(slice_paths["ref"]), out))
    assert (summary["n_sentences"], summary["n_hypotheses"], summary["n_missing"]) == (30, 591, 0)
    assert summary["warnings"] == []
    lists = [{h.surface for h in g.hyps} for g in read_nbest(slice_paths["nbest"])]
    chosen = read_lines(out / "best.tok.txt")
    assert len(chosen) == 30 and all(c in hyps for c, hyps in zip(chosen, lists, strict=True))
    detok = MosesDetokenizer(lang="fr")
    assert read_lines(out / "best.detok.txt") == [detok.detokenize(c.split()) for c in chosen]
    refs = read_lines(slice_paths["ref"])
    systems = summary["systems"]
    assert systems["oracle"]["bleu"] == pytest.approx(
        bleu(read_lines(out / "best.detok.txt"), refs), abs=1e-4
    )
    moses = read_lines(slice_paths["nbest"].parent / "test2016.head30.moses.1best.gz")
    baseline = bleu([detok.detokenize(m.split()) for m in moses], refs)
    assert systems["baseline"]["bleu"] == pytest.approx(baseline, abs=1e-4)
    assert systems["oracle"]["bleu"] > baseline + 5  # 20 hypotheses leave a lot of room


def test_the_oracle_of_one_hypothesis_is_the_one_best_and_gaps_stay_empty(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    """Cut to its top hypothesis, every list's oracle is the Moses 1-best; a sentence without
    hypotheses is warned about and gets an empty line."""
    lines = [line for line in read_lines(slice_paths["nbest"]) if not line.startswith("5 ||| ")]
    gappy = tmp_path / "gappy.nbest"
    gappy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "top1"
    summary = run_oracle_job(OracleJob(str(gappy), str(slice_paths["ref"]), out, max_hyps=1))
    moses = [
        m.rstrip()
        for m in read_lines(slice_paths["nbest"].parent / "test2016.head30.moses.1best.gz")
    ]
    assert read_lines(out / "best.tok.txt") == [*moses[:5], "", *moses[6:]]
    assert (summary["n_sentences"], summary["n_hypotheses"], summary["n_missing"]) == (30, 29, 1)
    assert summary["warnings"] == [
        "1 sentence(s) without hypotheses (ids 5): their output lines are empty"
    ]
    systems = summary["systems"]
    assert (
        systems["oracle"]["bleu"] == systems["baseline"]["bleu"] == systems["anti_oracle"]["bleu"]
    )


def test_bad_settings_are_refused_before_any_work(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(OptionError, match="--max-hyps must be >= 1"):
        OracleJob(str(slice_paths["nbest"]), str(slice_paths["ref"]), tmp_path, max_hyps=0)
    afile = tmp_path / "taken"
    afile.write_text("x")
    with pytest.raises(InputError, match="--out must name a directory"):
        run_oracle_job(OracleJob(str(slice_paths["nbest"]), str(slice_paths["ref"]), afile))
    assert afile.read_text() == "x"
