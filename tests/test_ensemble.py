"""Ensembles (nbest_rescore.ensemble): one model is the model itself, several combine their
next-token distributions by the configured rule and weights, and incompatible models are refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import SRC_VOCAB, TGT_VOCAB, make_bundle, pad, sources

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.ensemble import Ensemble, EnsembleConfig, normalised_weights
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.model import Seq2Seq
from nbest_rescore.search import SearchConfig, beam_search
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import BOS, SPECIALS, Vocab

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """The toy model of seed 1; `make_bundle` trains each seed once per session."""
    return make_bundle(1)


def test_ensemble_of_one_is_the_model(bundle: ModelBundle) -> None:
    ens = Ensemble([bundle])
    (src,) = sources(1, seed=11)[0]
    state = ens.encode([(src,)])
    s, s_len = pad([src])
    with torch.no_grad():
        ref_state = bundle.model.encode(s, s_len)
        prev = torch.tensor([BOS])
        for tok in (4, 6, 5):
            logp, per_model, state = ens.step(prev, state)
            ref, ref_state = bundle.model.step(prev, ref_state)
            assert torch.allclose(logp, ref, atol=1e-6)
            assert torch.allclose(per_model[0], ref, atol=1e-6)
            prev = torch.tensor([tok])


def test_weighted_combination(bundle: ModelBundle) -> None:
    bundle2 = make_bundle(2)
    srcs = sources(3, seed=15)
    both = [(s, s) for (s,) in srcs]
    pa, _, _ = Ensemble([bundle]).step(torch.full((3,), BOS), Ensemble([bundle]).encode(srcs))
    pb, _, _ = Ensemble([bundle2]).step(torch.full((3,), BOS), Ensemble([bundle2]).encode(srcs))
    w = (1.0, 3.0)  # normalised to 0.25, 0.75
    for combine, expect in [
        ("prob", torch.log(0.25 * pa.exp() + 0.75 * pb.exp())),
        ("logprob", 0.25 * pa + 0.75 * pb),
    ]:
        ens = Ensemble([bundle, bundle2], EnsembleConfig(combine=combine, weights=w))  # type: ignore[arg-type]
        logp, per_model, _ = ens.step(torch.full((3,), BOS), ens.encode(both))
        assert torch.allclose(logp, expect, atol=1e-5)
        assert torch.allclose(per_model[1], pb)
    # A zero weight removes a model from the search entirely, in both modes.
    cfg = SearchConfig(beam=3, nbest=2)
    alone = beam_search(Ensemble([bundle2]), srcs, cfg)
    for combine in ("prob", "logprob"):
        ens = Ensemble([bundle, bundle2], EnsembleConfig(combine=combine, weights=(0.0, 2.0)))  # type: ignore[arg-type]
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


def test_models_reading_the_target_in_opposite_directions_are_refused(bundle: ModelBundle) -> None:
    r2l = Seq2Seq(dataclasses.replace(bundle.model.config, reverse_target=True))
    other = dataclasses.replace(bundle, model=r2l, path="r2l.pt")
    with pytest.raises(CheckpointError, match=r"m1\.pt and r2l\.pt read the target in opposite"):
        Ensemble([bundle, other])
    with pytest.raises(InputError, match="at least one model"):
        Ensemble([])
    with pytest.raises(InputError, match="--combine 'max': choose prob or logprob"):
        EnsembleConfig(combine="max")  # type: ignore[arg-type]


def test_each_model_encodes_its_own_ids_and_states_follow_the_beam(
    bundle: ModelBundle,
) -> None:
    bundle2 = make_bundle(2)
    ens = Ensemble([bundle, bundle2])
    with pytest.raises(ValueError, match="2 id lists"):
        ens.encode(sources(2))
    srcs = [([4, 5, 6], [7]), ([8], [9, 10, 11, 4])]
    states = ens.encode(srcs)
    index = torch.tensor([1, 1, 0])
    logp, per_model, _ = ens.step(torch.full((3,), BOS), ens.select(states, index))
    for m, b in enumerate((bundle, bundle2)):
        rows = [srcs[i][m] for i in index.tolist()]
        with torch.no_grad():
            ref, _ = b.model.step(torch.full((3,), BOS), b.model.encode(*pad(rows)))
        torch.testing.assert_close(per_model[m], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(logp, torch.logsumexp(per_model - math.log(2), dim=0))
    assert len(ens) == 2 and ens.tgt_vocab == TGT_VOCAB and ens.tgt_tok == bundle.tgt_tok


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=5).filter(lambda w: sum(w) > 0))
def test_weights_are_normalised_in_proportion(weights: list[float]) -> None:
    got = normalised_weights(len(weights), weights)
    assert sum(got) == pytest.approx(1.0)
    assert got == pytest.approx([w / sum(weights) for w in weights])
    assert normalised_weights(len(weights), None) == [1 / len(weights)] * len(weights)


@pytest.mark.parametrize("bad", [(1.0, -1.0), (0.0, 0.0), (1.0, math.nan), (1.0, math.inf)])
def test_bad_weights_are_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(InputError, match="must be >= 0 and not all 0"):
        normalised_weights(2, bad)
