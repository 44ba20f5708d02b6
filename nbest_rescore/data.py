"""Parallel corpora for training: aligned streaming, tokenisation, length filtering, bucketed
batches over token-id arrays (`corpus.EncodedCorpus`), collation and DDP shards.

Source reversal is NOT done here: it is part of the model (`ModelConfig.reverse_source`); a
right-to-left model's targets are read backwards when collated. Batch order is a pure function
of (seed, epoch) and the length arrays, so a data position is just (epoch, batch index), and
batching never builds a Python object per sentence (12M pairs cost a few int32 arrays).
Only `collate` needs torch, imported there: `prepare`'s worker processes start without it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbest_rescore.corpus import EncodedCorpus
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, iter_text_lines, open_binary
from nbest_rescore.text import TokenizerConfig, tokenize
from nbest_rescore.vocab import EOS

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Sentence = list[str]

BATCH_ORDER = 2
"""Version of `make_batches`' order, kept in checkpoints. 1: `legacy_batches` (before the
prepared corpus); a run keeps the order it started with, so its resume stays exact."""


def count_lines(path: PathLike) -> int:
    """Lines of a text file (plain or .gz), as `iter_text_lines` would yield them."""
    n, last = 0, b"\n"
    with open_binary(path) as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def check_parallel(src_path: PathLike, tgt_path: PathLike) -> int:
    """The line count of two aligned files; mismatched lengths and empty files are
    `InputError`s naming both files and the first line that one has and the other lacks."""
    n_src, n_tgt = count_lines(src_path), count_lines(tgt_path)
    if n_src != n_tgt:
        short, long_ = (src_path, tgt_path) if n_src < n_tgt else (tgt_path, src_path)
        first_missing = min(n_src, n_tgt) + 1
        raise InputError(
            f"parallel files differ in length: {src_path} has {n_src} lines, {tgt_path} has "
            f"{n_tgt}; {short} ends before line {first_missing} of {long_}",
            str(short),
            first_missing,
        )
    if not n_src:
        raise InputError(f"empty corpus (no lines in {src_path} and {tgt_path})", str(src_path))
    return n_src


@dataclass(frozen=True)
class ParallelChunk:
    """Consecutive line pairs of two aligned files; `first_line` is the 1-based number of the first."""

    first_line: int
    src: list[str]
    tgt: list[str]


def iter_parallel(src_path: PathLike, tgt_path: PathLike, size: int) -> Iterator[ParallelChunk]:
    """Chunks of `size` line pairs, streamed (run `check_parallel` first: this one stops at the
    shorter file). Invalid UTF-8 is an `InputError` naming the file and line."""
    src_buf: list[str] = []
    tgt_buf: list[str] = []
    first = 1
    for s, t in zip(iter_text_lines(src_path), iter_text_lines(tgt_path), strict=False):
        src_buf.append(s)
        tgt_buf.append(t)
        if len(src_buf) == size:
            yield ParallelChunk(first, src_buf, tgt_buf)
            first += size
            src_buf, tgt_buf = [], []
    if src_buf:
        yield ParallelChunk(first, src_buf, tgt_buf)


def tokenize_lines(
    lines: Sequence[str], cfg: TokenizerConfig | None, *, path: PathLike = "", first_line: int = 1
) -> list[Sentence]:
    """Tokenise raw lines with `text.tokenize`; `cfg=None` means already tokenised (split on spaces)."""
    if cfg is None:
        return [line.split() for line in lines]
    out: list[Sentence] = []
    for i, line in enumerate(lines, start=first_line):
        try:
            out.append(tokenize(line, cfg))
        except Exception as exc:  # sacremoses failures are rare; locate them for the user
            raise InputError(f"cannot tokenise line: {exc}", str(path) or None, i) from exc
    return out


@dataclass(frozen=True)
class FilterStats:
    """What length filtering removed (reported in the training log, never silent)."""

    total: int
    kept: int
    empty: int
    too_long: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: FilterStats) -> FilterStats:
        return FilterStats(
            self.total + other.total,
            self.kept + other.kept,
            self.empty + other.empty,
            self.too_long + other.too_long,
        )


def length_filter(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_len: int | None, *, drop_empty: bool = True
) -> tuple[np.ndarray, FilterStats]:
    """Which pairs have both sides non-empty and at most `max_len` tokens (a bool mask), and
    the counts of what was dropped."""
    src_lens, tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
    empty = (src_lens == 0) | (tgt_lens == 0) if drop_empty else np.zeros(len(src_lens), bool)
    long = np.zeros(len(src_lens), bool)
    if max_len is not None:
        long = ~empty & ((src_lens > max_len) | (tgt_lens > max_len))
    keep = ~(empty | long)
    stats = FilterStats(len(keep), int(keep.sum()), int(empty.sum()), int(long.sum()))
    return keep, stats


@dataclass(frozen=True, kw_only=True)
class BatchingConfig:
    """Minibatches of similar-length sentences: `batch_size` sentences, or a token budget."""

    batch_size: int = 128
    batch_tokens: int | None = None
    """When set, batches hold as many sentences as fit in this many padded target+source tokens."""
    seed: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.batch_tokens is not None and self.batch_tokens < 1):
            raise InputError("batch size must be positive")


@dataclass(frozen=True)
class EpochBatches:
    """One epoch's batches as arrays: batch k is order[starts[p]:starts[p + 1]], p = perm[k]."""

    order: np.ndarray
    starts: np.ndarray
    perm: np.ndarray

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, k: int) -> np.ndarray:
        p = int(self.perm[k])
        return self.order[int(self.starts[p]) : int(self.starts[p + 1])]


def make_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, cfg: BatchingConfig, epoch: int
) -> EpochBatches:
    """The epoch's batches, deterministic in (seed, epoch).

    Sentences are ordered by (source length, target length) in a random order within equal
    lengths (numpy, keyed by (seed, epoch): the same as a shuffle followed by a stable sort),
    cut into batches, and the batches are shuffled. Memory: a few arrays of one int32 per
    sentence; time: linear (a 16-bit radix sort, shuffles within cache-sized groups).
    """
    rng = np.random.default_rng([cfg.seed % 2**64, epoch])
    order = _length_order(src_lens, tgt_lens, rng)
    n = len(order)
    if cfg.batch_tokens is None:
        starts = np.append(np.arange(0, n, cfg.batch_size, dtype=np.int64), n)
    else:
        widths = src_lens[order].astype(np.int32) + tgt_lens[order] + 1
        starts = _budget_starts(widths, cfg.batch_tokens)
    return EpochBatches(order, starts, rng.permutation(len(starts) - 1))


def _length_order(src: np.ndarray, tgt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices sorted by (src, tgt), each group of equal lengths in a random order. One
    combined key, 16-bit where it fits (numpy's stable sort is then a radix sort)."""
    width = int(tgt.max(initial=0)) + 1
    top = (int(src.max(initial=0)) + 1) * width
    dt = np.dtype(np.uint16 if top <= 1 << 16 else np.uint32 if top <= 1 << 32 else np.uint64)
    key = src.astype(dt) * np.asarray(width, dtype=dt) + tgt.astype(dt)
    if top <= COUNTING_SORT_KEYS:
        counts = np.zeros(top, dtype=np.int64)
        for lo in range(0, len(key), SORT_CHUNK):  # np.bincount copies its input to int64
            counts += np.bincount(key[lo : lo + SORT_CHUNK], minlength=top)
        order = _stable_order(key, counts)
    else:
        order = np.argsort(key, kind="stable").astype(_index_dtype(len(key)))
        counts = np.unique(key, return_counts=True)[1]
    ends = np.cumsum(counts[counts > 0])
    start = 0
    for end in ends.tolist():
        if end - start > 1:
            rng.shuffle(order[start:end])
        start = end
    return order


COUNTING_SORT_KEYS = 1 << 22
"""Up to this many distinct (source, target) length keys, the length order is a counting sort."""

SORT_CHUNK = 1 << 18


def _index_dtype(n: int) -> type[np.signedinteger[Any]]:
    return np.int32 if n < 2**31 else np.int64


def _stable_order(key: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`np.argsort(key, kind="stable")` in int32, without its int64 array the size of the corpus
    (96 MB at 12M sentences): each chunk of sentences is sorted alone and placed after the
    earlier chunks' sentences of the same key."""
    order = np.empty(len(key), dtype=_index_dtype(len(key)))
    free = np.cumsum(counts) - counts  # next free slot of each key
    for lo in range(0, len(key), SORT_CHUNK):
        part = key[lo : lo + SORT_CHUNK]
        local = np.argsort(part, kind="stable")
        sorted_keys = part[local]
        chunk_counts = np.bincount(part, minlength=len(counts))
        first = np.cumsum(chunk_counts) - chunk_counts  # each key's first place in the chunk
        dest = free[sorted_keys] + (np.arange(len(part)) - first[sorted_keys])
        order[dest] = local + lo
        free += chunk_counts
    return order


def _budget_starts(widths: np.ndarray, budget: int) -> np.ndarray:
    """Batch boundaries of a greedy cut: a sentence joins the batch while (widest so far) x
    (sentences) stays within `budget`; every batch holds at least one sentence.

    In the length order, widths rise within runs (one per source length). Inside a run the
    widest is the last, so sentence e can end a batch that starts at s iff s >= last[e] =
    e + 1 - budget // widths[e], and `last` rises with e: one binary search per batch. A batch
    that reaches its run's end takes `_budget_count` (a running maximum) instead.
    """
    n = len(widths)
    ends = np.append(np.flatnonzero(widths[1:] < widths[:-1]) + 1, n).tolist()
    dt = np.int32 if n + budget < 2**31 else np.int64
    last = np.arange(1, n + 1, dtype=dt) - (budget // widths).astype(dt)
    starts = [0]
    s = run = 0
    while s < n:
        while ends[run] <= s:
            run += 1
        e = s + int(np.searchsorted(last[s : ends[run]], s, side="right"))
        s = max(e, s + 1) if e < ends[run] else s + _budget_count(widths[s:], budget)
        starts.append(s)
    return np.array(starts, dtype=np.int64)


def _budget_count(widths: np.ndarray, budget: int) -> int:
    """How many of `widths`' first sentences the greedy cut puts in one batch (at least 1)."""
    w = widths[: budget // max(1, int(widths[0])) + 1]  # no batch outgrows its first width
    fits = np.maximum.accumulate(w).astype(np.int64) * np.arange(1, len(w) + 1) <= budget
    over = np.flatnonzero(~fits)
    return max(1, int(over[0]) if len(over) else len(w))


def legacy_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, cfg: BatchingConfig, epoch: int
) -> list[np.ndarray]:
    """The batch order of nbest_rescore before the prepared corpus (`BATCH_ORDER` 1: Python's
    `random.Random`), so that its checkpoints resume exactly. It holds Python lists of every
    sentence: those runs were small (they held their whole corpus in Python)."""
    src, tgt = src_lens.tolist(), tgt_lens.tolist()
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    order = list(range(len(src)))
    rng.shuffle(order)
    order.sort(key=lambda i: (src[i], tgt[i]))
    batches: list[list[int]] = []
    if cfg.batch_tokens is None:
        batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    else:
        cur: list[int] = []
        longest = 0
        for i in order:
            width = src[i] + tgt[i] + 1
            if cur and max(longest, width) * (len(cur) + 1) > cfg.batch_tokens:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, width)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return [np.array(b, dtype=np.int64) for b in batches]


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors: `src` (B, S), `src_len` (B,), `tgt_out` = y_1..y_n EOS (B, T)."""

    src: Tensor
    src_len: Tensor
    tgt_out: Tensor

    @property
    def n_sentences(self) -> int:
        return int(self.src.size(0))

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.src_len.to(device), self.tgt_out.to(device))


def collate(
    corpus: EncodedCorpus, indices: Sequence[int] | np.ndarray, *, reverse_target: bool = False
) -> Batch:
    """Pad the chosen sentences into a `Batch` (EOS appended to every target, after the target
    is read backwards when `reverse_target`). Touches only those sentences' rows."""
    import torch

    rows = np.asarray(indices, dtype=np.int64)
    src = corpus.src.padded(rows)
    tgt = corpus.tgt.padded(rows, reverse=reverse_target, room=1)
    tgt[np.arange(len(rows)), corpus.tgt.lengths[rows].astype(np.int64)] = EOS
    src_len = corpus.src.lengths[rows].astype(np.int64)
    return Batch(torch.from_numpy(src), torch.from_numpy(src_len), torch.from_numpy(tgt))


def shard(indices: Sequence[int] | np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch (slices differ by at most one sentence)."""
    arr = np.asarray(indices)
    n = len(arr)
    return arr[(n * rank) // world_size : (n * (rank + 1)) // world_size]
