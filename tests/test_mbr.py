"""The MBR0 consensus feature against a direct, per-pair computation of BLEU+1 and its
expectation, on a real Moses n-best slice and on generated lists."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbest_rescore.mbr import MbrConfig, mbr_feature, ngrams
from nbest_rescore.table import TOTAL, NBestTable, Surfaces, read_table
from nbest_rescore.validate import OptionError

DATA = Path(__file__).resolve().parent / "data"
SLICE = DATA / "test2016.head30.top20.nbest.gz"


def bleu_plus_one(hyp: list[str], ref: list[str]) -> float:
    """Lin & Och (2004) sentence BLEU, written out pair by pair."""
    if not hyp:
        return 0.0
    log_p = 0.0
    for n in range(1, 5):
        h = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        match = sum(min(c, r[g]) for g, c in h.items())
        total = max(len(hyp) - n + 1, 0)
        add = 0 if n == 1 else 1
        if match + add == 0:
            return 0.0
        log_p += math.log((match + add) / (total + add))
    return math.exp(log_p / 4 + min(0.0, 1 - len(ref) / len(hyp)))


def direct_mbr(rows: list[str], total: list[float], cfg: MbrConfig) -> list[float]:
    order = sorted(range(len(rows)), key=lambda i: (-total[i], i))[: cfg.top_k]
    z = [cfg.scale * total[j] for j in order]
    w = [math.exp(x - max(z)) for x in z]
    p = [x / sum(w) for x in w]
    return [
        sum(pj * bleu_plus_one(h.split(), rows[j].split()) for pj, j in zip(p, order, strict=True))
        for h in rows
    ]


def table_of(lists: list[list[str]]) -> NBestTable:
    rows = [h for hyps in lists for h in hyps]
    offsets = np.concatenate(([0], np.cumsum([len(x) for x in lists]))).astype(np.int64)
    return NBestTable((TOTAL,), np.zeros((len(rows), 1)), offsets, surfaces=Surfaces.of(rows))


@pytest.mark.parametrize("cfg", [MbrConfig(top_k=5, scale=1.0), MbrConfig(top_k=20, scale=0.3)])
def test_the_real_slice_matches_the_direct_computation(cfg: MbrConfig) -> None:
    table = read_table(SLICE)
    total = table.column(TOTAL)
    got = mbr_feature(table, total, cfg)
    for s in range(table.n_sentences):
        lo, hi = int(table.offsets[s]), int(table.offsets[s + 1])
        want = direct_mbr(table.surfaces.rows(lo, hi), total[lo:hi].tolist(), cfg)
        np.testing.assert_allclose(got[lo:hi], want, rtol=1e-5, atol=1e-9)
    # A consensus feature: the decoder's 1-best usually agrees with its list more than its last.
    first, last = got[table.offsets[:-1]], got[table.offsets[1:] - 1]
    assert (first > last).mean() > 0.7


words = st.sampled_from(["a", "b", "c", "dd", "é", "ff"])
hyp_text = st.lists(words, min_size=0, max_size=9).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(hyp_text, min_size=1, max_size=7), min_size=1, max_size=4),
    st.integers(1, 8),
    st.floats(0.0, 3.0),
)
def test_generated_lists_match_the_direct_computation(
    lists: list[list[str]], top_k: int, scale: float
) -> None:
    table = table_of(lists)
    total = np.array([-float(i % 5) * 0.7 for i in range(len(table.values))])
    cfg = MbrConfig(top_k=top_k, scale=scale)
    got = mbr_feature(table, total, cfg)
    for s, hyps in enumerate(lists):
        lo = int(table.offsets[s])
        want = direct_mbr(hyps, total[lo : lo + len(hyps)].tolist(), cfg)
        np.testing.assert_allclose(got[lo : lo + len(hyps)], want, rtol=1e-5, atol=1e-9)


def test_repeated_ngrams_are_clipped_by_occurrence() -> None:
    g = ngrams(Surfaces.of(["a a a b", "a b a"]))
    assert g.lengths.tolist() == [4, 3]
    keys = [set(g.keys[0][g.rows[0] == r].tolist()) for r in (0, 1)]
    assert [len(k) for k in keys] == [4, 3]  # every occurrence its own key
    assert len(keys[0] & keys[1]) == 3  # "a" min(3, 2) times and "b" once: BLEU's clipping
    bigrams = [set(g.keys[1][g.rows[1] == r].tolist()) for r in (0, 1)]
    assert len(bigrams[0] & bigrams[1]) == 1  # "a b"; "b a" is only in the second row


def test_settings_are_checked() -> None:
    with pytest.raises(OptionError, match="--mbr-top-k"):
        MbrConfig(top_k=0)
    with pytest.raises(OptionError, match="--mbr-scale"):
        MbrConfig(scale=-1.0)
