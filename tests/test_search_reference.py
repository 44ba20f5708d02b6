"""The beam search's output against a stored reference made by the search before issue 26's
rewrite: the shipped model, the first 100 sentences of test2016, beams 1, 5 and 12, whole n-best
lists (see tests/make_search_reference.py for how the reference was made)."""

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
    for i, (res, exp) in enumerate(zip(got, expected, strict=True)):
        assert [list(h.ids) for h in res.hypotheses] == [e["ids"] for e in exp], f"sentence {i}"
        for h, e in zip(res.hypotheses, exp, strict=True):
            assert h.score == pytest.approx(e["score"], abs=5e-5), f"sentence {i}"
            assert list(h.model_scores) == pytest.approx(e["model_scores"], abs=5e-5)
