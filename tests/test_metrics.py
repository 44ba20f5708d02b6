"""BLEU on sufficient statistics against sacrebleu itself (API and CLI), on real Multi30k data."""

from __future__ import annotations

import dataclasses
import gzip
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.significance import PairedTest

from nbest_rescore.errors import InputError
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    bleu_of_selection,
    chrf,
    compute_hyp_stats,
    corpus_bleu,
    corpus_bleu_from_stats,
    corpus_bleu_many,
    corpus_stats,
    detokenize_moses,
    hypothesis_text,
    ngram_stats,
    paired_bootstrap,
    sentence_bleu_many,
    sentence_stats,
    signature,
)
from nbest_rescore.nbest_reader import NBestGroup, read_nbest

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
CONFIGS = {"none": BleuConfig(tokenize="none"), "13a": BleuConfig(tokenize="13a")}


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
        return [line.rstrip("\n") for line in fh]


def refs_for(tok: str) -> list[str]:
    return lines(DATA / ("test2016.head30.tok.fr.gz" if tok == "none" else "test2016.head30.fr.gz"))


GROUPS = list(read_nbest(NBEST))


def texts_of(groups: list[NBestGroup], config: BleuConfig) -> list[list[str]]:
    """The strings sacrebleu scores, per sentence and hypothesis."""
    return [[hypothesis_text(h.tokens, config) for h in g.hyps] for g in groups]


@pytest.fixture(scope="module", params=["none", "13a"])
def slice_stats(request: pytest.FixtureRequest) -> tuple[HypStats, list[list[str]], list[str]]:
    config = CONFIGS[request.param]
    refs = refs_for(request.param)
    return compute_hyp_stats(GROUPS, refs, config), texts_of(GROUPS, config), refs


def random_selections(hs: HypStats, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sels = [hs.one_best(), hs.counts - 1]
    sels += [rng.integers(0, hs.counts) for _ in range(n)]
    return sels


# ----------------------------------------------------------------------------- detokenization


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Multi30k data not present")
@pytest.mark.parametrize("name", ["test2016", "val"])
def test_detokenize_reproduces_shared_detok_files(name: str) -> None:
    tok = lines(SHARED / f"{name}.moses.1best.gz")
    detok = lines(SHARED / f"{name}.moses.1best.detok.gz")
    assert [detokenize_moses(t.split(), "fr") for t in tok] == detok


def test_hypothesis_text_modes() -> None:
    toks = ("Un", "chien", "d'", "hiver", ".")
    assert hypothesis_text(toks, CONFIGS["none"]) == "Un chien d' hiver ."
    assert hypothesis_text(toks, CONFIGS["13a"]) == detokenize_moses(list(toks), "fr")
    assert hypothesis_text((), CONFIGS["13a"]) == ""


def test_unknown_tokenizer_is_input_error() -> None:
    with pytest.raises(InputError):
        BleuConfig(tokenize="nope")


def test_signature_is_sacrebleus() -> None:
    for tok, config in CONFIGS.items():
        metric = BLEU(tokenize=tok)
        metric.corpus_score(["a b"], [["a b"]])
        assert signature(config) == metric.get_signature().format()
        assert f"tok:{tok}" in signature(config)
    assert "case:lc" in signature(BleuConfig(lowercase=True))


# ----------------------------------------------------------------------------- statistics


def test_rows_equal_sacrebleu_segment_statistics(slice_stats: tuple) -> None:
    hs, texts, refs = slice_stats
    metric = BLEU(tokenize=hs.config.tokenize)
    expected = [
        metric._extract_corpus_statistics(t, [[r] * len(t)])
        for t, r in zip(texts, refs, strict=True)
    ]
    np.testing.assert_array_equal(hs.stats, np.concatenate([np.array(e) for e in expected]))
    assert hs.n_sentences == 30 and hs.n_hypotheses == 591 and not hs.missing.any()


def test_corpus_bleu_of_selections_equals_sacrebleu(slice_stats: tuple) -> None:
    hs, texts, refs = slice_stats
    metric = BLEU(tokenize=hs.config.tokenize)
    for sel in random_selections(hs, 20):
        hyps = [texts[i][j] for i, j in enumerate(sel.tolist())]
        expected = metric.corpus_score(hyps, [refs])
        got = bleu_of_selection(hs, sel)
        assert math.isclose(got.score, expected.score, rel_tol=0, abs_tol=1e-9)
        assert got.counts == expected.counts and got.totals == expected.totals
        assert (got.sys_len, got.ref_len) == (expected.sys_len, expected.ref_len)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Multi30k data not present")
@pytest.mark.parametrize(
    ("tok", "hyp_file", "ref_file"),
    [
        ("none", "test2016.moses.1best.gz", "test_2016_flickr.tok.fr.gz"),
        ("13a", "test2016.moses.1best.detok.gz", "test_2016_flickr.fr.gz"),
    ],
)
def test_full_1best_parity(tok: str, hyp_file: str, ref_file: str) -> None:
    hyps, refs = lines(SHARED / hyp_file), lines(SHARED / ref_file)
    rows = corpus_stats(hyps, refs, CONFIGS[tok])
    expected = sacrebleu.BLEU(tokenize=tok).corpus_score(hyps, [refs]).score
    assert math.isclose(corpus_bleu_from_stats(rows.sum(0)), expected, abs_tol=1e-9)
    assert math.isclose(corpus_bleu(hyps, refs, CONFIGS[tok]).score, expected, abs_tol=1e-9)


def test_cli_parity(tmp_path: Path, slice_stats: tuple) -> None:
    """The score of a real selection equals `sacrebleu REF -i HYP [-tok none]` run as a program."""
    hs, texts, refs = slice_stats
    sel = random_selections(hs, 1, seed=7)[-1]
    hyp_file, ref_file = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp_file.write_text("".join(texts[i][j] + "\n" for i, j in enumerate(sel.tolist())), "utf-8")
    ref_file.write_text("".join(r + "\n" for r in refs), "utf-8")
    cmd = [sys.executable, "-m", "sacrebleu", str(ref_file), "-i", str(hyp_file), "-b", "-w", "9"]
    if hs.config.tokenize == "none":
        cmd += ["-tok", "none"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    assert math.isclose(float(out.stdout.strip()), bleu_of_selection(hs, sel).score, abs_tol=1e-9)


def test_ngram_stats_edge_cases() -> None:
    metric = BLEU(tokenize="none")
    refs = ["", "a", "a a a b", "a b a b a b", "x y z w x y z w"]
    hyps = ["", "a", "b", "a a", "a a a a a", "a b a b a b a b", "x y z w x y z", "w x y z w x"]
    for ref in refs:
        got = ngram_stats([h.split() for h in hyps], ref.split())
        want = np.array(metric._extract_corpus_statistics(hyps, [[ref] * len(hyps)]))
        np.testing.assert_array_equal(got, want)
    assert ngram_stats([], ["a"]).shape == (0, 10)


def test_sentence_stats_dedups_identical_strings() -> None:
    config = CONFIGS["none"]
    once = sentence_stats(["a b c", "a c"], "a b c d", config)
    twice = sentence_stats(["a b c", "a c", "a b c", "a c"], "a b c d", config)
    np.testing.assert_array_equal(twice, np.concatenate([once, once]))


def test_lowercase_config_matches_sacrebleu() -> None:
    config = BleuConfig(tokenize="13a", lowercase=True)
    refs = lines(DATA / "test2016.head30.fr.gz")
    hyps = [hypothesis_text(g.hyps[-1].tokens, config).upper() for g in GROUPS]
    expected = BLEU(tokenize="13a", lowercase=True).corpus_score(hyps, [refs]).score
    assert math.isclose(
        corpus_bleu_from_stats(corpus_stats(hyps, refs, config).sum(0)), expected, abs_tol=1e-9
    )


def test_workers_give_identical_result() -> None:
    refs = refs_for("13a")
    one = compute_hyp_stats(GROUPS, refs, CONFIGS["13a"])
    two = compute_hyp_stats(GROUPS, refs, CONFIGS["13a"], workers=2, chunk_sentences=4)
    np.testing.assert_array_equal(one.stats, two.stats)
    np.testing.assert_array_equal(one.offsets, two.offsets)


def test_missing_groups_are_empty_hypotheses() -> None:
    """Ids with no hypothesis (a gap, and a list ending early) score as empty output."""
    config = CONFIGS["none"]
    refs = refs_for("none")
    groups = [g for g in GROUPS[:8] if g.sent_id != 3]
    groups.insert(3, NBestGroup(sent_id=3, hyps=()))
    hs = compute_hyp_stats(groups, refs[:10], config)  # ids 8 and 9 never appear
    assert hs.missing.tolist() == [i in (3, 8, 9) for i in range(10)]
    assert hs.counts[3] == 1 and hs.n_hypotheses == sum(len(g.hyps) for g in groups)
    sel = hs.one_best()
    hyps = [" ".join(g.hyps[0].tokens) if g.hyps else "" for g in GROUPS[:10]]
    hyps[3] = hyps[8] = hyps[9] = ""
    expected = BLEU(tokenize="none").corpus_score(hyps, [refs[:10]])
    got = bleu_of_selection(hs, sel)
    assert math.isclose(got.score, expected.score, abs_tol=1e-9)
    assert got.ref_len == expected.ref_len and got.sys_len == expected.sys_len
    with pytest.raises(InputError):
        compute_hyp_stats(GROUPS, refs[:5], config)  # more sentences than references


def test_rows_rejects_bad_selection(slice_stats: tuple) -> None:
    hs = slice_stats[0]
    with pytest.raises(ValueError):
        hs.rows(hs.counts)  # one past the end everywhere
    with pytest.raises(ValueError):
        hs.rows(np.zeros(3, dtype=np.int64))


# ----------------------------------------------------------------------------- scores


def sentence_bleu_from_stats(row: np.ndarray) -> float:
    """sacrebleu's own smoothed sentence BLEU of one statistics row (the reference for
    `sentence_bleu_many`; as `sacrebleu.sentence_bleu`)."""
    s = [int(x) for x in np.asarray(row).tolist()]
    return float(
        BLEU.compute_bleu(
            correct=s[2:6], total=s[6:], sys_len=s[0], ref_len=s[1], smooth_method="exp",
            effective_order=True,
        ).score
    )  # fmt: skip


def test_sentence_bleu_parity(slice_stats: tuple) -> None:
    hs, texts, refs = slice_stats
    tok = hs.config.tokenize
    vec = sentence_bleu_many(hs.stats)
    expected = [
        sacrebleu.sentence_bleu(t, [r], tokenize=tok).score
        for ts, r in zip(texts, refs, strict=True)
        for t in ts
    ]
    np.testing.assert_allclose(vec, expected, rtol=0, atol=1e-9)
    for row, want in zip(hs.stats[::37], expected[::37], strict=True):
        assert math.isclose(sentence_bleu_from_stats(row), want, abs_tol=1e-9)


def test_sentence_bleu_edge_rows() -> None:
    cases = [("", "a b c"), ("a", "a b c"), ("z", "a b c"), ("a b", "a b"), ("c a", "a b c d e f")]
    config = CONFIGS["none"]
    for hyp, ref in cases:
        row = sentence_stats([hyp], ref, config)[0]
        want = sacrebleu.sentence_bleu(hyp, [ref], tokenize="none").score
        assert math.isclose(sentence_bleu_many(row)[0], want, abs_tol=1e-9)
        assert math.isclose(sentence_bleu_from_stats(row), want, abs_tol=1e-9)


def test_corpus_bleu_many_equals_sacrebleu(slice_stats: tuple) -> None:
    hs = slice_stats[0]
    sums = np.array([hs.totals(s) for s in random_selections(hs, 10)])
    edge = np.array([[0] * 10, [3, 5, 0, 0, 0, 0, 3, 2, 1, 0], [5, 4, 1, 0, 0, 0, 5, 4, 3, 2]])
    rows = np.concatenate([sums, edge, hs.stats[:50]])
    np.testing.assert_allclose(
        corpus_bleu_many(rows), [corpus_bleu_from_stats(r) for r in rows], rtol=1e-12, atol=1e-12
    )


def test_pieces_of_rows_keep_corpus_bleu(
    slice_stats: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above `_ROWS_AT_ONCE` rows (MERT's line search on a large dev list), every piece is still
    scored as corpus BLEU: a row with no 4-gram scores 0, not its smoothed sentence BLEU."""
    from nbest_rescore import metrics

    hs = slice_stats[0]
    no_4gram = np.array([[3, 3, 3, 2, 1, 0, 3, 2, 1, 0]])  # 3 words: no 4-gram at all
    rows = np.concatenate([no_4gram, hs.stats[:40], no_4gram])
    whole = {f: f(rows) for f in (corpus_bleu_many, sentence_bleu_many)}
    assert whole[corpus_bleu_many][0] == 0.0 < whole[sentence_bleu_many][0]
    monkeypatch.setattr(metrics, "_ROWS_AT_ONCE", 3)
    for f, want in whole.items():
        assert f(rows).tobytes() == want.tobytes()


def test_chrf_is_sacrebleus() -> None:
    refs = lines(DATA / "test2016.head30.fr.gz")
    hyps = [hypothesis_text(g.hyps[0].tokens, CONFIGS["13a"]) for g in GROUPS]
    assert chrf(hyps, refs).score == sacrebleu.CHRF().corpus_score(hyps, [refs]).score
    with pytest.raises(InputError):
        chrf(hyps[:3], refs)


# ----------------------------------------------------------------------------- significance


def sacrebleu_paired_bs(base: list[str], system: list[str], refs: list[str], tok: str) -> float:
    _, scores = PairedTest(
        [("baseline", base), ("system", system)],
        {"BLEU": BLEU(tokenize=tok)},
        [refs],
        test_type="bs",
        n_samples=1000,
    )()
    result = scores["BLEU"][1]
    assert not isinstance(result, str) and result.p_value is not None
    return float(result.p_value)


def test_paired_bootstrap_equals_sacrebleu(
    slice_stats: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SACREBLEU_SEED", "12345")  # sacrebleu's default seed, as ours
    hs, texts, refs = slice_stats
    rng = np.random.default_rng(3)
    sels = [hs.counts - 1, np.minimum(rng.integers(0, 3, hs.n_sentences), hs.counts - 1)]
    for sel in sels:
        base = [t[0] for t in texts]
        system = [texts[i][j] for i, j in enumerate(sel.tolist())]
        want = sacrebleu_paired_bs(base, system, refs, hs.config.tokenize)
        got = paired_bootstrap(hs.rows(hs.one_best()), hs.rows(sel))
        assert got == pytest.approx(want, abs=1e-12)


def test_paired_bootstrap_sanity(slice_stats: tuple) -> None:
    from nbest_rescore.oracle import sentence_oracle

    hs = slice_stats[0]
    base = hs.rows(hs.one_best())
    assert paired_bootstrap(base, base) == 1.0  # the same system is never "significant"
    assert paired_bootstrap(base, hs.rows(sentence_oracle(hs))) < 0.05
    same_seed = paired_bootstrap(base, hs.rows(hs.counts - 1), seed=1)
    assert same_seed == paired_bootstrap(base, hs.rows(hs.counts - 1), seed=1)
    with pytest.raises(ValueError):
        paired_bootstrap(base, base[:3])


def test_config_is_frozen_and_hashable() -> None:
    config = BleuConfig()
    assert (config.tokenize, config.lowercase, config.tgt_lang) == ("13a", False, "fr")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tokenize = "none"  # type: ignore[misc]
    assert len({BleuConfig(), BleuConfig()}) == 1
