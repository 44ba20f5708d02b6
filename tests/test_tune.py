"""MERT: the exact line search against a dense grid, and tuning on a real n-best list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig, bleu_of_selection, compute_hyp_stats
from nbest_rescore.rerank import select_best, weight_vector
from nbest_rescore.table import TOTAL, read_table
from nbest_rescore.tune import MertConfig, corpus_bleu_of, line_search, mert

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"
REF = DATA / "test2016.head30.tok.fr.gz"


def real_list():  # type: ignore[no-untyped-def]
    table = read_table(NBEST)
    hs = compute_hyp_stats(table.sentences(), read_lines(REF), BleuConfig(tokenize="none"))
    return table, hs


def test_line_search_is_exact_against_a_dense_grid() -> None:
    table, hs = real_list()
    x = table.values
    rng = np.random.default_rng(3)
    for _ in range(3):
        w = weight_vector({TOTAL: 1.0}, table.names)
        d = rng.normal(size=x.shape[1])
        gamma, best = line_search(x, hs.stats, table.offsets, w, d)
        # The claimed optimum is achieved at the returned step...
        assert abs(corpus_bleu_of(table, w + gamma * d, hs.stats) - best) < 1e-9
        # ...and no step on a fine grid does better.
        grid = [corpus_bleu_of(table, w + g * d, hs.stats) for g in np.linspace(-3, 3, 301)]
        assert max(grid) <= best + 1e-9


def test_mert_never_ends_below_its_start_and_reports_true_bleu() -> None:
    table, hs = real_list()
    start = {TOTAL: 1.0}
    res = mert(table, hs.stats, start, MertConfig(restarts=2, max_iterations=3))
    one_best = bleu_of_selection(hs, hs.one_best()).score
    assert abs(res.start_bleu - one_best) < 1e-6
    assert res.dev_bleu >= res.start_bleu
    choice = select_best(table.values @ weight_vector(res.weights, table.names), table.offsets)
    assert abs(bleu_of_selection(hs, choice).score - res.dev_bleu) < 1e-6
    # Tuning on the very list it is scored on must find something better than Moses' 1-best.
    assert res.dev_bleu > one_best


def test_subset_holds_each_chosen_sentence_rows_in_order_with_repeats() -> None:
    table, hs = real_list()
    picks = np.array([3, 0, 3, 29, 7])
    sub, rows = table.subset(picks)
    assert sub.n_sentences == len(picks)
    assert list(sub.counts) == [int(table.counts[i]) for i in picks]
    want = np.concatenate([table.values[table.offsets[i] : table.offsets[i + 1]] for i in picks])
    assert np.array_equal(sub.values, want)
    assert np.array_equal(table.values[rows], want)
    # The resample's stats rows line up with its table: its 1-best BLEU is the picked sentences'.
    choice = select_best(sub.column(TOTAL), sub.offsets)
    from nbest_rescore.metrics import corpus_bleu_many

    by_hand = sum(hs.stats[table.offsets[i]] for i in picks)
    assert (
        corpus_bleu_many(hs.stats[rows][sub.rows_of(choice)].sum(axis=0))[0]
        == (corpus_bleu_many(by_hand)[0])
    )


def test_bagged_mert_reports_the_true_bleu_of_its_mean_weights() -> None:
    """The bagged weights are the normalised mean of the resamples' MERT weights; the BLEU it
    reports is what those weights give on the whole list, and the run is repeatable."""
    from nbest_rescore.tune import bagged_mert, tune

    table, hs = real_list()
    cfg = MertConfig(restarts=1, max_iterations=2, bootstrap=3, seed=5)
    res = bagged_mert(table, hs.stats, {TOTAL: 1.0}, cfg)
    w = weight_vector(res.weights, table.names)
    assert abs(np.abs(w).sum() - 1.0) < 1e-9
    assert len(res.history) == 3
    assert abs(corpus_bleu_of(table, w, hs.stats) - res.dev_bleu) < 1e-9
    assert tune(table, hs.stats, {TOTAL: 1.0}, cfg).weights == res.weights
    # One resample: the mean is that resample's MERT, weights for weights.
    one = bagged_mert(table, hs.stats, {TOTAL: 1.0}, MertConfig(restarts=1, bootstrap=1, seed=5))
    sample = np.random.default_rng(5).integers(0, table.n_sentences, table.n_sentences)
    sub, rows = table.subset(sample)
    direct = mert(sub, hs.stats[rows], {TOTAL: 1.0}, MertConfig(restarts=1, seed=6))
    assert one.weights == pytest.approx(direct.weights, abs=1e-12)
    with pytest.raises(InputError, match="--tune-bootstrap"):
        MertConfig(bootstrap=-1)


def test_a_feature_the_start_leaves_out_gets_a_comparable_search_scale() -> None:
    """Directions and restarts move an unweighted feature (length, MBR) as much, within a list,
    as the weighted features move on average; weighted ones keep |w0|."""
    from nbest_rescore.rerank import within_list_scale
    from nbest_rescore.tune import direction_scales

    table, _ = real_list()
    x = table.values
    w0 = np.zeros(x.shape[1])
    w0[table.names.index(TOTAL)] = 2.0
    spread = [within_list_scale(x[:, j], table.offsets) for j in range(x.shape[1])]
    scale = direction_scales(x, table.offsets, w0)
    j_total = table.names.index(TOTAL)
    assert scale[j_total] == 2.0
    for j in range(x.shape[1]):
        if j != j_total:
            assert abs(scale[j] * spread[j] - 2.0 * spread[j_total]) < 1e-9 * spread[j_total]
