"""`--int8`: dynamic int8 quantization of the shipped model, checked on real test2016 sentences
against the fp32 model (translation and teacher-forced scores), and its CPU-only rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nbest_rescore.checkpoint import ModelBundle, load_model
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.quantize import INT8_SUFFIX, quantize_int8
from nbest_rescore.scoring import ScoringConfig, score_hypotheses
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, TranslateJob, translate_lines

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "data" / "models" / "att-rev-1.pt"
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def bundles() -> tuple[ModelBundle, ModelBundle]:
    torch.set_num_threads(1)
    fp32 = load_model(MODEL)
    return fp32, quantize_int8(fp32)


def test_int8_bundle_is_a_quantized_copy(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    fp32, int8 = bundles
    assert type(fp32.model.decoder) is torch.nn.LSTM  # the input is left as it was
    assert type(int8.model.decoder) is not torch.nn.LSTM
    assert int8.sha256 == fp32.sha256 + INT8_SUFFIX  # never shares cached scores with fp32


def test_int8_scores_stay_close_to_fp32_on_the_real_nbest_slice(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    sources = read_lines(DATA / "test2016.head30.en.gz")[:10]
    hyps, owner = [], []
    for group in read_nbest(DATA / "test2016.head30.top20.nbest.gz", n_sentences=30):
        if group.sent_id < 10:
            hyps += [h.tokens for h in group.hyps]
            owner += [group.sent_id] * len(group.hyps)
    fp32, int8 = (
        score_hypotheses(b, sources, hyps, owner, ScoringConfig(int8=b is bundles[1]), escaped=True)
        for b in bundles
    )
    diff = np.abs(int8.logprob - fp32.logprob)
    assert diff.max() > 0  # int8 really computes differently
    assert np.median(diff / fp32.n_tokens) < 0.05  # nats per token
    # The ranking within each list barely moves: the best hypothesis mostly stays the best.
    same = sum(
        int(
            np.argmax(fp32.logprob[np.array(owner) == s])
            == np.argmax(int8.logprob[np.array(owner) == s])
        )
        for s in range(10)
    )
    assert same >= 7


def test_int8_translates_like_fp32(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    lines = read_lines(DATA / "test2016.head30.en.gz")
    cfg = TranslateConfig(SearchConfig(beam=5))
    fp32, int8 = (list(translate_lines(Ensemble([b]), lines, cfg)) for b in bundles)
    same = sum(a.text == b.text for a, b in zip(fp32, int8, strict=True))
    assert same >= 20, f"{same}/30 identical translations"
    assert all(r.text for r in int8)


def test_int8_is_cpu_only() -> None:
    with pytest.raises(InputError, match="CPU only"):
        TranslateJob(device="cuda", int8=True)
    with pytest.raises(InputError, match="CPU only"):
        ScoringConfig(device="cuda", int8=True)
    assert "int8" in ScoringConfig(int8=True).numeric_key()
    assert "int8" not in ScoringConfig().numeric_key()
