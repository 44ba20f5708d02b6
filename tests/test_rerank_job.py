"""The job behind `rescore rerank` (nbest_rescore.rerank_job), called directly on the real Moses
slice: its choices against a brute-force argmax over the parsed hypotheses, its BLEU against
sacrebleu, its weights and its empty lines."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sacrebleu
from sacremoses import MosesDetokenizer

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig
from nbest_rescore.nbest_reader import Hypothesis, read_nbest
from nbest_rescore.rerank_job import RerankJob, job_weights, run_rerank_job
from nbest_rescore.table import read_table


def brute_force_best(path: Path, weights: dict[str, float]) -> list[str]:
    """The highest-scoring hypothesis of each sentence under `weights` (first on ties), scored
    from the parsed `Hypothesis` objects, not from the job's table."""

    def score(h: Hypothesis) -> float:
        total = weights.get("total", 0.0) * h.total
        for f in h.features:
            for i, v in enumerate(f.values):
                name = f.name if len(f.values) == 1 else f"{f.name}.{i}"
                total += weights.get(name, 0.0) * v
        return total

    best = []
    for g in read_nbest(path):
        scores = [score(h) for h in g.hyps]
        best.append(g.hyps[scores.index(max(scores))].surface if g.hyps else "")
    return best


def test_default_is_the_decoders_total_that_is_the_moses_one_best(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "best.tok"
    res = run_rerank_job(
        RerankJob(str(slice_paths["nbest"]), output=str(out), tokenized_output=True)
    )
    moses = [
        line.rstrip()
        for line in read_lines(slice_paths["nbest"].parent / "test2016.head30.moses.1best.gz")
    ]
    assert read_lines(out) == moses == brute_force_best(slice_paths["nbest"], {"total": 1.0})
    assert (res.weights, res.bleu, res.n_sentences, res.n_missing, res.missing_note) == (
        {"total": 1.0}, None, 30, 0, None
    )  # fmt: skip


def test_a_weights_file_and_options_choose_the_brute_force_best(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    rng = random.Random(7)
    tm = [round(rng.uniform(-1, 1), 3) for _ in range(4)]
    wfile = tmp_path / "weights.ini"
    wfile.write_text(
        f"[weight]\nLM0= {rng.uniform(0, 1):.3f}\nTranslationModel0= {' '.join(map(str, tm))}\n"
        "WordPenalty0= 0.5\nDistortion0= 0\n",
        encoding="utf-8",
    )
    job = RerankJob(str(slice_paths["nbest"]), weights_file=wfile,
                    weight_options=("WordPenalty0=-0.25", "total=0.1"),
                    output=str(tmp_path / "out.tok"), tokenized_output=True)  # fmt: skip
    weights = job_weights(job, read_table(slice_paths["nbest"]))
    assert weights["WordPenalty0"] == -0.25 and weights["total"] == 0.1  # options win
    assert [weights[f"TranslationModel0.{i}"] for i in range(4)] == tm  # a group is expanded
    assert "Distortion0" not in weights  # zeros are left out
    res = run_rerank_job(job)
    assert res.weights == weights
    assert read_lines(tmp_path / "out.tok") == brute_force_best(slice_paths["nbest"], weights)


def test_text_output_and_bleu_equal_sacrebleu(slice_paths: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "best.txt"
    job = RerankJob(str(slice_paths["nbest"]), weight_options=("LM0=1",), ref=str(slice_paths["ref"]),
                    output=str(out), bleu=BleuConfig(tgt_lang="fr"))  # fmt: skip
    res = run_rerank_job(job)
    chosen = brute_force_best(slice_paths["nbest"], {"total": 1.0, "LM0": 1.0})
    detok = MosesDetokenizer(lang="fr")
    assert read_lines(out) == [detok.detokenize(s.split()) for s in chosen]
    want = sacrebleu.corpus_bleu(read_lines(out), [read_lines(slice_paths["ref"])])
    assert res.bleu is not None
    assert float(res.bleu.split()[2]) == pytest.approx(want.score, abs=0.01)
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in res.bleu


def test_sentences_without_hypotheses_get_empty_lines(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    lines = [
        line
        for line in read_lines(slice_paths["nbest"])
        if not line.startswith(("0 ||| ", "29 ||| "))
    ]
    gappy = tmp_path / "gappy.nbest"
    gappy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.tok"
    job = RerankJob(str(gappy), ref=str(slice_paths["ref"]), output=str(out), tokenized_output=True)
    res = run_rerank_job(job)
    best = brute_force_best(slice_paths["nbest"], {"total": 1.0})
    assert read_lines(out) == ["", *best[1:29], ""]
    assert (res.n_sentences, res.n_missing) == (30, 2)
    assert res.missing_note is not None and "(ids 0, 29)" in res.missing_note
    # Without the reference the job cannot know sentence 29 exists.
    assert run_rerank_job(RerankJob(str(gappy), output=str(out))).n_sentences == 29


def test_unknown_weights_and_bad_inputs_are_refused_before_writing(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    for job, problem in [
        (RerankJob(str(slice_paths["nbest"]), weight_options=("LSTM0=1",), output=str(out)), "matches no feature"),
        (RerankJob(str(slice_paths["nbest"]), weight_options=("TranslationModel0=1,2",), output=str(out)), "has 2 value"),
        (RerankJob(str(slice_paths["nbest"]), ref=str(slice_paths["nbest"]), output=str(slice_paths["nbest"])), "--output"),
    ]:  # fmt: skip
        with pytest.raises(InputError, match=problem):
            run_rerank_job(job)
    assert not out.exists()
