"""The consensus feature `MBR0`: each hypothesis' expected sentence BLEU against its own list.

Minimum Bayes risk reranking (Kumar & Byrne 2004) as a feature: for hypothesis h of a sentence's
list, MBR0(h) = sum over the evidence e of p(e) * BLEU+1(h, e), where the evidence is the list's
`top_k` best hypotheses by the decoder's total and p is their posterior, softmax(scale * total),
over the evidence. BLEU+1 is Lin & Och (2004)'s sentence BLEU (add one to the matches and counts
of 2- to 4-grams; brevity penalty against the evidence's length), on the list's own tokens.

Cost: one (hypotheses x top_k) matrix product per n-gram order and list, so linear in the list
size for a fixed `top_k` (not quadratic in a 1000-best list). N-grams are compared by 64-bit
hashes of their bytes, all computed with numpy from the table's text buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbest_rescore.table import NBestTable, Surfaces
from nbest_rescore.validate import option_at_least

MAX_ORDER = 4
_SPACE, _NEWLINE = 32, 10
_BYTE_MULT = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: a token's hash from its bytes
_GRAM_MULT = np.uint64(0x9E3779B97F4A7C15)  # n-gram hash from its tokens' hashes
_OCCURRENCE_MULT = np.uint64(0xC2B2AE3D27D4EB4F)  # n-gram hash with its occurrence number


@dataclass(frozen=True, kw_only=True)
class MbrConfig:
    """`top_k`: evidence hypotheses per list (the best by the decoder total); `scale`: the
    posterior's sharpness, p(e) proportional to exp(scale * total(e))."""

    top_k: int = 50
    scale: float = 1.0

    def __post_init__(self) -> None:
        option_at_least("--mbr-top-k", self.top_k, 1)
        option_at_least("--mbr-scale", self.scale, 0.0)


@dataclass(frozen=True)
class Ngrams:
    """Every n-gram occurrence of a table's rows, one array per order (1..MAX_ORDER): its row and
    a key that two occurrences share exactly when they are the same n-gram and the same
    occurrence of it in their rows (the 1st, 2nd, ...), so that a count of shared keys is BLEU's
    clipped match count. Also each row's token count."""

    rows: tuple[np.ndarray, ...]
    keys: tuple[np.ndarray, ...]
    lengths: np.ndarray


def token_hashes(surfaces: Surfaces) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every token, its row), tokens in row order; tokens are single-space separated."""
    buf = surfaces.buffer[: int(surfaces.offsets[-1])]
    is_sep = (buf == _SPACE) | (buf == _NEWLINE)
    # A token starts at a non-separator byte after a separator (or at the buffer's start).
    prev_sep = np.concatenate(([True], is_sep[:-1]))
    starts = np.flatnonzero(~is_sep & prev_sep)
    if not len(starts):
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    byte_tok = np.cumsum(~is_sep & prev_sep) - 1  # token index of each byte (valid off separators)
    pos = np.where(is_sep, 0, np.arange(len(buf)) - starts[np.maximum(byte_tok, 0)])
    powers = np.cumprod(np.full(int(pos.max()) + 1, _BYTE_MULT, dtype=np.uint64))
    contrib = np.where(is_sep, np.uint64(0), (buf.astype(np.uint64) + np.uint64(1)) * powers[pos])
    hashes = np.add.reduceat(contrib, starts, dtype=np.uint64)
    rows = np.searchsorted(surfaces.offsets, starts, side="right") - 1
    return hashes, rows


def ngrams(surfaces: Surfaces) -> Ngrams:
    """The n-gram occurrences of every row of `surfaces` (see `Ngrams`)."""
    tok, tok_row = token_hashes(surfaces)
    lengths = np.bincount(tok_row, minlength=len(surfaces)).astype(np.int64)
    rows_out, keys_out = [], []
    h = np.zeros(len(tok), dtype=np.uint64)
    for n in range(1, MAX_ORDER + 1):
        # h[p] = hash of tokens p..p+n-1, valid where they lie in one row.
        m = len(tok) - n + 1
        if m <= 0:
            rows_out.append(np.zeros(0, dtype=np.int64))
            keys_out.append(np.zeros(0, dtype=np.uint64))
            continue
        h = h[:m] * _GRAM_MULT + tok[n - 1 :]
        ok = tok_row[:m] == tok_row[n - 1 :]
        g, r = h[ok], tok_row[:m][ok]
        # Occurrence number of each n-gram within its row: rank inside runs of equal (row, hash).
        order = np.lexsort((g, r))
        gs, rs = g[order], r[order]
        new = np.ones(len(gs), dtype=bool)
        new[1:] = (gs[1:] != gs[:-1]) | (rs[1:] != rs[:-1])
        run_start = np.maximum.accumulate(np.where(new, np.arange(len(gs)), 0))
        occurrence = (np.arange(len(gs)) - run_start).astype(np.uint64)
        rows_out.append(rs)
        keys_out.append(gs ^ (occurrence * _OCCURRENCE_MULT))
    return Ngrams(tuple(rows_out), tuple(keys_out), lengths)


def _matches(rows: np.ndarray, keys: np.ndarray, lo: int, hi: int, evid: np.ndarray) -> np.ndarray:
    """(hi - lo, len(evid)) clipped n-gram matches of rows lo..hi-1 against the evidence rows."""
    a, b = np.searchsorted(rows, [lo, hi])
    r, k = rows[a:b] - lo, keys[a:b]
    in_evid = np.zeros(hi - lo, dtype=np.int64) - 1
    in_evid[evid - lo] = np.arange(len(evid))
    ev = in_evid[r] >= 0
    vocab = np.unique(k[ev])
    out = np.zeros((hi - lo, len(evid)), dtype=np.float32)
    if not len(vocab):
        return out
    col = np.searchsorted(vocab, k)
    hit = (col < len(vocab)) & (vocab[np.minimum(col, len(vocab) - 1)] == k)
    left = np.zeros((hi - lo, len(vocab)), dtype=np.float32)
    left[r[hit], col[hit]] = 1.0
    right = np.zeros((len(evid), len(vocab)), dtype=np.float32)
    right[in_evid[r[ev]], col[ev]] = 1.0
    return left @ right.T


def sentence_bleu_matrix(
    matches: list[np.ndarray], hyp_len: np.ndarray, ref_len: np.ndarray
) -> np.ndarray:
    """BLEU+1 of each hypothesis (rows) against each evidence hypothesis (columns), in [0, 1]:
    `matches[n-1]` the clipped n-gram matches, lengths in tokens."""
    log_p = np.zeros((len(hyp_len), len(ref_len)), dtype=np.float64)
    for n, m in enumerate(matches, start=1):
        total = np.maximum(hyp_len - n + 1, 0).astype(np.float64)[:, None]
        add = 0.0 if n == 1 else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p += np.log((m + add) / (total + add))
    hl = np.maximum(hyp_len, 1).astype(np.float64)[:, None]
    log_bp = np.minimum(0.0, 1.0 - ref_len[None, :] / hl)
    bleu = np.exp(log_p / MAX_ORDER + log_bp)
    return np.where((hyp_len[:, None] > 0) & np.isfinite(bleu), bleu, 0.0)


def mbr_feature(table: NBestTable, total: np.ndarray, cfg: MbrConfig) -> np.ndarray:
    """MBR0 of every row of `table` (0 for sentences without hypotheses): its expected BLEU+1
    against the list's `top_k` best rows by `total` under softmax(scale * total)."""
    grams = ngrams(table.surfaces)
    out = np.zeros(len(table.values), dtype=np.float64)
    offsets = table.offsets
    for s in np.flatnonzero(~table.missing).tolist():
        lo, hi = int(offsets[s]), int(offsets[s + 1])
        # The best rows by the total; among equal totals the earlier (better decoder rank) first.
        evid = lo + np.argsort(-total[lo:hi], kind="stable")[: cfg.top_k]
        z = cfg.scale * total[evid]
        p = np.exp(z - z.max())
        p /= p.sum()
        matches = [_matches(grams.rows[n], grams.keys[n], lo, hi, evid) for n in range(MAX_ORDER)]
        bleu = sentence_bleu_matrix(matches, grams.lengths[lo:hi], grams.lengths[evid])
        out[lo:hi] = bleu @ p
    return out
