"""Parallel corpora for training: aligned reading, tokenisation, length filtering, bucketed batches.

Source reversal is NOT done here: it is part of the model (`ModelConfig.reverse_source`).
Batch order is a pure function of (seed, epoch), so a data position is just (epoch, batch index).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, atomic_write, open_binary, read_lines, sha256_file
from nbest_rescore.text import TokenizerConfig, tokenize
from nbest_rescore.vocab import EOS, PAD, Vocab

Sentence = list[str]


def read_parallel(src_path: PathLike, tgt_path: PathLike) -> tuple[list[str], list[str]]:
    """Read two aligned files (plain or .gz) line by line; mismatched lengths are an `InputError`.

    The error names both files and the first line number that one file has and the other lacks.
    """
    src = read_lines(src_path)
    tgt = read_lines(tgt_path)
    if len(src) != len(tgt):
        short, long_ = (src_path, tgt_path) if len(src) < len(tgt) else (tgt_path, src_path)
        first_missing = min(len(src), len(tgt)) + 1
        raise InputError(
            f"parallel files differ in length: {src_path} has {len(src)} lines, {tgt_path} has "
            f"{len(tgt)}; {short} ends before line {first_missing} of {long_}",
            str(short),
            first_missing,
        )
    if not src:
        raise InputError(f"empty corpus (no lines in {src_path} and {tgt_path})", str(src_path))
    return src, tgt


def tokenize_lines(
    lines: Sequence[str], cfg: TokenizerConfig | None, *, path: PathLike = ""
) -> list[Sentence]:
    """Tokenise raw lines with `text.tokenize`; `cfg=None` means already tokenised (split on spaces)."""
    if cfg is None:
        return [line.split() for line in lines]
    out: list[Sentence] = []
    for i, line in enumerate(lines, start=1):
        try:
            out.append(tokenize(line, cfg))
        except Exception as exc:  # sacremoses failures are rare; locate them for the user
            raise InputError(f"cannot tokenise line: {exc}", str(path) or None, i) from exc
    return out


def tokenize_file_cached(
    path: PathLike, cfg: TokenizerConfig | None, cache_dir: PathLike | None
) -> list[Sentence]:
    """Tokenised lines of `path`, cached in `cache_dir` keyed by the file's hash and the settings."""
    lines = read_lines(path)
    if cache_dir is None:
        return tokenize_lines(lines, cfg, path=path)
    settings = json.dumps(cfg.to_dict() if cfg else None, sort_keys=True)
    key = hashlib.sha256(f"{sha256_file(path, length=64)}|{settings}".encode()).hexdigest()[:24]
    cache = Path(cache_dir) / f"{Path(path).name}.{key}.tok.gz"
    if cache.is_file():
        with open_binary(cache) as fh:
            cached = [raw.decode("utf-8").rstrip("\n").split(" ") for raw in fh]
        cached = [[t for t in s if t] for s in cached]
        if len(cached) == len(lines):
            return cached
    toks = tokenize_lines(lines, cfg, path=path)
    with atomic_write(cache) as fh:
        for sent in toks:
            fh.write(" ".join(sent) + "\n")
    return toks


@dataclass(frozen=True)
class FilterStats:
    """What length filtering removed (reported in the training log, never silent)."""

    total: int
    kept: int
    empty: int
    too_long: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def filter_by_length(
    src: Sequence[Sentence],
    tgt: Sequence[Sentence],
    max_len: int | None,
    *,
    drop_empty: bool = True,
) -> tuple[list[int], FilterStats]:
    """Indices of pairs with both sides non-empty and at most `max_len` tokens, and the counts."""
    keep: list[int] = []
    empty = too_long = 0
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        if drop_empty and (not s or not t):
            empty += 1
        elif max_len is not None and (len(s) > max_len or len(t) > max_len):
            too_long += 1
        else:
            keep.append(i)
    return keep, FilterStats(total=len(src), kept=len(keep), empty=empty, too_long=too_long)


@dataclass(frozen=True)
class EncodedCorpus:
    """Sentence pairs as id lists (no BOS/EOS; EOS is added when batching)."""

    src: list[list[int]]
    tgt: list[list[int]]

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def encode(
        cls,
        src: Sequence[Sentence],
        tgt: Sequence[Sentence],
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        indices: Sequence[int] | None = None,
    ) -> EncodedCorpus:
        idx = range(len(src)) if indices is None else indices
        return cls(
            src=[src_vocab.encode(src[i]) for i in idx], tgt=[tgt_vocab.encode(tgt[i]) for i in idx]
        )

    def n_tokens(self) -> tuple[int, int]:
        """Source words and target words (without EOS), as the paper counts words."""
        return sum(map(len, self.src)), sum(map(len, self.tgt))


@dataclass(frozen=True)
class BatchingConfig:
    """Minibatches of similar-length sentences: `batch_size` sentences, or a token budget."""

    batch_size: int = 128
    batch_tokens: int | None = None
    """When set, batches hold as many sentences as fit in this many padded target+source tokens."""
    seed: int = 1


def make_batches(corpus: EncodedCorpus, cfg: BatchingConfig, epoch: int) -> list[list[int]]:
    """The epoch's batches (lists of sentence indices), deterministic in (seed, epoch).

    Sentences are shuffled, sorted by length (stable, so ties stay shuffled), cut into batches of
    similar length, and the batches are shuffled.
    """
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    order.sort(key=lambda i: (len(corpus.src[i]), len(corpus.tgt[i])))
    batches: list[list[int]] = []
    if cfg.batch_tokens is None:
        for start in range(0, len(order), cfg.batch_size):
            batches.append(order[start : start + cfg.batch_size])
    else:
        cur: list[int] = []
        longest = 0
        for i in order:
            width = len(corpus.src[i]) + len(corpus.tgt[i]) + 1
            if cur and max(longest, width) * (len(cur) + 1) > cfg.batch_tokens:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, width)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


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


def collate(corpus: EncodedCorpus, indices: Sequence[int]) -> Batch:
    """Pad the chosen sentences into a `Batch` (EOS appended to every target)."""
    srcs = [corpus.src[i] for i in indices]
    tgts = [[*corpus.tgt[i], EOS] for i in indices]
    s_max = max(1, max(len(s) for s in srcs))
    t_max = max(len(t) for t in tgts)
    src = torch.full((len(srcs), s_max), PAD, dtype=torch.long)
    tgt = torch.full((len(tgts), t_max), PAD, dtype=torch.long)
    for b, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
        if s:
            src[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    src_len = torch.tensor([len(s) for s in srcs], dtype=torch.long)
    return Batch(src, src_len, tgt)


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous slice of a global batch (slices differ by at most one sentence)."""
    n = len(indices)
    start = (n * rank) // world_size
    end = (n * (rank + 1)) // world_size
    return list(indices[start:end])


def oov_rates(vocab: Vocab, sentences: Sequence[Sentence]) -> dict[str, float]:
    """Running-token OOV rate and type OOV rate of `sentences` under `vocab`."""
    types = {t for s in sentences for t in s}
    type_oov = sum(1 for t in types if t not in vocab.stoi) / len(types) if types else 0.0
    return {"token": vocab.oov_rate(sentences), "type": type_oov}
