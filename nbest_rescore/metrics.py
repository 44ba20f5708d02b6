"""BLEU on per-hypothesis sufficient statistics, bit-for-bit sacrebleu's.

Every hypothesis of an n-best list gets one row of sacrebleu's BLEU statistics
``[hyp_len, ref_len, correct_1..4, total_1..4]``; the corpus BLEU of any selection (one hypothesis
per sentence) is then sacrebleu's own score of the summed rows. Rows are computed by a vectorised
numpy n-gram matcher (one call per sentence) that is tested against sacrebleu's extractor.

Two scoring conventions (`BleuConfig.tokenize`):

- ``"none"``: tokenized hypotheses against tokenized references (the paper's multi-bleu style).
- ``"13a"`` (or any other sacrebleu tokenizer): hypotheses are first detokenized with sacremoses
  ``MosesDetokenizer(tgt_lang)`` and scored against raw references, as sacrebleu users expect.
"""

from __future__ import annotations

import collections
import functools
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from typing import Protocol

import numpy as np
from sacrebleu.metrics.bleu import BLEU, BLEUScore
from sacrebleu.metrics.chrf import CHRF, CHRFScore

from nbest_rescore.errors import InputError
from nbest_rescore.progress import QUIET, ProgressSettings, progress
from nbest_rescore.text import moses_detokenizer

MAX_ORDER = 4
STATS_WIDTH = 2 + 2 * MAX_ORDER
"""Columns of a statistics row: hyp_len, ref_len, correct_1..4, total_1..4."""

IntArray = np.ndarray
FloatArray = np.ndarray


@dataclass(frozen=True, kw_only=True)
class BleuConfig:
    """How BLEU is computed: sacrebleu tokenizer ("none" = pre-tokenized text), case, target language."""

    tokenize: str = "13a"
    lowercase: bool = False
    tgt_lang: str = "fr"

    def __post_init__(self) -> None:
        if self.tokenize not in BLEU.TOKENIZERS:
            known = ", ".join(sorted(BLEU.TOKENIZERS))
            raise InputError(
                f"--tokenize {self.tokenize!r}: unknown BLEU tokenizer (known: {known})"
            )

    @property
    def detokenizes(self) -> bool:
        """Whether tokenized hypotheses are detokenized before scoring (every mode but "none")."""
        return self.tokenize != "none"


# --------------------------------------------------------------------------- text preparation


@functools.lru_cache(maxsize=1 << 16)
def _detokenize_cached(tokens: tuple[str, ...], lang: str) -> str:
    return str(moses_detokenizer(lang).detokenize(list(tokens)))


def detokenize_moses(tokens: Sequence[str], lang: str) -> str:
    """Moses tokens (an n-best hypothesis) -> text with sacremoses
    ``MosesDetokenizer(lang).detokenize(tokens)`` (cached); `text.detokenize` is a model's.

    This is exactly how ``data/multi30k/*.1best.detok.gz`` were made (XML entities are unescaped).
    """
    return _detokenize_cached(tuple(tokens), lang)


def hypothesis_text(tokens: Sequence[str], config: BleuConfig) -> str:
    """The string sacrebleu scores for a tokenized hypothesis under `config`."""
    if config.detokenizes:
        return detokenize_moses(tokens, config.tgt_lang)
    return " ".join(tokens)


@functools.lru_cache(maxsize=16)
def bleu_metric(config: BleuConfig) -> BLEU:
    """A sacrebleu `BLEU` object for `config` (corpus defaults: exp smoothing, no effective order)."""
    metric = BLEU(tokenize=config.tokenize, lowercase=config.lowercase, force=True)
    metric.num_refs = 1  # what `corpus_score` with one reference stream would record
    return metric


def signature(config: BleuConfig) -> str:
    """sacrebleu's signature, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    return str(bleu_metric(config).get_signature().format())


def _tokens_for_bleu(text: str, metric: BLEU) -> list[str]:
    """sacrebleu's own preprocessing (lowercase, tokenizer on the right-stripped line), split."""
    return str(metric._preprocess_segment(text)).split()


# --------------------------------------------------------------------------- n-gram matching


class _RefIds(dict[str, int]):
    """Token -> 1-based id of the reference vocabulary; 0 for any token not in the reference."""

    def __missing__(self, key: str) -> int:
        return 0


def ngram_stats(hyp_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[str]) -> IntArray:
    """sacrebleu BLEU statistics (k, 10) of k tokenized hypotheses against one tokenized reference.

    Vectorised: hypothesis tokens are mapped to reference-vocabulary ids (0 = cannot match), and an
    n-gram is encoded as (index of its (n-1)-prefix among the reference (n-1)-grams) * V + last id,
    so codes stay below (ref_len + 1) * V at every order. Clipped counts come from one `np.unique`
    per order over (hypothesis, code) keys. Equal to sacrebleu's `_compute_segment_statistics`.
    """
    n_hyps = len(hyp_tokens)
    out = np.zeros((n_hyps, STATS_WIDTH), dtype=np.int64)
    if n_hyps == 0:
        return out
    lens = np.fromiter(map(len, hyp_tokens), dtype=np.int64, count=n_hyps)
    out[:, 0] = lens
    out[:, 1] = len(ref_tokens)
    for n in range(1, MAX_ORDER + 1):
        out[:, 1 + MAX_ORDER + n] = np.maximum(lens - n + 1, 0)
    n_tokens = int(lens.sum())
    if n_tokens == 0 or len(ref_tokens) == 0:
        return out

    ids = _RefIds()
    for w in ref_tokens:
        ids.setdefault(w, len(ids) + 1)
    vocab = len(ids) + 1
    flat = np.fromiter(
        map(ids.__getitem__, itertools.chain.from_iterable(hyp_tokens)),
        dtype=np.int64,
        count=n_tokens,
    )
    rids = np.fromiter(map(ids.__getitem__, ref_tokens), dtype=np.int64, count=len(ref_tokens))
    hyp_of = np.repeat(np.arange(n_hyps, dtype=np.int64), lens)
    starts = np.cumsum(lens) - lens
    # Tokens left in the hypothesis from each position (itself included): an n-gram starting at p
    # stays inside its hypothesis iff left[p] >= n.
    left = np.repeat(lens + starts, lens) - np.arange(n_tokens, dtype=np.int64)

    code = flat  # order-1 codes: the token ids
    valid = flat > 0
    rcode = rids
    modulus = vocab
    ref_uniq, ref_counts = np.unique(rcode, return_counts=True)
    for n in range(1, MAX_ORDER + 1):
        if n > 1:
            # Re-code each (n-1)-gram by its 1-based index among the reference (n-1)-grams (0: none).
            m = len(code) - 1
            if m <= 0 or len(rcode) <= 1:
                break
            pos = np.minimum(np.searchsorted(ref_uniq, code[:m]), len(ref_uniq) - 1)
            nxt = flat[n - 1 :]
            valid = valid[:m] & (ref_uniq[pos] == code[:m]) & (nxt > 0) & (left[:m] >= n)
            code = (pos + 1) * vocab + nxt
            rcode = (np.searchsorted(ref_uniq, rcode[:-1]) + 1) * vocab + rids[n - 1 :]
            modulus = (len(ref_uniq) + 1) * vocab
            ref_uniq, ref_counts = np.unique(rcode, return_counts=True)
        if not valid.any():
            break
        keys, counts = np.unique(
            hyp_of[: len(code)][valid] * modulus + code[valid], return_counts=True
        )
        gram = keys % modulus
        at = np.minimum(np.searchsorted(ref_uniq, gram), len(ref_uniq) - 1)
        matched = np.where(ref_uniq[at] == gram, np.minimum(counts, ref_counts[at]), 0)
        out[:, 1 + n] = np.bincount(keys // modulus, weights=matched, minlength=n_hyps).astype(
            np.int64
        )
    return out


def sentence_stats(hyp_texts: Sequence[str], ref: str, config: BleuConfig) -> IntArray:
    """Statistics (k, 10) of k hypothesis strings (already in the scored form) against one reference.

    Identical strings are scored once.
    """
    metric = bleu_metric(config)
    uniq: dict[str, int] = {}
    inverse = np.fromiter(
        (uniq.setdefault(t, len(uniq)) for t in hyp_texts), dtype=np.int64, count=len(hyp_texts)
    )
    toks = [_tokens_for_bleu(t, metric) for t in uniq]
    stats = ngram_stats(toks, _tokens_for_bleu(ref, metric))
    return stats if len(uniq) == len(hyp_texts) else stats[inverse]


def corpus_stats(hyps: Sequence[str], refs: Sequence[str], config: BleuConfig) -> IntArray:
    """Per-sentence statistics (n, 10) of one hypothesis string per reference (scored form)."""
    if len(hyps) != len(refs):
        raise InputError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        return np.zeros((0, STATS_WIDTH), dtype=np.int64)
    return np.concatenate([sentence_stats([h], r, config) for h, r in zip(hyps, refs, strict=True)])


def _surface_stats(surfaces: Sequence[str], ref: str, config: BleuConfig) -> IntArray:
    """Statistics of space-joined tokenized surfaces (detokenized first unless tokenize="none")."""
    uniq: dict[str, int] = {}
    inverse = [uniq.setdefault(s, len(uniq)) for s in surfaces]
    if config.detokenizes:
        lang = config.tgt_lang
        texts = [detokenize_moses(s.split(" "), lang) if s else "" for s in uniq]
    else:
        texts = list(uniq)
    stats = sentence_stats(texts, ref, config)
    return stats if len(uniq) == len(surfaces) else stats[np.asarray(inverse, dtype=np.int64)]


def _chunk_stats(args: tuple[BleuConfig, list[tuple[list[str], str]]]) -> list[IntArray]:
    """Worker task: statistics of a chunk of sentences (module-level so that it pickles)."""
    config, items = args
    return [_surface_stats(surfaces, ref, config) for surfaces, ref in items]


# --------------------------------------------------------------------------- the n-best container


class _SentenceLike(Protocol):
    @property
    def sent_id(self) -> int: ...

    @property
    def surfaces(self) -> Sequence[str]: ...


@dataclass(frozen=True, eq=False)
class HypStats:
    """BLEU statistics of every hypothesis of an n-best list, in CSR layout.

    Rows ``offsets[i]:offsets[i+1]`` of `stats` are sentence i's hypotheses in n-best order, so a
    selection is an int array of per-sentence ranks (0 = the decoder's 1-best). A sentence without
    any hypothesis (a missing id) gets one synthetic row, the empty hypothesis (hyp_len 0, ref_len
    counted, no n-grams), and ``missing[i]`` is True: its only possible selection is rank 0.
    This is the layout of `table.NBestTable`, so a table's choices index these rows directly.
    """

    stats: IntArray
    """(rows, STATS_WIDTH) int32 from `compute_hyp_stats` (counts of one sentence: half the memory
    of int64; sums over rows upcast to int64)."""
    offsets: IntArray
    missing: np.ndarray
    config: BleuConfig

    @property
    def n_sentences(self) -> int:
        """Number of sentences (references)."""
        return len(self.offsets) - 1

    @property
    def n_hypotheses(self) -> int:
        """Number of real hypotheses (synthetic rows of missing sentences excluded)."""
        return int(len(self.stats) - self.missing.sum())

    @property
    def counts(self) -> IntArray:
        """Rows per sentence."""
        return np.diff(self.offsets)

    @property
    def ranks(self) -> IntArray:
        """0-based rank of every row within its sentence's list."""
        return np.arange(len(self.stats), dtype=np.int64) - np.repeat(
            self.offsets[:-1], self.counts
        )

    def one_best(self) -> IntArray:
        """The decoder's selection: rank 0 everywhere."""
        return np.zeros(self.n_sentences, dtype=np.int64)

    def rows(self, selection: IntArray) -> IntArray:
        """Statistics rows (n_sentences, 10) of a selection; checks every rank is in range."""
        sel = np.asarray(selection, dtype=np.int64)
        if sel.shape != (self.n_sentences,):
            raise ValueError(f"selection has shape {sel.shape}, expected ({self.n_sentences},)")
        if np.any(sel < 0) or np.any(sel >= self.counts):
            raise ValueError("selection rank out of range for its sentence")
        return self.stats[self.offsets[:-1] + sel]

    def totals(self, selection: IntArray) -> IntArray:
        """Summed statistics (10,) of a selection."""
        return self.rows(selection).sum(axis=0)


def _store(
    per_sent: list[IntArray | None], sids: list[int], result: AsyncResult[list[IntArray]]
) -> None:
    for sid, st in zip(sids, result.get(), strict=True):
        per_sent[sid] = st


POOL_MIN_SENTENCES = 100
"""Fewest sentences for which `compute_hyp_stats` starts a worker pool by itself: spawning the
workers costs about a second, what a 1000-best list of ~30 sentences takes to score alone."""


def compute_hyp_stats(
    groups: Iterable[_SentenceLike],
    refs: Sequence[str],
    config: BleuConfig,
    *,
    progress_settings: ProgressSettings = QUIET,
    workers: int | None = 1,
    chunk_sentences: int = 32,
) -> HypStats:
    """BLEU statistics of every hypothesis of `groups` (`NBestTable.sentences()`, or `read_nbest`'s
    groups) against `refs`.

    Group ``sent_id`` indexes `refs`; ids absent from `groups` (gaps, or a list that ends early)
    become missing sentences (see `HypStats`). ``workers > 1`` spreads sentences over a process pool
    (spawned, ordered; the calling script needs the usual ``if __name__ == "__main__"`` guard): the
    result is identical, only faster on large lists when detokenizing. ``workers=None`` picks: 2
    (if the machine has 2 CPUs) for detokenizing modes on lists of `POOL_MIN_SENTENCES` or more,
    where sacremoses + the 13a tokenizer cost ~30 us per hypothesis, else 1 (with
    tokenize="none", or a short list, starting the pool costs more than it saves).
    """
    n_sent = len(refs)
    if workers is None:
        pays = config.detokenizes and n_sent >= POOL_MIN_SENTENCES
        workers = min(2, os.cpu_count() or 1) if pays else 1
    per_sent: list[IntArray | None] = [None] * n_sent

    def items() -> Iterator[tuple[int, list[str], str]]:
        last = -1
        for g in progress(
            groups, progress_settings, desc="BLEU statistics", unit="sent", total=n_sent
        ):
            sid = g.sent_id
            if sid >= n_sent:
                raise InputError(f"n-best list has sentence id {sid} but only {n_sent} references")
            if sid <= last:
                raise InputError(f"n-best sentence ids not increasing ({sid} after {last})")
            last = sid
            surfaces = list(g.surfaces)
            if surfaces:
                yield sid, surfaces, refs[sid]

    def chunks() -> Iterator[tuple[list[int], tuple[BleuConfig, list[tuple[list[str], str]]]]]:
        it = items()
        while batch := list(itertools.islice(it, chunk_sentences)):
            yield [b[0] for b in batch], (config, [(b[1], b[2]) for b in batch])

    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            # Ordered, bounded pipeline: reading the list overlaps with the workers' scoring.
            pending: collections.deque[tuple[list[int], AsyncResult[list[IntArray]]]] = (
                collections.deque()
            )
            for sids, task in chunks():
                pending.append((sids, pool.apply_async(_chunk_stats, (task,))))
                while len(pending) > 2 * workers:
                    _store(per_sent, *pending.popleft())
            while pending:
                _store(per_sent, *pending.popleft())
    else:
        for sids, task in chunks():
            for sid, st in zip(sids, _chunk_stats(task), strict=True):
                per_sent[sid] = st

    missing = np.array([s is None for s in per_sent], dtype=bool)
    if missing.any():
        metric = bleu_metric(config)
        for sid in np.flatnonzero(missing).tolist():
            row = np.zeros((1, STATS_WIDTH), dtype=np.int64)
            row[0, 1] = len(_tokens_for_bleu(refs[sid], metric))
            per_sent[sid] = row
    counts = np.fromiter((len(b) for b in per_sent if b is not None), dtype=np.int64, count=n_sent)
    offsets = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    stats = np.empty((int(offsets[-1]), STATS_WIDTH), dtype=np.int32)
    for sid in range(n_sent):  # each sentence's block is dropped once copied
        block, per_sent[sid] = per_sent[sid], None
        if block is not None:
            stats[offsets[sid] : offsets[sid + 1]] = block
    return HypStats(stats=stats, offsets=offsets, missing=missing, config=config)


# --------------------------------------------------------------------------- scores from statistics


def score_from_stats(summed: Sequence[int] | IntArray) -> BLEUScore:
    """sacrebleu's corpus `BLEUScore` of summed statistics (exp smoothing, as `corpus_score`)."""
    s = [int(x) for x in np.asarray(summed).tolist()]
    return BLEU.compute_bleu(
        correct=s[2 : 2 + MAX_ORDER],
        total=s[2 + MAX_ORDER :],
        sys_len=s[0],
        ref_len=s[1],
        smooth_method="exp",
    )


def corpus_bleu_from_stats(summed: Sequence[int] | IntArray) -> float:
    """Corpus BLEU (0-100) of summed statistics, computed by sacrebleu."""
    return float(score_from_stats(summed).score)


def bleu_of_selection(hs: HypStats, selection: IntArray) -> BLEUScore:
    """sacrebleu `BLEUScore` of a selection (one rank per sentence)."""
    return score_from_stats(hs.totals(selection))


def _smoothed_log_precisions(stats: IntArray) -> tuple[FloatArray, FloatArray, np.ndarray]:
    """Log n-gram precisions with sacrebleu's 'exp' smoothing, log BP, and the total>0 mask."""
    st = np.atleast_2d(np.asarray(stats, dtype=np.float64))
    sys_len, ref_len = st[:, 0], st[:, 1]
    correct, total = st[:, 2 : 2 + MAX_ORDER], st[:, 2 + MAX_ORDER :]
    has_total = total > 0
    zero = (correct == 0) & has_total
    # mteval "exp" smoothing: the k-th order with no match gets precision 1 / (2^k * total).
    halvings = np.cumsum(zero, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(
            zero,
            -halvings * np.log(2.0) - np.log(np.where(has_total, total, 1.0)),
            np.log(np.where(has_total & ~zero, correct, 1.0))
            - np.log(np.where(has_total, total, 1.0)),
        )
        log_bp = np.where(
            sys_len < ref_len,
            np.where(sys_len > 0, 1.0 - ref_len / np.where(sys_len > 0, sys_len, 1.0), -np.inf),
            0.0,
        )
    return logp, log_bp, has_total


_ROWS_AT_ONCE = 1 << 18
"""Statistics rows scored in one piece by `corpus_bleu_many` and `sentence_bleu_many`: their
float temporaries take about 300 bytes a row."""


def _in_pieces(score: Callable[[IntArray], FloatArray], stats: IntArray) -> FloatArray:
    """`score` of 2-D statistics rows, `_ROWS_AT_ONCE` rows at a time (bounded memory)."""
    st = np.atleast_2d(np.asarray(stats))
    if len(st) <= _ROWS_AT_ONCE:
        return score(st)
    return np.concatenate(
        [score(st[lo : lo + _ROWS_AT_ONCE]) for lo in range(0, len(st), _ROWS_AT_ONCE)]
    )


def corpus_bleu_many(stats: IntArray) -> FloatArray:
    """Corpus BLEU (0-100) of many summed statistics rows at once, as sacrebleu's `compute_bleu`.

    Equal to `corpus_bleu_from_stats` up to floating-point rounding; used to rank candidates.
    """
    return _in_pieces(_corpus_bleu_rows, stats)


def _corpus_bleu_rows(st: IntArray) -> FloatArray:
    """`corpus_bleu_many` of one piece of rows."""
    logp, log_bp, has_total = _smoothed_log_precisions(st)
    any_correct = (st[:, 2 : 2 + MAX_ORDER] > 0).any(axis=1)
    ok = has_total.all(axis=1) & any_correct
    with np.errstate(invalid="ignore"):
        mean = (logp[:, 0] + logp[:, 1] + logp[:, 2] + logp[:, 3]) / MAX_ORDER
        score = 100.0 * np.exp(log_bp + mean)
    return np.where(ok, score, 0.0)


def sentence_bleu_many(stats: IntArray) -> FloatArray:
    """Smoothed sentence BLEU of many statistics rows, as `sacrebleu.sentence_bleu`'s defaults.

    Those defaults are 'exp' smoothing (mteval's: the k-th zero-match order counts as 1/2^k
    matches) with effective order (only n-gram orders the hypothesis has are averaged).
    """
    return _in_pieces(_sentence_bleu_rows, stats)


def _sentence_bleu_rows(st: IntArray) -> FloatArray:
    """`sentence_bleu_many` of one piece of rows."""
    logp, log_bp, has_total = _smoothed_log_precisions(st)
    any_correct = (st[:, 2 : 2 + MAX_ORDER] > 0).any(axis=1)
    # sacrebleu stops at the first order without any n-gram; totals decrease with n, so the
    # effective order is the number of orders with total > 0.
    eff = has_total.sum(axis=1)
    summed = np.where(has_total, logp, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 100.0 * np.exp(log_bp + summed / np.maximum(eff, 1))
    return np.where(any_correct & (eff > 0), score, 0.0)


# --------------------------------------------------------------------------- conveniences


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], config: BleuConfig) -> BLEUScore:
    """sacrebleu corpus BLEU of hypothesis strings already in the scored form for `config`.

    With tokenize="none" pass tokenized hypotheses and references; otherwise detokenized
    hypotheses (see `hypothesis_text`) and raw references.
    """
    if len(hyps) != len(refs):
        raise InputError(f"{len(hyps)} hypotheses but {len(refs)} references")
    metric = BLEU(tokenize=config.tokenize, lowercase=config.lowercase, force=True)
    return metric.corpus_score(list(hyps), [list(refs)])


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> CHRFScore:
    """sacrebleu corpus chrF (defaults: character 6-grams, beta 2) of detokenized hypotheses."""
    if len(hyps) != len(refs):
        raise InputError(f"{len(hyps)} hypotheses but {len(refs)} references")
    return CHRF().corpus_score(list(hyps), [list(refs)])


def paired_bootstrap(
    stats_baseline_rows: IntArray,
    stats_system_rows: IntArray,
    n_samples: int = 1000,
    seed: int | None = 12345,
) -> float:
    """p-value of sacrebleu's paired bootstrap test (``--paired-bs``) from per-sentence statistics.

    Same resamples (``default_rng(seed).choice``), float32 sums and statistic as sacrebleu's
    `_paired_bs_test`: p = (#{|d_i| - mean|d| > |d_real|} + 1) / (n_samples + 1), where d_i is the
    system-minus-baseline BLEU on resample i. Small p: the difference is unlikely to be chance.
    One deliberate difference: two systems that score the same on every resample (e.g. identical
    outputs) get p = 1, where sacrebleu's formula gives its minimum, 1 / (n_samples + 1).
    """
    base = np.asarray(stats_baseline_rows, dtype=np.int64)
    system = np.asarray(stats_system_rows, dtype=np.int64)
    if base.shape != system.shape or base.ndim != 2 or base.shape[1] != STATS_WIDTH:
        raise ValueError(
            f"statistics shapes differ or are not (n, 10): {base.shape}, {system.shape}"
        )
    n = len(base)
    if n == 0:
        raise ValueError("paired bootstrap needs at least one sentence")
    rng = np.random.default_rng(seed)
    idxs = rng.choice(n, size=(n_samples, n), replace=True)
    # How often each sentence is drawn in each resample; the integer sums are exact in float32
    # (below 2^24), as sacrebleu's float32 sums of the same rows.
    flat = (idxs + n * np.arange(n_samples)[:, None]).ravel()
    draws = np.bincount(flat, minlength=n_samples * n).reshape(n_samples, n)
    sums_bl = (draws @ base).astype(np.float32)
    sums_sys = (draws @ system).astype(np.float32)
    metric = BLEU(tokenize="none")
    scores_bl = np.array([metric._compute_score_from_stats(s).score for s in sums_bl])
    scores_sys = np.array([metric._compute_score_from_stats(s).score for s in sums_sys])
    real = abs(corpus_bleu_from_stats(base.sum(0)) - corpus_bleu_from_stats(system.sum(0)))
    diffs = np.abs(scores_sys - scores_bl)
    if real == 0.0 and not diffs.any():
        return 1.0  # indistinguishable systems (sacrebleu's formula would say 1 / (n_samples + 1))
    centred = diffs - diffs.mean()
    return float((np.sum(centred > real) + 1) / (n_samples + 1))
