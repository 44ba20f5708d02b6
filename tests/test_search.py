"""Beam search and ensembles against exact references: brute-force enumeration, greedy decoding,
one-sentence-at-a-time search and teacher-forced scores of tiny models."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.ensemble import Ensemble, EnsembleConfig
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.search import SearchConfig, beam_search, beam_step, length_penalty
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

torch.set_num_threads(1)

SRC_VOCAB = Vocab(SPECIALS + tuple("abcdefgh"))
TGT_VOCAB = Vocab((*SPECIALS, "le", "chat", "noir", "dort"))  # 4 real tokens + UNK can be emitted
EMITTABLE = [UNK, 4, 5, 6, 7]


def _pad(seqs: list[list[int]], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs) + extra)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, torch.tensor([len(s) for s in seqs])


def make_bundle(seed: int, *, steps: int = 40, tgt_vocab: Vocab = TGT_VOCAB) -> ModelBundle:
    """A tiny model nudged by a few Adam steps towards a toy mapping, so its distributions are peaked
    and its best outputs are several tokens long (not just EOS)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = ModelConfig.preset(
        "tiny", src_vocab_size=len(SRC_VOCAB), tgt_vocab_size=len(tgt_vocab), init_range=0.3
    )
    model = Seq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        srcs = [[rng.randint(4, 11) for _ in range(rng.randint(1, 5))] for _ in range(32)]
        tgts = [[4 + (x % 4) for x in s[:4]] + [EOS] for s in srcs]
        src, src_len = _pad(srcs)
        tgt, _ = _pad(tgts)
        loss = -model.token_logprobs(src, src_len, tgt).sum() / (tgt != PAD).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return ModelBundle(
        model,
        SRC_VOCAB,
        tgt_vocab,
        TokenizerConfig("en"),
        TokenizerConfig("fr"),
        path=f"m{seed}.pt",
    )


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return make_bundle(1)


@pytest.fixture(scope="module")
def bundle2() -> ModelBundle:
    return make_bundle(2)


def sources(n: int, seed: int = 0) -> list[tuple[list[int]]]:
    rng = random.Random(seed)
    return [([rng.randint(4, 11) for _ in range(rng.randint(0, 6))],) for _ in range(n)]


def teacher_forced(model: Seq2Seq, src: list[int], hyps: list[tuple[int, ...]]) -> torch.Tensor:
    """Per-position log-probs (H, T) of each hypothesis + EOS given `src` (0 at padding)."""
    s, s_len = _pad([src] * len(hyps))
    tgt, _ = _pad([[*h, EOS] for h in hyps])
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
    s, s_len = _pad([src])
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


def test_ensemble_of_one_is_the_model(bundle: ModelBundle) -> None:
    ens = Ensemble([bundle])
    (src,) = sources(1, seed=11)[0]
    state = ens.encode([(src,)])
    s, s_len = _pad([src])
    with torch.no_grad():
        ref_state = bundle.model.encode(s, s_len)
        prev = torch.tensor([BOS])
        for tok in (4, 6, 5):
            logp, per_model, state = ens.step(prev, state)
            ref, ref_state = bundle.model.step(prev, ref_state)
            assert torch.allclose(logp, ref, atol=1e-6)
            assert torch.allclose(per_model[0], ref, atol=1e-6)
            prev = torch.tensor([tok])


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_two_copies_equal_one_model(bundle: ModelBundle, combine: str) -> None:
    srcs = sources(6, seed=13)
    cfg = SearchConfig(beam=4, nbest=3)
    single = beam_search(Ensemble([bundle]), srcs, cfg)
    double = beam_search(
        Ensemble([bundle, bundle], EnsembleConfig(combine)),  # type: ignore[arg-type]
        [(s, s) for (s,) in srcs],
        cfg,
    )  # type: ignore[arg-type]
    for a, b in zip(single, double, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        for h in b:
            assert h.model_scores == pytest.approx((h.score, h.score), abs=1e-5)


def test_weighted_combination(bundle: ModelBundle, bundle2: ModelBundle) -> None:
    srcs = sources(3, seed=15)
    both = [(s, s) for (s,) in srcs]
    pa, _, _ = Ensemble([bundle]).step(torch.full((3,), BOS), Ensemble([bundle]).encode(srcs))
    pb, _, _ = Ensemble([bundle2]).step(torch.full((3,), BOS), Ensemble([bundle2]).encode(srcs))
    w = (1.0, 3.0)  # normalised to 0.25, 0.75
    for combine, expect in [
        ("prob", torch.log(0.25 * pa.exp() + 0.75 * pb.exp())),
        ("logprob", 0.25 * pa + 0.75 * pb),
    ]:
        ens = Ensemble([bundle, bundle2], EnsembleConfig(combine, w))  # type: ignore[arg-type]
        logp, per_model, _ = ens.step(torch.full((3,), BOS), ens.encode(both))
        assert torch.allclose(logp, expect, atol=1e-5)
        assert torch.allclose(per_model[1], pb)
    # A zero weight removes a model from the search entirely, in both modes.
    cfg = SearchConfig(beam=3, nbest=2)
    alone = beam_search(Ensemble([bundle2]), srcs, cfg)
    for combine in ("prob", "logprob"):
        ens = Ensemble([bundle, bundle2], EnsembleConfig(combine, (0.0, 2.0)))  # type: ignore[arg-type]
        for a, b in zip(alone, beam_search(ens, both, cfg), strict=True):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.model_scores[1] for h in b], abs=1e-5)


def test_incompatible_ensembles_are_rejected(bundle: ModelBundle) -> None:
    other_vocab = Vocab((*SPECIALS, "le", "chien", "noir", "dort"))
    other = make_bundle(3, steps=0, tgt_vocab=other_vocab)
    with pytest.raises(
        CheckpointError, match=r"target vocabularies differ between m1\.pt and m3\.pt.*id 5"
    ):
        Ensemble([bundle, other])
    lower = ModelBundle(
        bundle.model, SRC_VOCAB, TGT_VOCAB, TokenizerConfig("en"),
        TokenizerConfig("fr", lowercase=True), path="lc.pt",
    )  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"tokeniser settings differ.*lowercase=False vs True"
    ):
        Ensemble([bundle, lower])
    with pytest.raises(InputError, match="2 ensemble weights for 1 models"):
        Ensemble([bundle], EnsembleConfig(weights=(1.0, 1.0)))
    with pytest.raises(InputError, match="beam"):
        SearchConfig(beam=0)
