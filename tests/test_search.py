"""Beam search and ensembles against exact references: brute-force enumeration, greedy decoding,
one-sentence-at-a-time search and teacher-forced scores of tiny models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import make_bundle, pad, sources

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.ensemble import Ensemble, EnsembleConfig
from nbest_rescore.errors import InputError
from nbest_rescore.model import Seq2Seq
from nbest_rescore.search import (
    TOPK_BLOCK,
    SearchConfig,
    beam_search,
    beam_step,
    length_penalty,
    top_candidates,
)
from nbest_rescore.vocab import BOS, EOS, PAD, UNK

torch.set_num_threads(1)

EMITTABLE = [UNK, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return make_bundle(1)


@pytest.fixture(scope="module")
def bundle2() -> ModelBundle:
    return make_bundle(2)


def teacher_forced(model: Seq2Seq, src: list[int], hyps: list[tuple[int, ...]]) -> torch.Tensor:
    """Per-position log-probs (H, T) of each hypothesis + EOS given `src` (0 at padding)."""
    s, s_len = pad([src] * len(hyps))
    tgt, _ = pad([[*h, EOS] for h in hyps])
    with torch.no_grad():
        return model.token_logprobs(s, s_len, tgt)


def brute_force(
    model: Seq2Seq,
    src: list[int],
    max_len: int,
    tokens: list[int],
    alpha: float = 0.0,
    min_len: int = 0,
) -> list[tuple[float, tuple[int, ...], float]]:
    """Every sequence of <= max_len `tokens` then EOS (at least `min_len` tokens for a non-empty
    source), as (rank score, tokens, score), best first."""
    shortest = min_len if src else 0
    seqs = [s for n in range(shortest, max_len + 1) for s in itertools.product(tokens, repeat=n)]
    scores = teacher_forced(model, src, seqs).sum(1).tolist()
    ranked = [
        (sc / length_penalty(len(s) + 1, alpha), s, sc) for s, sc in zip(seqs, scores, strict=True)
    ]
    return sorted(ranked, key=lambda r: r[0], reverse=True)


def test_beam_step_matches_sorted_candidates() -> None:
    gen = torch.Generator().manual_seed(0)
    b, k, v = 3, 4, 6
    scores = torch.randn(b, k, generator=gen)
    scores[0, 2:] = float("-inf")
    logp = torch.log_softmax(torch.randn(b, k, v, generator=gen), dim=-1)
    res = beam_step(scores, logp, k)
    for i in range(b):
        cands = sorted(
            ((scores[i, j] + logp[i, j, w]).item(), j, w) for j in range(k) for w in range(v)
        )[::-1]
        active = [c for c in cands[: 2 * k] if c[2] != EOS][:k]
        assert [(j, w) for _, j, w in active] == list(
            zip(res.origin[i].tolist(), res.tokens[i].tolist(), strict=True)
        )
        assert res.scores[i].tolist() == pytest.approx([s for s, _, _ in active])
        ended = [(s, j) for s, j, w in cands[:k] if w == EOS and math.isfinite(s)]
        got = [
            (res.eos_scores[i, c].item(), res.eos_origin[i, c].item())
            for c in range(k)
            if res.eos_mask[i, c]
        ]
        assert [j for _, j in got] == [j for _, j in ended]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in ended])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 4),
    k=st.integers(1, 12),
    v=st.sampled_from([7, 4 * TOPK_BLOCK, 4 * TOPK_BLOCK + 1, 6 * TOPK_BLOCK - 5, 1000]),
    dead=st.sampled_from(["none", "slots", "rows", "all but one"]),
    coarse=st.booleans(),
)
def test_blockwise_top_candidates_equal_the_direct_topk(
    seed: int, b: int, k: int, v: int, dead: str, coarse: bool
) -> None:
    """`top_candidates` (block maxima first, then `topk` over the best blocks) returns the
    direct `topk`'s scores exactly, each finite one with an index that holds it, for any
    vocabulary size (a ragged last block included), -inf slots and banned tokens, and many
    equal scores. (A -inf pick, as from `topk`, stands for no candidate: any valid index.)"""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, v, generator=gen) * 4
    if coarse:  # few distinct values: ties everywhere
        logits = logits.round()
    logp = torch.log_softmax(logits, dim=-1)
    scores = torch.randn(b, k, generator=gen) * 3
    if dead == "slots":
        scores[:, k // 2 :] = float("-inf")
    elif dead == "rows":
        logp[0, :, 1:] = float("-inf")
    elif dead == "all but one":
        logp[:] = float("-inf")
        logp[..., v - 1] = -2.0
    n = min(2 * k, k * v)
    want, _ = (scores.unsqueeze(-1) + logp).view(b, k * v).topk(n, dim=1)
    got, idx = top_candidates(scores, logp, n)
    assert torch.equal(got, want)
    assert ((idx >= 0) & (idx < k * v)).all()
    cand = (scores.unsqueeze(-1) + logp).view(b, k * v)
    finite = torch.isfinite(got)
    assert torch.equal(cand.gather(1, idx)[finite], got[finite])
    for row in range(b):  # the finite picks are distinct candidates
        picked = idx[row][finite[row]].tolist()
        assert len(set(picked)) == len(picked)


@pytest.mark.parametrize(
    ("forbid_unk", "alpha", "min_len"),
    [(False, 0.0, 0), (True, 0.0, 0), (False, 1.0, 0), (False, 3.0, 0), (False, 0.0, 1),
     (False, 1.0, 2)],
)  # fmt: skip
def test_large_beam_is_exact(
    bundle: ModelBundle, forbid_unk: bool, alpha: float, min_len: int
) -> None:
    max_len = 4
    cfg = SearchConfig(
        beam=800, nbest=5, max_len_a=0, max_len_b=max_len, forbid_unk=forbid_unk,
        length_penalty=alpha, min_len=min_len,
    )  # fmt: skip
    srcs = sources(4, seed=3)
    results = beam_search(Ensemble([bundle]), srcs, cfg)
    tokens = [t for t in EMITTABLE if not (forbid_unk and t == UNK)]
    longest = 0
    for (src,), hyps in zip(srcs, results, strict=True):
        exact = brute_force(bundle.model, src, max_len, tokens, alpha, min_len)[:5]
        assert [h.tokens for h in hyps] == [s for _, s, _ in exact]
        assert [h.score for h in hyps] == pytest.approx([sc for _, _, sc in exact], abs=1e-5)
        assert [h.rank_score for h in hyps] == pytest.approx([r for r, _, _ in exact], abs=1e-5)
        assert all(h.model_scores[0] == pytest.approx(h.score, abs=1e-5) for h in hyps)
        longest = max(longest, hyps[0].length)
    assert longest >= 2, "the model's best outputs should not all be trivially short"


def test_batched_equals_one_at_a_time(bundle: ModelBundle) -> None:
    srcs = sources(11, seed=5)
    cfg = SearchConfig(beam=5, nbest=4, batch_size=4)
    batched = beam_search(Ensemble([bundle]), srcs, cfg)
    for src, got in zip(srcs, batched, strict=True):
        (alone,) = beam_search(Ensemble([bundle]), [src], cfg)
        assert [h.tokens for h in got] == [h.tokens for h in alone]
        assert [h.score for h in got] == pytest.approx([h.score for h in alone], abs=1e-5)


def greedy(model: Seq2Seq, src: list[int], max_len: int) -> tuple[list[int], float]:
    """The obvious greedy decoder: argmax (PAD/BOS excluded) until EOS or max_len, then EOS."""
    s, s_len = pad([src])
    with torch.no_grad():
        state = model.encode(s, s_len)
        prev, out, total = BOS, [], 0.0
        for t in range(max_len + 1):
            logp, state = model.step(torch.tensor([prev]), state)
            logp = logp[0].clone()
            logp[[PAD, BOS]] = float("-inf")
            tok = EOS if t == max_len else int(logp.argmax())
            total += float(logp[tok])
            if tok == EOS:
                return out, total
            out.append(tok)
            prev = tok
    raise AssertionError("unreachable")


def test_beam_one_is_greedy(bundle: ModelBundle) -> None:
    srcs = sources(10, seed=7)
    cfg = SearchConfig(beam=1, max_len_a=1.0, max_len_b=3, batch_size=3)
    results = beam_search(Ensemble([bundle]), srcs, cfg)
    for (src,), (hyp,) in zip(srcs, results, strict=True):
        toks, score = greedy(bundle.model, src, cfg.max_len(len(src)))
        assert list(hyp.tokens) == toks
        assert hyp.score == pytest.approx(score, abs=1e-5)


def test_hypotheses_respect_max_length_and_scores_are_teacher_forced(bundle: ModelBundle) -> None:
    srcs = sources(6, seed=9)
    cfg = SearchConfig(beam=4, nbest=4, max_len_a=0.5, max_len_b=1)
    for (src,), hyps in zip(srcs, beam_search(Ensemble([bundle]), srcs, cfg), strict=True):
        assert 1 <= len(hyps) <= 4
        assert all(h.length <= cfg.max_len(len(src)) for h in hyps)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        forced = teacher_forced(bundle.model, src, [h.tokens for h in hyps]).sum(1).tolist()
        assert [h.score for h in hyps] == pytest.approx(forced, abs=1e-4)


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_two_copies_equal_one_model(bundle: ModelBundle, combine: str) -> None:
    srcs = sources(6, seed=13)
    cfg = SearchConfig(beam=4, nbest=3)
    single = beam_search(Ensemble([bundle]), srcs, cfg)
    double = beam_search(
        Ensemble([bundle, bundle], EnsembleConfig(combine=combine)),  # type: ignore[arg-type]
        [(s, s) for (s,) in srcs],
        cfg,
    )  # type: ignore[arg-type]
    for a, b in zip(single, double, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        for h in b:
            assert h.model_scores == pytest.approx((h.score, h.score), abs=1e-5)


def test_a_beam_below_one_is_refused() -> None:
    with pytest.raises(InputError, match="beam"):
        SearchConfig(beam=0)
