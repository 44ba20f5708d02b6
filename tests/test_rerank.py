"""Linear reranking, weights parsing and scale-aware averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbest_rescore.errors import InputError
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.rerank import (
    expand_weights,
    parse_weight_options,
    read_weights,
    rerank,
    select_best,
    within_list_scale,
)
from nbest_rescore.table import TOTAL, read_table

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"


def brute_best(scores: np.ndarray, offsets: np.ndarray) -> list[int]:
    out = []
    for s in range(len(offsets) - 1):
        seg = list(scores[offsets[s] : offsets[s + 1]])
        out.append(seg.index(max(seg)) if seg else -1)
    return out


def test_select_best_matches_brute_force_with_ties_and_empty_lists() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 6, size=200)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    scores = rng.integers(-3, 3, size=offsets[-1]).astype(float)  # many ties
    assert select_best(scores, offsets).tolist() == brute_best(scores, offsets)


def test_decoder_total_reproduces_moses_one_best_on_real_list() -> None:
    table = read_table(NBEST)
    assert table.names[0] == TOTAL
    assert "LM0" in table.names and "TranslationModel0.3" in table.names
    # Moses writes its lists best first, so reranking by its own total keeps rank 0.
    assert rerank(table, {TOTAL: 1.0}).tolist() == [0] * table.n_sentences


def test_reranking_by_one_feature_picks_its_maximum() -> None:
    groups = list(read_nbest(NBEST))
    table = read_table(NBEST)
    choice = rerank(table, {"LM0": 1.0})
    for g, c in zip(groups, choice, strict=True):
        lm = [h.feature("LM0")[0] for h in g.hyps]
        assert lm[c] == max(lm)


def test_weight_options_and_files(tmp_path: Path) -> None:
    table = read_table(NBEST)
    raw = parse_weight_options(["LM0=0.5", "TranslationModel0=0.1,0.2,0.3,0.4"])
    w = expand_weights(raw, table.names)
    assert w["LM0"] == 0.5 and w["TranslationModel0.2"] == 0.3
    moses = tmp_path / "w.ini"
    moses.write_text("[weight]\nLM0= 0.5\nTranslationModel0= 0.1 0.2 0.3 0.4\n")
    assert read_weights(moses) == raw
    with pytest.raises(InputError, match="matches no feature"):
        expand_weights({"LM9": [1.0]}, table.names)
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_weight_options(["LM0"])
    bad = tmp_path / "bad.ini"
    bad.write_text("LM0= 0.5\nTM0= x\n")
    with pytest.raises(InputError, match=r"bad.ini:2"):
        read_weights(bad)


def test_within_list_scale_ignores_between_list_offsets() -> None:
    rng = np.random.default_rng(1)
    offsets = np.arange(0, 1001, 10)
    x = rng.normal(scale=2.0, size=1000)
    shifted = x + np.repeat(rng.normal(scale=100.0, size=100), 10)
    assert within_list_scale(shifted, offsets) == pytest.approx(within_list_scale(x, offsets))
    assert within_list_scale(x, offsets) == pytest.approx(2.0, rel=0.1)
