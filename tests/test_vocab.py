"""Vocabularies (nbest_rescore.vocab) built from the real tokenised Multi30k references, checked
against a brute-force count of the same tokens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbest_rescore.fileio import read_lines
from nbest_rescore.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

TOK_REF = Path(__file__).parent / "data" / "test2016.head30.tok.fr.gz"


def corpus() -> list[list[str]]:
    return [line.split() for line in read_lines(TOK_REF)]


def brute_force_ranking(sentences: list[list[str]], min_count: int) -> list[str]:
    """Words seen >= min_count times, most frequent first, ties alphabetical."""
    counts = Counter(t for s in sentences for t in s)
    kept = [t for t, c in counts.items() if c >= min_count]
    return sorted(kept, key=lambda t: (-counts[t], t))


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_most_frequent_first_with_min_count(min_count: int) -> None:
    sents = corpus()
    v = Vocab.build(sents, min_count=min_count)
    assert v.itos[: len(SPECIALS)] == SPECIALS
    assert list(v.itos[len(SPECIALS) :]) == brute_force_ranking(sents, min_count)


def test_max_size_counts_the_specials_and_keeps_the_top_words() -> None:
    sents = corpus()
    v = Vocab.build(sents, max_size=20)
    assert len(v) == 20
    assert list(v.itos[4:]) == brute_force_ranking(sents, 1)[:16]
    assert len(Vocab.build(sents, max_size=2)) == len(SPECIALS)  # never fewer than the specials


def test_from_counts_equals_build() -> None:
    sents = corpus()
    counts = Counter(t for s in sents for t in s)
    assert Vocab.from_counts(counts, max_size=50, min_count=2) == Vocab.build(
        sents, max_size=50, min_count=2
    )


def test_to_list_from_list_round_trip() -> None:
    v = Vocab.build(corpus())
    back = Vocab.from_list(v.to_list())
    assert back == v and back.stoi == v.stoi
    assert all(back.stoi[t] == i for i, t in enumerate(v.itos))


def test_unknown_words_map_to_unk_and_decode_strips_specials() -> None:
    sents = corpus()
    v = Vocab.build(sents, min_count=2)
    rare = set(Counter(t for s in sents for t in s)) - set(v.itos)
    assert rare
    for s in sents:
        ids = v.encode(s)
        assert [i == UNK for i in ids] == [t in rare for t in s]
        assert v.decode(ids) == [t if t not in rare else "<unk>" for t in s]
    full = Vocab.build(sents)
    ids = full.encode(sents[0])
    assert full.decode([BOS, *ids, EOS, *ids, PAD]) == sents[0]  # stops at EOS, drops BOS
    assert full.decode([BOS, ids[0], EOS], strip_specials=False) == ["<s>", sents[0][0], "</s>"]


def test_oov_rate_is_the_fraction_of_unknown_running_words() -> None:
    sents = corpus()
    v = Vocab.build(sents[:15])
    tokens = [t for s in sents[15:] for t in s]
    assert v.oov_rate(sents[15:]) == pytest.approx(
        sum(t not in v.itos for t in tokens) / len(tokens)
    )
    assert v.oov_rate(sents[:15]) == 0.0 and v.oov_rate([]) == 0.0


def test_specials_first_and_no_duplicates() -> None:
    with pytest.raises(ValueError, match="specials"):
        Vocab(("a", *SPECIALS))
    with pytest.raises(ValueError, match="duplicate"):
        Vocab((*SPECIALS, "chat", "chat"))
    assert Vocab.build([["<unk>", "<s>", "chat"]]).itos == (*SPECIALS, "chat")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=8), max_size=8))
def test_encode_decode_round_trip(sentences: list[list[str]]) -> None:
    v = Vocab.build(sentences)
    for s in sentences:
        assert UNK not in v.encode(s)
        assert v.decode(v.encode(s)) == s
