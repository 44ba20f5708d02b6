"""Parallel corpus reading, tokenisation, filtering and batching (nbest_rescore.data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nbest_rescore.data import (
    BatchingConfig,
    EncodedCorpus,
    collate,
    filter_by_length,
    make_batches,
    read_parallel,
    shard,
    tokenize_file_cached,
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


def test_read_parallel_plain_and_gz_agree(tmp_path: Path) -> None:
    src = ["a b", "c d e", "f"]
    tgt = ["A B", "C D E", "F"]
    plain = read_parallel(_write(tmp_path / "s.txt", src), _write(tmp_path / "t.txt", tgt))
    gz = read_parallel(_write(tmp_path / "s.gz", src), _write(tmp_path / "t.gz", tgt))
    assert plain == gz == (src, tgt)


@pytest.mark.parametrize("longer", ["src", "tgt"])
def test_mismatched_lengths_name_both_files_and_line(tmp_path: Path, longer: str) -> None:
    five = [f"line {i}" for i in range(5)]
    three = five[:3]
    s = _write(tmp_path / "corpus.en", five if longer == "src" else three)
    t = _write(tmp_path / "corpus.fr.gz", three if longer == "src" else five)
    with pytest.raises(InputError) as err:
        read_parallel(s, t)
    msg = str(err.value)
    assert str(s) in msg and str(t) in msg
    assert err.value.line == 4
    assert err.value.path == str(t if longer == "src" else s)


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    s = _write(tmp_path / "empty.en", [])
    t = _write(tmp_path / "empty.fr", [])
    with pytest.raises(InputError, match="empty corpus") as err:
        read_parallel(s, t)
    assert str(s) in str(err.value)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    s = tmp_path / "bad.en"
    s.write_bytes(b"ok\n\xff\xfe broken\n")
    t = _write(tmp_path / "ok.fr", ["a", "b"])
    with pytest.raises(InputError) as err:
        read_parallel(s, t)
    assert err.value.path == str(s) and err.value.line == 2


@pytest.mark.skipif(not (MULTI30K / "val.en.gz").is_file(), reason="Multi30k not available")
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_raw_tokenisation_reproduces_moses_tok_files(tmp_path: Path, lang: str) -> None:
    """text.py with escape=False gives exactly the tokens Moses saw (first 200 val lines)."""
    raw = gzip.open(MULTI30K / f"val.{lang}.gz", "rt", encoding="utf-8").read().splitlines()[:200]
    ref = gzip.open(MULTI30K / f"val.tok.{lang}.gz", "rt", encoding="utf-8").read().splitlines()
    path = _write(tmp_path / f"val200.{lang}", raw)
    toks = tokenize_file_cached(path, TokenizerConfig(lang=lang), tmp_path / "cache")
    assert [" ".join(t) for t in toks] == [" ".join(r.split()) for r in ref[:200]]
    # The second call is served from the cache and agrees.
    assert list((tmp_path / "cache").iterdir())
    assert tokenize_file_cached(path, TokenizerConfig(lang=lang), tmp_path / "cache") == toks


def test_cache_key_depends_on_content(tmp_path: Path) -> None:
    cfg = TokenizerConfig(lang="en")
    p = _write(tmp_path / "x.en", ["Hello, world!"])
    assert tokenize_file_cached(p, cfg, tmp_path / "c") == [["Hello", ",", "world", "!"]]
    _write(p, ["Good-bye."])
    assert tokenize_file_cached(p, cfg, tmp_path / "c") == [["Good-bye", "."]]


def test_length_filter_counts_what_it_drops() -> None:
    src = [["a"] * 3, [], ["a"] * 9, ["a"] * 2, ["a"] * 4]
    tgt = [["b"] * 3, ["b"], ["b"] * 2, ["b"] * 11, []]
    keep, stats = filter_by_length(src, tgt, max_len=8)
    assert keep == [0]
    assert (stats.total, stats.kept, stats.empty, stats.too_long) == (5, 1, 2, 2)
    keep_all, stats_all = filter_by_length(src, tgt, max_len=None)
    assert keep_all == [0, 2, 3] and stats_all.too_long == 0


def _corpus(n: int, seed: int = 0) -> EncodedCorpus:
    import random

    rng = random.Random(seed)
    src = [[rng.randint(4, 20) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    tgt = [[rng.randint(4, 20) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    return EncodedCorpus(src, tgt)


def test_batches_cover_corpus_once_and_are_deterministic() -> None:
    corpus = _corpus(1000)
    cfg = BatchingConfig(batch_size=128, seed=7)
    b0 = make_batches(corpus, cfg, epoch=0)
    assert sorted(i for b in b0 for i in b) == list(range(1000))
    assert all(len(b) == 128 for b in b0 if len(b) != 1000 % 128)
    assert make_batches(corpus, cfg, epoch=0) == b0
    assert make_batches(corpus, cfg, epoch=1) != b0
    assert make_batches(corpus, BatchingConfig(batch_size=128, seed=8), epoch=0) != b0


def test_batches_group_similar_source_lengths() -> None:
    corpus = _corpus(2000)
    batches = make_batches(corpus, BatchingConfig(batch_size=64, seed=1), epoch=0)
    spreads = [
        max(len(corpus.src[i]) for i in b) - min(len(corpus.src[i]) for i in b) for b in batches
    ]
    # Source lengths span 1..30; sorted batches of 64 from 2000 sentences span at most 2.
    assert max(spreads) <= 2


def test_token_budget_batches_respect_budget() -> None:
    corpus = _corpus(500)
    cfg = BatchingConfig(batch_tokens=300, seed=3)
    batches = make_batches(corpus, cfg, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        width = max(len(corpus.src[i]) + len(corpus.tgt[i]) + 1 for i in b)
        assert len(b) == 1 or width * len(b) <= 300


def test_collate_pads_appends_eos_and_does_not_reverse() -> None:
    corpus = EncodedCorpus(src=[[5, 6, 7], [8]], tgt=[[9], [10, 11]])
    b = collate(corpus, [0, 1])
    assert b.src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert b.src_len.tolist() == [3, 1]
    assert b.tgt_out.tolist() == [[9, EOS, PAD], [10, 11, EOS]]


@pytest.mark.parametrize("n", [1, 2, 7, 128])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_partition_the_global_batch(n: int, world: int) -> None:
    batch = list(range(100, 100 + n))
    parts = [shard(batch, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == batch
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
