"""MERT: tune linear reranking weights to maximise corpus BLEU on a dev n-best list.

Och (2003)'s exact line search: along a direction, every hypothesis' score is a line in the step
size gamma; the 1-best of a list changes only where the upper envelope of its lines bends, so
corpus BLEU is piecewise constant in gamma and its maximum is found exactly by one sweep over
the sorted breakpoints of all lists. Coordinate and random directions, random restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nbest_rescore.metrics import corpus_bleu_many
from nbest_rescore.rerank import select_best, weight_vector, within_list_scale
from nbest_rescore.table import NBestTable
from nbest_rescore.validate import option_at_least, option_at_most

MAX_RESTARTS = 1000
"""Most random restarts of one tuning: each costs a full search, so a larger count would only
run for days (and hold a start point per restart)."""

MAX_BOOTSTRAP = 1000
"""Most bootstrap resamples of one tuning (each is a full MERT)."""


@dataclass(frozen=True, kw_only=True)
class MertConfig:
    """Search settings: restarts around the start point, random directions, iteration cap."""

    restarts: int = 10
    random_directions: int = 2
    max_iterations: int = 10
    seed: int = 1
    min_gain: float = 1e-6
    bootstrap: int = 0
    """0: one MERT on the dev lists. N: the mean of the weights MERT finds on N bootstrap
    resamples of the lists (`bagged_mert`), which depend less on the dev set's accidents."""

    def __post_init__(self) -> None:
        option_at_least("--restarts", self.restarts, 0)
        option_at_most("--restarts", self.restarts, MAX_RESTARTS)
        option_at_least("--tune-bootstrap", self.bootstrap, 0)
        option_at_most("--tune-bootstrap", self.bootstrap, MAX_BOOTSTRAP)
        option_at_least("random_directions", self.random_directions, 0)
        option_at_least("max_iterations", self.max_iterations, 1)


@dataclass(frozen=True)
class MertResult:
    weights: dict[str, float]
    dev_bleu: float
    start_bleu: float
    history: list[float] = field(default_factory=list)


def _envelope(a: list[float], b: list[float]) -> tuple[list[float], list[int]]:
    """Upper envelope of lines y = a_i + gamma * b_i: (start gammas, line indices), left to right.

    Lines are visited by slope; among equal slopes the higher intercept wins, and among exact
    ties the lower index (better n-best rank) wins, matching `select_best`.
    """
    order = sorted(range(len(a)), key=lambda i: (b[i], -a[i], i))
    starts: list[float] = []
    lines: list[int] = []
    for i in order:
        if lines and b[lines[-1]] == b[i]:
            continue  # same slope, lower (or tied, worse-ranked) intercept: never on top
        x = -np.inf
        while lines:
            j = lines[-1]
            x = (a[j] - a[i]) / (b[i] - b[j])
            if x <= starts[-1]:
                lines.pop()
                starts.pop()
                x = -np.inf
            else:
                break
        starts.append(x if lines else -np.inf)
        lines.append(i)
    return starts, lines


def line_search(
    x: np.ndarray,
    stats: np.ndarray,
    offsets: np.ndarray,
    w: np.ndarray,
    d: np.ndarray,
) -> tuple[float, float]:
    """Exact best step gamma along direction `d` from `w`: (gamma, BLEU at w + gamma d)."""
    a_all = (x @ w).tolist()
    b_all = (x @ d).tolist()
    start = np.zeros(stats.shape[1])
    gammas: list[float] = []
    deltas: list[np.ndarray] = []
    for s in range(len(offsets) - 1):
        lo, hi = int(offsets[s]), int(offsets[s + 1])
        if lo == hi:
            continue
        starts, lines = _envelope(a_all[lo:hi], b_all[lo:hi])
        start += stats[lo + lines[0]]
        for k in range(1, len(lines)):
            gammas.append(starts[k])
            deltas.append(stats[lo + lines[k]] - stats[lo + lines[k - 1]])
    if not gammas:
        return 0.0, float(corpus_bleu_many(start)[0])
    order = np.argsort(np.asarray(gammas), kind="stable")
    g = np.asarray(gammas)[order]
    cum = start + np.concatenate(
        [np.zeros((1, stats.shape[1])), np.cumsum(np.asarray(deltas)[order], axis=0)]
    )
    bleus = corpus_bleu_many(cum)  # interval k lies between g[k-1] and g[k]
    best = int(np.argmax(bleus))
    # Prefer the interval containing gamma = 0 when it ties the best (no needless moves).
    here = int(np.searchsorted(g, 0.0, side="right"))
    if bleus[here] >= bleus[best] - 1e-12:
        return 0.0, float(bleus[here])
    if best == 0:
        gamma = g[0] - 1.0
    elif best == len(g):
        gamma = g[-1] + 1.0
    else:
        gamma = 0.5 * (g[best - 1] + g[best])
    return float(gamma), float(bleus[best])


def direction_scales(x: np.ndarray, offsets: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """Per-feature step scales of the search directions and restarts: |w0| where the start
    weighs the feature; for a feature it leaves at 0 (a length or MBR feature), the weight that
    moves scores within a list as much as a weighted feature does on average. (Scale |w0| alone
    would leave such a feature out of every random direction and restart: explored along its own
    axis only.)"""
    spreads = np.array([within_list_scale(x[:, j], offsets) for j in range(x.shape[1])])
    scale = np.abs(w0).astype(np.float64)
    weighted = scale > 0
    if not weighted.any():
        return 1.0 / spreads
    typical = float(np.mean(scale[weighted] * spreads[weighted]))
    scale[~weighted] = typical / spreads[~weighted]
    return scale


def _normalise(w: np.ndarray) -> np.ndarray:
    n = np.abs(w).sum()
    return w / n if n > 0 else w


def corpus_bleu_of(table: NBestTable, w: np.ndarray, stats: np.ndarray) -> float:
    """Corpus BLEU of the 1-best under weights `w` (same statistics as the line search)."""
    choice = select_best(table.values @ w, table.offsets)
    return float(corpus_bleu_many(stats[table.rows_of(choice)].sum(axis=0))[0])


def mert(
    table: NBestTable,
    stats: np.ndarray,
    start: Mapping[str, float],
    config: MertConfig,
    *,
    extra_starts: Sequence[Mapping[str, float]] = (),
) -> MertResult:
    """Maximise dev corpus BLEU over the weights of `table`'s columns, starting from `start`.

    The result is never worse than the best start point (it is kept unless beaten).
    Weights are scale-free for reranking, so they are reported L1-normalised.
    """
    x = table.values
    d_dim = x.shape[1]
    rng = np.random.default_rng(config.seed)
    starts = [weight_vector(start, table.names)] + [
        weight_vector(s, table.names) for s in extra_starts
    ]
    scale = direction_scales(x, table.offsets, starts[0])
    for _ in range(config.restarts):
        starts.append(starts[0] + rng.uniform(-1, 1, d_dim) * scale)
    start_bleu = corpus_bleu_of(table, starts[0], stats)
    best_w, best_bleu = starts[0], start_bleu
    history = [start_bleu]
    for w0 in starts:
        w = w0.copy()
        cur = corpus_bleu_of(table, w, stats)
        for _ in range(config.max_iterations):
            improved = False
            dirs = list(np.eye(d_dim) * scale) + [
                rng.normal(size=d_dim) * scale for _ in range(config.random_directions)
            ]
            for d in dirs:
                gamma, bleu = line_search(x, stats, table.offsets, w, d)
                if gamma != 0.0 and bleu > cur + config.min_gain:
                    w = w + gamma * d
                    cur = bleu
                    improved = True
            if not improved:
                break
        if cur > best_bleu + config.min_gain:
            best_w, best_bleu = w, cur
            history.append(cur)
    best_w = _normalise(best_w)
    return MertResult(
        weights={n: float(v) for n, v in zip(table.names, best_w, strict=True)},
        dev_bleu=best_bleu,
        start_bleu=start_bleu,
        history=history,
    )


def bagged_mert(
    table: NBestTable,
    stats: np.ndarray,
    start: Mapping[str, float],
    config: MertConfig,
) -> MertResult:
    """The mean of the L1-normalised weights MERT finds on `config.bootstrap` resamples (with
    replacement) of the dev lists: bagging smooths the argmax over one dev set's piecewise-
    constant BLEU surface, whose sharp optima transfer poorly. `dev_bleu` is the mean's BLEU on
    the whole dev set; `history` the resamples' own dev BLEUs."""
    if config.bootstrap < 1:
        raise ValueError("bagged_mert needs config.bootstrap >= 1")
    rng = np.random.default_rng(config.seed)
    total = np.zeros(len(table.names))
    history = []
    for b in range(config.bootstrap):
        sample = rng.integers(0, table.n_sentences, table.n_sentences)
        sub, rows = table.subset(sample)
        one = replace(config, bootstrap=0, seed=config.seed + 1 + b)
        result = mert(sub, stats[rows], start, one)
        total += weight_vector(result.weights, table.names)
        history.append(result.dev_bleu)
    w = _normalise(total / config.bootstrap)
    return MertResult(
        weights={n: float(v) for n, v in zip(table.names, w, strict=True)},
        dev_bleu=corpus_bleu_of(table, w, stats),
        start_bleu=corpus_bleu_of(table, weight_vector(start, table.names), stats),
        history=history,
    )


def tune(
    table: NBestTable, stats: np.ndarray, start: Mapping[str, float], config: MertConfig
) -> MertResult:
    """MERT as `config` says: plain, or bagged over bootstrap resamples (`config.bootstrap`)."""
    return (bagged_mert if config.bootstrap else mert)(table, stats, start, config)
