"""Oracle analyses of n-best lists: pure functions over `HypStats` (no I/O).

A *selection* is an int array with one 0-based rank per sentence (0 = the decoder's 1-best).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from nbest_rescore.metrics import (
    MAX_ORDER,
    STATS_WIDTH,
    HypStats,
    IntArray,
    bleu_of_selection,
    corpus_bleu_from_stats,
    corpus_bleu_many,
    sentence_bleu_many,
)

DEFAULT_KS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DEFAULT_RANK_BINS: tuple[int, ...] = (1, 5, 10, 50, 100, 500, 1000)
"""Upper edges (1-based ranks, inclusive) of the rank histogram: 1, 2-5, 6-10, ..., 501-1000."""
DEFAULT_LENGTH_EDGES: tuple[int, ...] = (8, 10, 12, 15, 20)
"""Upper edges (source tokens, inclusive) of the length buckets: 0-8, 9-10, ..., 16-20, 21+.

Chosen for Multi30k (test2016 source: median 12 tokens, 5-33), so no bucket is nearly empty.
"""

_EPS = 1e-9  # a swap must raise corpus BLEU by more than this (BLEU points) to count


def _limit(hs: HypStats, k: int | None) -> IntArray:
    """Number of candidates per sentence when restricted to the top `k` (all when None)."""
    counts = hs.counts
    if k is None:
        return counts
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.minimum(counts, k)


_ROWS_AT_ONCE = 1 << 18
"""Rows handled together by the per-sentence arg-max and `_rows_dot` (their temporaries are tens
of bytes a row)."""


def _sentence_pieces(offsets: IntArray, rows: int) -> list[tuple[int, int]]:
    """Consecutive sentence ranges [s0, s1) of about `rows` rows each (whole sentences)."""
    cuts = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), rows), side="right") - 1
    bounds = np.unique(np.concatenate([cuts, [len(offsets) - 1]])).tolist()
    return list(itertools.pairwise(bounds))


def _best_per_sentence(hs: HypStats, values: np.ndarray, k: int | None, sign: float) -> IntArray:
    """Per sentence, the rank of the row with the highest ``sign * value`` (ties: lowest rank);
    a piece of sentences at a time, so memory does not grow with the list."""
    limit = _limit(hs, k)
    out = np.empty(hs.n_sentences, dtype=np.int64)
    for s0, s1 in _sentence_pieces(hs.offsets, _ROWS_AT_ONCE):
        lo = int(hs.offsets[s0])
        starts = hs.offsets[s0:s1] - lo
        counts = np.diff(hs.offsets[s0 : s1 + 1])
        ranks = np.arange(int(hs.offsets[s1]) - lo, dtype=np.int64) - np.repeat(starts, counts)
        keep = ranks < np.repeat(limit[s0:s1], counts)
        v = np.where(keep, sign * values[lo : int(hs.offsets[s1])], -np.inf)
        best = np.maximum.reduceat(v, starts)
        is_best = keep & (v == np.repeat(best, counts))
        out[s0:s1] = np.minimum.reduceat(np.where(is_best, ranks, np.iinfo(np.int64).max), starts)
    return out


def sentence_bleu_all(hs: HypStats) -> np.ndarray:
    """Smoothed sentence BLEU (sacrebleu.sentence_bleu defaults) of every row of `hs`."""
    return sentence_bleu_many(hs.stats)


def sentence_oracle(hs: HypStats, k: int | None = None) -> IntArray:
    """Per sentence the hypothesis with the best smoothed sentence BLEU (ties: lowest rank)."""
    return _best_per_sentence(hs, sentence_bleu_all(hs), k, 1.0)


def _climb(
    hs: HypStats, selection: IntArray, limit: IntArray, sign: float, max_passes: int
) -> IntArray:
    """Greedy coordinate ascent of ``sign * corpus BLEU``: sweep the sentences, move each one to
    its best candidate given all the others, and repeat until a whole pass changes nothing."""
    sel = selection.copy()
    stats = hs.stats
    starts = hs.offsets[:-1]
    total = stats[starts + sel].sum(axis=0)
    current = sign * float(corpus_bleu_many(total)[0])
    movable = np.flatnonzero(limit > 1).tolist()
    for _ in range(max_passes):
        changed = False
        for i in movable:
            lo = int(starts[i])
            cand = stats[lo : lo + int(limit[i])]
            base = total - stats[lo + int(sel[i])]
            scores = sign * corpus_bleu_many(cand + base)
            j = int(np.argmax(scores))
            if scores[j] > current + _EPS:
                sel[i] = j
                total = base + cand[j]
                current = float(scores[j])
                changed = True
        if not changed:
            break
    return sel


def _log_bleu_gradient(total: IntArray) -> np.ndarray:
    """Gradient of log corpus BLEU (unsmoothed) with respect to a statistics row, at `total`."""
    t = np.maximum(np.asarray(total, dtype=np.float64), 1.0)
    grad = np.zeros(STATS_WIDTH)
    grad[2 : 2 + MAX_ORDER] = 1.0 / (MAX_ORDER * t[2 : 2 + MAX_ORDER])
    grad[2 + MAX_ORDER :] = -1.0 / (MAX_ORDER * t[2 + MAX_ORDER :])
    if total[0] < total[1]:  # brevity penalty active: log BP = 1 - ref_len / hyp_len
        grad[0] = t[1] / t[0] ** 2
    return grad


def _rows_dot(stats: IntArray, vector: np.ndarray, step: int = _ROWS_AT_ONCE) -> np.ndarray:
    """`stats @ vector`, a piece of rows at a time (numpy would first copy all of `stats` to
    float64: 80 bytes a hypothesis), summed column by column in a fixed order, so the result does
    not depend on the piece size."""
    out = np.empty(len(stats), dtype=np.float64)
    for lo in range(0, len(stats), step):
        piece = stats[lo : lo + step]
        acc = np.zeros(len(piece), dtype=np.float64)
        for j, w in enumerate(np.asarray(vector, dtype=np.float64).tolist()):
            acc += piece[:, j] * w
        out[lo : lo + step] = acc
    return out


def _check_init(hs: HypStats, init: IntArray, limit: IntArray) -> IntArray:
    sel = np.asarray(init, dtype=np.int64)
    if sel.shape != (hs.n_sentences,) or np.any(sel < 0) or np.any(sel >= limit):
        raise ValueError("initial selection does not fit the n-best list (or the top-k limit)")
    return sel


def _score(hs: HypStats, selection: IntArray) -> float:
    return float(bleu_of_selection(hs, selection).score)


def corpus_oracle(
    hs: HypStats,
    k: int | None = None,
    *,
    max_passes: int = 50,
    max_restarts: int = 5,
    init: Iterable[IntArray] = (),
) -> IntArray:
    """Selection maximising corpus BLEU (greedy hill-climbing on summed statistics).

    Starts from the best (by corpus BLEU) of the 1-best, the sentence-level oracle and any `init`
    selections, then sweeps the sentences: each moves to whichever of its (top-`k`) hypotheses
    raises corpus BLEU most given all the others, all candidates scored at once with numpy; passes
    repeat until none changes anything (or `max_passes`). Then up to `max_restarts` times, it
    jumps to the per-sentence maximum of the linearised log-BLEU around the current totals and
    climbs again, kept only if better. Never below its starting points.
    """
    limit = _limit(hs, k)
    starts = [hs.one_best(), sentence_oracle(hs, k)] + [_check_init(hs, s, limit) for s in init]
    best = _climb(hs, max(starts, key=lambda s: _score(hs, s)), limit, 1.0, max_passes)
    best_score = _score(hs, best)
    # Escape a local optimum by a linearised step: maximise the first-order approximation of log
    # BLEU around the current totals for every sentence at once, climb from there, keep if better.
    for _ in range(max_restarts):
        jump = _best_per_sentence(
            hs, _rows_dot(hs.stats, _log_bleu_gradient(hs.totals(best))), k, 1.0
        )
        if np.array_equal(jump, best):
            break
        cand = _climb(hs, jump, limit, 1.0, max_passes)
        cand_score = _score(hs, cand)
        if cand_score <= best_score + _EPS:
            break
        best, best_score = cand, cand_score
    return best


def anti_oracle(hs: HypStats, k: int | None = None, *, max_passes: int = 50) -> IntArray:
    """Selection minimising corpus BLEU (a floor): the corpus oracle's search, reversed.

    Starts from the lower of the 1-best and the worst-sentence-BLEU selection, so it is never
    above the 1-best.
    """
    limit = _limit(hs, k)
    worst = _best_per_sentence(hs, sentence_bleu_all(hs), k, -1.0)
    start = min((hs.one_best(), worst), key=lambda s: _score(hs, s))
    return _climb(hs, start, limit, -1.0, max_passes)


def oracle_at_k(hs: HypStats, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """Corpus BLEU of the corpus oracle restricted to each top-k (k=1 is the 1-best's BLEU).

    Each k's search also starts from the previous (smaller) k's oracle, so the curve is monotone.
    """
    out: dict[int, float] = {}
    prev: list[IntArray] = []
    for k in sorted(set(ks)):
        sel = corpus_oracle(hs, k, init=prev)
        out[k] = _score(hs, sel)
        prev = [sel]
    return {k: out[k] for k in ks}


def sentence_oracle_at_k(hs: HypStats, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """Corpus BLEU of the sentence-level oracle restricted to each top-k."""
    return {k: _score(hs, sentence_oracle(hs, k)) for k in ks}


def _bin_labels(edges: Sequence[int], first: int) -> list[str]:
    labels = []
    lo = first
    for hi in edges:
        labels.append(str(hi) if lo == hi else f"{lo}-{hi}")
        lo = hi + 1
    return labels


def rank_histogram(
    selection: IntArray,
    bins: Sequence[int] = DEFAULT_RANK_BINS,
    *,
    missing: np.ndarray | None = None,
) -> dict[str, int]:
    """How many chosen hypotheses fall in each 1-based rank range, in order ("1", "2-5", ...).

    `bins` are increasing inclusive upper edges; ranks beyond the last edge are counted in a final
    ">last" bin, always present so that every selection has the same keys. Sentences flagged in
    `missing` are not counted.
    """
    edges = list(bins)
    if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] < 1:
        raise ValueError(f"rank bins must be increasing edges >= 1, got {bins}")
    ranks = np.asarray(selection, dtype=np.int64) + 1
    if missing is not None:
        ranks = ranks[~np.asarray(missing, dtype=bool)]
    which = np.searchsorted(np.asarray(edges), ranks, side="left")
    counts = np.bincount(which, minlength=len(edges) + 1).tolist()
    labels = [*_bin_labels(edges, 1), f">{edges[-1]}"]
    return dict(zip(labels, counts, strict=True))


def bleu_by_length(
    hs: HypStats,
    selection: IntArray,
    src_lengths: Sequence[int] | IntArray,
    buckets: Sequence[int] = DEFAULT_LENGTH_EDGES,
) -> list[tuple[str, int, float | None]]:
    """Corpus BLEU of the selection within source-length buckets (the paper's Figure 3 shape).

    `buckets` are increasing inclusive upper edges in source tokens; the last bucket is open
    ("21+"). Returns (label, n_sentences, BLEU), BLEU None for an empty bucket.
    """
    lengths = np.asarray(src_lengths, dtype=np.int64)
    if lengths.shape != (hs.n_sentences,):
        raise ValueError(f"{len(lengths)} source lengths for {hs.n_sentences} sentences")
    edges = list(buckets)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"length buckets must be increasing, got {buckets}")
    rows = hs.rows(selection)
    which = np.searchsorted(np.asarray(edges), lengths, side="left")
    labels = [*_bin_labels(edges, 0), f"{edges[-1] + 1}+"] if edges else ["all"]
    out: list[tuple[str, int, float | None]] = []
    for b, label in enumerate(labels):
        mask = which == b
        n = int(mask.sum())
        bleu = corpus_bleu_from_stats(rows[mask].sum(axis=0)) if n else None
        out.append((label, n, bleu))
    return out
