"""Oracle analyses on the real test2016 slice, checked against sacrebleu and brute force."""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics.bleu import BLEU

from nbest_rescore import oracle
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    bleu_of_selection,
    compute_hyp_stats,
    corpus_bleu_from_stats,
    hypothesis_text,
)
from nbest_rescore.nbest_reader import NBestGroup, read_nbest

DATA = Path(__file__).parent / "data"
GROUPS = list(read_nbest(DATA / "test2016.head30.top20.nbest.gz"))


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
        return [line.rstrip("\n") for line in fh]


REFS = {
    "none": lines(DATA / "test2016.head30.tok.fr.gz"),
    "13a": lines(DATA / "test2016.head30.fr.gz"),
}


@pytest.fixture(scope="module", params=["none", "13a"])
def hs(request: pytest.FixtureRequest) -> HypStats:
    return compute_hyp_stats(GROUPS, REFS[request.param], BleuConfig(tokenize=request.param))


def bleu(hs: HypStats, sel: np.ndarray) -> float:
    return float(bleu_of_selection(hs, sel).score)


def test_oracle_ordering(hs: HypStats) -> None:
    one_best = bleu(hs, hs.one_best())
    sent = bleu(hs, oracle.sentence_oracle(hs))
    corp = bleu(hs, oracle.corpus_oracle(hs))
    anti = bleu(hs, oracle.anti_oracle(hs))
    assert corp >= sent >= one_best >= anti
    assert corp > one_best + 5  # 20 hypotheses per sentence leave a lot of room


def test_sentence_oracle_is_brute_force_argmax(hs: HypStats) -> None:
    """Best sacrebleu.sentence_bleu per sentence, ties to the lowest rank, optionally top-k."""
    tok, refs = hs.config.tokenize, REFS[hs.config.tokenize]
    for k in (None, 3):
        want = []
        for g, ref in zip(GROUPS, refs, strict=True):
            hyps = g.hyps if k is None else g.hyps[:k]
            scores = [
                sacrebleu.sentence_bleu(hypothesis_text(h.tokens, hs.config), [ref], tokenize=tok)
                for h in hyps
            ]
            want.append(max(range(len(scores)), key=lambda j: (scores[j].score, -j)))
        assert oracle.sentence_oracle(hs, k).tolist() == want


def test_corpus_oracle_is_a_local_optimum(hs: HypStats) -> None:
    """No single-sentence swap raises corpus BLEU (each swap scored by sacrebleu)."""
    sel = oracle.corpus_oracle(hs)
    best = bleu(hs, sel)
    for i in range(hs.n_sentences):
        for j in range(hs.counts[i]):
            trial = sel.copy()
            trial[i] = j
            assert corpus_bleu_from_stats(hs.totals(trial)) <= best + 1e-9


def test_corpus_oracle_top_k_and_init(hs: HypStats) -> None:
    sel = oracle.corpus_oracle(hs, k=3)
    assert sel.max() < 3
    assert bleu(hs, sel) >= bleu(hs, oracle.sentence_oracle(hs, 3))
    start = hs.counts - 1
    assert bleu(hs, oracle.corpus_oracle(hs, init=[start])) >= bleu(hs, start)
    with pytest.raises(ValueError):
        oracle.corpus_oracle(hs, k=3, init=[start])  # does not fit the top-3 limit
    with pytest.raises(ValueError):
        oracle.corpus_oracle(hs, k=0)


def test_oracle_at_k(hs: HypStats) -> None:
    ks = (1, 2, 5, 10, 20, 1000)
    at_k = oracle.oracle_at_k(hs, ks)
    assert list(at_k) == list(ks)
    assert at_k[1] == bleu(hs, hs.one_best())
    values = [at_k[k] for k in ks]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert at_k[1000] == at_k[20]  # the slice has at most 20 hypotheses per sentence
    sent = oracle.sentence_oracle_at_k(hs, ks)
    assert all(at_k[k] >= sent[k] - 1e-9 for k in ks)


def test_anti_oracle_is_below_one_best(hs: HypStats) -> None:
    anti = oracle.anti_oracle(hs)
    assert bleu(hs, anti) <= bleu(hs, hs.one_best())
    assert bleu(hs, anti) <= bleu(hs, hs.counts - 1)


def test_rank_histogram() -> None:
    sel = np.array([0, 0, 1, 4, 5, 9, 10, 49, 99, 100, 499, 999, 1500])
    hist = oracle.rank_histogram(sel)
    assert hist == {
        "1": 2,
        "2-5": 2,
        "6-10": 2,
        "11-50": 2,
        "51-100": 1,
        "101-500": 2,
        "501-1000": 1,
        ">1000": 1,
    }
    assert list(oracle.rank_histogram(sel[:3])) == list(hist)  # same keys for every selection
    assert oracle.rank_histogram(sel[:3], bins=(1, 2)) == {"1": 2, "2": 1, ">2": 0}
    missing = np.zeros(len(sel), dtype=bool)
    missing[0] = True
    assert oracle.rank_histogram(sel, missing=missing)["1"] == 1
    with pytest.raises(ValueError):
        oracle.rank_histogram(sel, bins=(5, 2))


def test_bleu_by_length_equals_sacrebleu_on_each_bucket(hs: HypStats) -> None:
    src_len = np.array([len(s.split()) for s in lines(DATA / "test2016.head30.tok.en.gz")])
    sel = oracle.sentence_oracle(hs)
    rows = oracle.bleu_by_length(hs, sel, src_len, buckets=(9, 12, 15))
    assert [r[0] for r in rows] == ["0-9", "10-12", "13-15", "16+"]
    assert sum(r[1] for r in rows) == hs.n_sentences
    texts = [hypothesis_text(g.hyps[j].tokens, hs.config) for g, j in zip(GROUPS, sel, strict=True)]
    refs = REFS[hs.config.tokenize]
    edges = [0, 9, 12, 15, 10**9]
    for (_, n, score), lo, hi in zip(rows, edges, edges[1:], strict=False):
        idx = [i for i, n_src in enumerate(src_len) if lo < n_src <= hi or (lo == 0 and n_src == 0)]
        assert n == len(idx)
        if n == 0:
            assert score is None
            continue
        metric = BLEU(tokenize=hs.config.tokenize)
        want = metric.corpus_score([texts[i] for i in idx], [[refs[i] for i in idx]]).score
        assert score is not None and math.isclose(score, want, abs_tol=1e-9)
    default = oracle.bleu_by_length(hs, sel, src_len)
    assert [r[0] for r in default] == ["0-8", "9-10", "11-12", "13-15", "16-20", "21+"]
    with pytest.raises(ValueError):
        oracle.bleu_by_length(hs, sel, src_len[:5])


def test_missing_sentences_keep_their_empty_row() -> None:
    groups = [g if g.sent_id != 2 else NBestGroup(sent_id=2, hyps=()) for g in GROUPS[:6]]
    hs = compute_hyp_stats(groups, REFS["none"][:6], BleuConfig(tokenize="none"))
    for sel in (oracle.corpus_oracle(hs), oracle.sentence_oracle(hs), oracle.anti_oracle(hs)):
        assert sel[2] == 0
    assert oracle.oracle_at_k(hs, (1, 5))[1] == bleu(hs, hs.one_best())


def test_row_pieces_give_the_whole_list_result(
    hs: HypStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sentence BLEU and the oracle's linearised step, computed a piece of rows at a time (as on
    lists of millions of hypotheses), do not depend on the piece size."""
    from nbest_rescore import metrics

    whole = metrics.sentence_bleu_many(hs.stats)
    monkeypatch.setattr(metrics, "_ROWS_AT_ONCE", 7)
    assert metrics.sentence_bleu_many(hs.stats).tobytes() == whole.tobytes()
    vector = np.linspace(-1.0, 1.0, hs.stats.shape[1])
    pieces = oracle._rows_dot(hs.stats, vector, step=5)
    assert pieces.tobytes() == oracle._rows_dot(hs.stats, vector).tobytes()
    np.testing.assert_allclose(pieces, hs.stats @ vector, rtol=1e-12, atol=1e-9)
    assert oracle._rows_dot(hs.stats[:0], vector).shape == (0,)


def test_per_sentence_argmax_in_pieces_equals_whole(
    hs: HypStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sentence oracle and anti-oracle, taken a few sentences at a time, pick the same ranks
    as over the whole list at once (each piece holds whole sentences)."""
    whole = (oracle.sentence_oracle(hs), oracle.sentence_oracle(hs, k=3), oracle.anti_oracle(hs))
    monkeypatch.setattr(oracle, "_ROWS_AT_ONCE", 3)
    assert len(oracle._sentence_pieces(hs.offsets, 3)) > 1
    pieces = (oracle.sentence_oracle(hs), oracle.sentence_oracle(hs, k=3), oracle.anti_oracle(hs))
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_array_equal(a, b)
