"""Parallel corpus streaming, tokenisation, filtering and batching (nbest_rescore.data)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbest_rescore.data as data_module
from nbest_rescore.corpus import EncodedCorpus
from nbest_rescore.data import (
    BatchingConfig,
    _budget_starts,
    check_parallel,
    collate,
    iter_parallel,
    legacy_batches,
    length_filter,
    make_batches,
    shard,
    tokenize_lines,
)
from nbest_rescore.errors import InputError
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import EOS, PAD

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"


def _write(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _read_parallel(src: Path, tgt: Path, size: int = 2) -> tuple[list[str], list[str]]:
    check_parallel(src, tgt)
    chunks = list(iter_parallel(src, tgt, size))
    assert [c.first_line for c in chunks] == list(range(1, 1 + size * len(chunks), size))
    return [s for c in chunks for s in c.src], [t for c in chunks for t in c.tgt]


def test_read_parallel_plain_and_gz_agree(tmp_path: Path) -> None:
    src = ["a b", "c d e", "f"]
    tgt = ["A B", "C D E", "F"]
    plain = _read_parallel(_write(tmp_path / "s.txt", src), _write(tmp_path / "t.txt", tgt))
    gz = _read_parallel(_write(tmp_path / "s.gz", src), _write(tmp_path / "t.gz", tgt))
    assert plain == gz == (src, tgt)
    # a last line without its newline is a line
    (tmp_path / "u.txt").write_bytes(b"a b\nc d e\nf")
    assert _read_parallel(tmp_path / "u.txt", tmp_path / "t.gz") == (src, tgt)


@pytest.mark.parametrize("longer", ["src", "tgt"])
def test_mismatched_lengths_name_both_files_and_line(tmp_path: Path, longer: str) -> None:
    five = [f"line {i}" for i in range(5)]
    three = five[:3]
    s = _write(tmp_path / "corpus.en", five if longer == "src" else three)
    t = _write(tmp_path / "corpus.fr.gz", three if longer == "src" else five)
    with pytest.raises(InputError) as err:
        check_parallel(s, t)
    msg = str(err.value)
    assert str(s) in msg and str(t) in msg
    assert err.value.line == 4
    assert err.value.path == str(t if longer == "src" else s)


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    s = _write(tmp_path / "empty.en", [])
    t = _write(tmp_path / "empty.fr", [])
    with pytest.raises(InputError, match="empty corpus") as err:
        check_parallel(s, t)
    assert str(s) in str(err.value)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    s = tmp_path / "bad.en"
    s.write_bytes(b"ok\n\xff\xfe broken\n")
    t = _write(tmp_path / "ok.fr", ["a", "b"])
    with pytest.raises(InputError) as err:
        _read_parallel(s, t)
    assert err.value.path == str(s) and err.value.line == 2


@pytest.mark.skipif(not (MULTI30K / "val.en.gz").is_file(), reason="Multi30k not available")
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_raw_tokenisation_reproduces_moses_tok_files(lang: str) -> None:
    """text.py with escape=False gives exactly the tokens Moses saw (first 200 val lines)."""
    raw = gzip.open(MULTI30K / f"val.{lang}.gz", "rt", encoding="utf-8").read().splitlines()[:200]
    ref = gzip.open(MULTI30K / f"val.tok.{lang}.gz", "rt", encoding="utf-8").read().splitlines()
    toks = tokenize_lines(raw, TokenizerConfig(lang=lang))
    assert [" ".join(t) for t in toks] == [" ".join(r.split()) for r in ref[:200]]


def test_length_filter_counts_what_it_drops() -> None:
    src = np.array([3, 0, 9, 2, 4])
    tgt = np.array([3, 1, 2, 11, 0])
    keep, stats = length_filter(src, tgt, max_len=8)
    assert np.flatnonzero(keep).tolist() == [0]
    assert (stats.total, stats.kept, stats.empty, stats.too_long) == (5, 1, 2, 2)
    keep_all, stats_all = length_filter(src, tgt, max_len=None)
    assert np.flatnonzero(keep_all).tolist() == [0, 2, 3] and stats_all.too_long == 0
    assert (stats + stats_all).total == 10 and (stats + stats_all).kept == 4
    keep_valid, _ = length_filter(src, tgt, max_len=None, drop_empty=False)
    assert keep_valid.all()


def _corpus(n: int, seed: int = 0, longest: int = 30) -> EncodedCorpus:
    rng = random.Random(seed)
    src = [[rng.randint(4, 20) for _ in range(rng.randint(1, longest))] for _ in range(n)]
    tgt = [[rng.randint(4, 20) for _ in range(rng.randint(1, longest))] for _ in range(n)]
    return EncodedCorpus.from_lists(src, tgt)


def _batches(corpus: EncodedCorpus, cfg: BatchingConfig, epoch: int) -> list[list[int]]:
    b = make_batches(corpus.src.lengths, corpus.tgt.lengths, cfg, epoch)
    return [b[k].tolist() for k in range(len(b))]


def test_batches_cover_corpus_once_and_are_deterministic() -> None:
    corpus = _corpus(1000)
    cfg = BatchingConfig(batch_size=128, seed=7)
    b0 = _batches(corpus, cfg, epoch=0)
    assert sorted(i for b in b0 for i in b) == list(range(1000))
    assert all(len(b) == 128 for b in b0 if len(b) != 1000 % 128)
    assert _batches(corpus, cfg, epoch=0) == b0
    assert _batches(corpus, cfg, epoch=1) != b0
    assert _batches(corpus, BatchingConfig(batch_size=128, seed=8), epoch=0) != b0


def test_batches_group_similar_source_lengths() -> None:
    corpus = _corpus(2000)
    batches = _batches(corpus, BatchingConfig(batch_size=64, seed=1), epoch=0)
    spreads = [
        max(len(corpus.src[i]) for i in b) - min(len(corpus.src[i]) for i in b) for b in batches
    ]
    # Source lengths span 1..30; sorted batches of 64 from 2000 sentences span at most 2.
    assert max(spreads) <= 2


def test_sentences_of_equal_lengths_stay_shuffled() -> None:
    """The sort by length is stable over a shuffled order: equal lengths differ per epoch."""
    corpus = EncodedCorpus.from_lists([[5, 6]] * 300, [[7]] * 300)
    cfg = BatchingConfig(batch_size=300, seed=1)
    (e0,), (e1,) = _batches(corpus, cfg, 0), _batches(corpus, cfg, 1)
    assert sorted(e0) == list(range(300)) and e0 != e1 and e0 != sorted(e0)


@pytest.mark.parametrize("budget", [1, 40, 300])
def test_token_budget_batches_respect_budget(budget: int) -> None:
    corpus = _corpus(500)
    batches = _batches(corpus, BatchingConfig(batch_tokens=budget, seed=3), epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        width = max(len(corpus.src[i]) + len(corpus.tgt[i]) + 1 for i in b)
        assert len(b) == 1 or width * len(b) <= budget
    # greedy: each batch but the last could not take the next sentence of the length order
    assert len(batches) < 500 or budget == 1


def _old_make_batches(corpus: EncodedCorpus, cfg: BatchingConfig, epoch: int) -> list[list[int]]:
    """`data.make_batches` as it was before the prepared corpus (git history), verbatim but for
    reading lengths from the arrays: the order that old checkpoints must resume in."""
    src = [len(corpus.src[i]) for i in range(len(corpus))]
    tgt = [len(corpus.tgt[i]) for i in range(len(corpus))]
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    order.sort(key=lambda i: (src[i], tgt[i]))
    batches: list[list[int]] = []
    if cfg.batch_tokens is None:
        for start in range(0, len(order), cfg.batch_size):
            batches.append(order[start : start + cfg.batch_size])
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
    return batches


@pytest.mark.parametrize("cfg", [BatchingConfig(batch_size=32, seed=5),
                                 BatchingConfig(batch_tokens=200, seed=2)])  # fmt: skip
def test_legacy_order_is_the_old_one_and_the_budget_cuts_agree(cfg: BatchingConfig) -> None:
    corpus = _corpus(700, seed=4)
    for epoch in (0, 3):
        old = _old_make_batches(corpus, cfg, epoch)
        legacy = legacy_batches(corpus.src.lengths, corpus.tgt.lengths, cfg, epoch)
        assert [b.tolist() for b in legacy] == old
    assert _batches(corpus, cfg, 0) != _old_make_batches(corpus, cfg, 0)  # the new order


@pytest.mark.parametrize("budget", [1, 7, 50, 400])
def test_vectorised_budget_cut_is_the_greedy_loop(budget: int) -> None:
    widths = np.random.default_rng(budget).integers(3, 60, size=3000).astype(np.int32)
    starts, longest = [0], 0
    for k, w in enumerate(widths.tolist()):
        n = k - starts[-1]
        if n and max(longest, w) * (n + 1) > budget:
            starts.append(k)
            longest = 0
        longest = max(longest, w)
    assert _budget_starts(widths, budget).tolist() == [*starts, len(widths)]


def test_collate_pads_appends_eos_and_does_not_reverse() -> None:
    corpus = EncodedCorpus.from_lists(src=[[5, 6, 7], [8], []], tgt=[[9], [10, 11], [12]])
    b = collate(corpus, [0, 1])
    assert b.src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert b.src_len.tolist() == [3, 1]
    assert b.tgt_out.tolist() == [[9, EOS, PAD], [10, 11, EOS]]
    r2l = collate(corpus, np.array([1, 0, 2]), reverse_target=True)
    assert r2l.tgt_out.tolist() == [[11, 10, EOS], [9, EOS, PAD], [12, EOS, PAD]]
    assert r2l.src.tolist()[2] == [PAD, PAD, PAD] and r2l.src_len.tolist() == [1, 3, 0]
    assert collate(corpus, [2]).src.tolist() == [[PAD]]  # an empty source is one PAD wide


@pytest.mark.parametrize("n", [1, 2, 7, 128])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_partition_the_global_batch(n: int, world: int) -> None:
    batch = np.arange(100, 100 + n)
    parts = [shard(batch, r, world) for r in range(world)]
    assert [int(i) for p in parts for i in p] == batch.tolist()
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=300),
    chunk=st.integers(1, 64),
    epoch=st.integers(0, 3),
)
def test_the_chunked_counting_sort_orders_like_a_stable_argsort(
    lengths: list[tuple[int, int]], chunk: int, epoch: int
) -> None:
    """The length order is built in chunks (no int64 array the size of the corpus); with any
    chunk size the batches are those of one stable argsort of the whole key."""
    src = np.array([s for s, _ in lengths], dtype=np.uint8)
    tgt = np.array([t for _, t in lengths], dtype=np.uint8)
    key = src.astype(np.int64) * (int(tgt.max(initial=0)) + 1) + tgt
    counts = np.bincount(key, minlength=int(key.max(initial=0)) + 1)
    original = data_module.SORT_CHUNK
    try:
        data_module.SORT_CHUNK = chunk
        got = data_module._stable_order(key, counts)
        chunked = make_batches(src, tgt, BatchingConfig(batch_size=7, seed=3), epoch)
    finally:
        data_module.SORT_CHUNK = original
    assert got.dtype == np.int32 and got.tolist() == np.argsort(key, kind="stable").tolist()
    whole = make_batches(src, tgt, BatchingConfig(batch_size=7, seed=3), epoch)
    assert [b.tolist() for b in chunked] == [b.tolist() for b in whole]
