"""The beam search's output against a stored reference made by the search before issue 26's
rewrite: the shipped model, the first 100 sentences of test2016, beams 1, 5 and 12, whole n-best
lists (see tests/make_search_reference.py for how the reference was made).

Scores agree to 5e-5. The products' arithmetic may change in the last bits (oneDNN's GEMM instead
of MKL's moves logits by about 1e-6), so two hypotheses whose scores tie within that tolerance
may swap ranks, or trade places across the n-best cut-off; nothing else may differ."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.fileio import read_lines, sha256_file
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, translate_lines

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "search_reference.json.gz"
MODEL = ROOT / "data" / "models" / "att-rev-1.pt"
SOURCE = ROOT / "data" / "multi30k" / "test2016.en.gz"


TIE = 5e-5
"""Scores closer than this are a tie: float arithmetic may order them either way."""


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    with gzip.open(REFERENCE, "rt", encoding="utf-8") as fh:
        ref: dict[str, Any] = json.load(fh)
    if sha256_file(MODEL) != ref["model_sha256"]:
        pytest.fail("the shipped model changed: regenerate tests/data/search_reference.json.gz")
    return ref


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    torch.set_num_threads(1)
    return Ensemble([load_model(MODEL)])


@pytest.mark.parametrize("beam", [1, 5, 12])
def test_nbest_lists_equal_the_reference(
    beam: int, reference: dict[str, Any], ensemble: Ensemble
) -> None:
    expected = reference["beams"][str(beam)]
    lines = read_lines(SOURCE)[: len(expected)]
    cfg = TranslateConfig(SearchConfig(beam=beam, nbest=beam, batch_size=reference["batch_size"]))
    got = list(translate_lines(ensemble, lines, cfg))
    assert len(got) == len(expected) == 100
    swapped = 0
    for i, (res, exp) in enumerate(zip(got, expected, strict=True)):
        assert len(res.hypotheses) == len(exp), f"sentence {i}"
        by_ids = {tuple(e["ids"]): e for e in exp}
        for j, (h, e) in enumerate(zip(res.hypotheses, exp, strict=True)):
            assert h.score == pytest.approx(e["score"], abs=TIE), f"sentence {i} rank {j}"
            if list(h.ids) == e["ids"]:
                assert list(h.model_scores) == pytest.approx(e["model_scores"], abs=TIE)
                continue
            swapped += 1
            same = by_ids.get(tuple(h.ids))
            if same is not None:  # the same hypothesis at a tied rank
                assert same["score"] == pytest.approx(e["score"], abs=TIE), f"sentence {i}"
            else:  # tied with the last one kept, across the cut-off
                assert h.score == pytest.approx(exp[-1]["score"], abs=TIE), f"sentence {i}"
    assert swapped <= 2, "ties within 5e-5 are rare; more swaps mean a changed search"
