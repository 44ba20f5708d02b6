"""The encoder-decoder (nbest_rescore.model): the reversed source, target order, teacher forcing
against step-by-step decoding, and a tiny model that learns to copy in a few dozen steps."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import pad

from nbest_rescore.model import (
    ATTENTION,
    ModelConfig,
    Seq2Seq,
    fused_cell,
    reverse_padded,
    select_state,
    shift_right,
    target_order,
)
from nbest_rescore.vocab import BOS, EOS, PAD

V = 12  # 4 specials + 8 words


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def tiny(seed: int = 0, **overrides: object) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny", src_vocab_size=V, tgt_vocab_size=V, init_range=0.3)
    return Seq2Seq(replace(cfg, **overrides)).eval()  # type: ignore[arg-type]


SEQS = st.lists(st.lists(st.integers(4, V - 1), min_size=1, max_size=6), min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(seqs=SEQS, extra=st.integers(0, 3))
def test_reverse_padded_reverses_each_row_and_keeps_the_padding(
    seqs: list[list[int]], extra: int
) -> None:
    x, lengths = pad(seqs, extra)
    assert reverse_padded(x, lengths).tolist() == pad([s[::-1] for s in seqs], extra)[0].tolist()
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


def test_reversal_changes_only_what_the_encoder_sees() -> None:
    torch.manual_seed(0)
    fwd = Seq2Seq(ModelConfig.preset("tiny", reverse_source=False))
    rev = Seq2Seq(replace(fwd.config, reverse_source=True))
    rev.load_state_dict(fwd.state_dict())
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0]])
    src_len = torch.tensor([4, 2, 1])
    tgt_out = torch.tensor([[12, 13, 3], [14, 3, 0], [3, 0, 0]])
    reversed_src = reverse_padded(src, src_len)
    assert reversed_src.tolist() == [[8, 7, 6, 5], [10, 9, 0, 0], [11, 0, 0, 0]]
    for a, b in zip(rev.encode(src, src_len), fwd.encode(reversed_src, src_len), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        rev.token_logprobs(src, src_len, tgt_out),
        fwd.token_logprobs(reversed_src, src_len, tgt_out),
    )
    # ...and it does change the encoding of a non-palindromic source.
    assert not torch.allclose(rev.encode(src, src_len)[0], fwd.encode(src, src_len)[0])


@pytest.mark.parametrize("attention", ["none", "luong"])
def test_reversing_the_input_equals_reversing_the_tokens(attention: str) -> None:
    """The paper's trick, on attention models too: a reversed-source model encodes a sentence as a
    forward model with the same weights encodes the sentence's tokens in reverse order."""
    rev = tiny(1, attention=attention)
    fwd = tiny(1, attention=attention, reverse_source=False)
    seqs = [[4, 5, 6, 7, 8], [9, 10], [11, 4, 4]]
    src, lengths = pad(seqs)
    backwards, _ = pad([s[::-1] for s in seqs])
    with torch.no_grad():
        for a, b in zip(rev.encode(src, lengths), fwd.encode(backwards, lengths), strict=True):
            torch.testing.assert_close(a, b)


def test_target_order_round_trips() -> None:
    l2r, r2l = ModelConfig.preset("tiny"), ModelConfig.preset("tiny", reverse_target=True)
    ids, words = [4, 5, 6], ["le", "chat", "dort"]
    assert target_order(ids, l2r) == ids and target_order(words, r2l) == words[::-1]
    assert target_order(tuple(ids), r2l) == (6, 5, 4)
    for cfg in (l2r, r2l):
        assert target_order(target_order(ids, cfg), cfg) == ids
        assert target_order(target_order(words, cfg), cfg) == words


def test_shift_right_feeds_bos_and_never_eos() -> None:
    tgt_out, _ = pad([[4, 5, EOS], [6, EOS], [EOS]])
    assert shift_right(tgt_out).tolist() == [[BOS, 4, 5], [BOS, 6, PAD], [BOS, PAD, PAD]]


@pytest.mark.parametrize("attention", ATTENTION)
def test_teacher_forcing_equals_decoding_step_by_step(attention: str) -> None:
    """`token_logprobs` (one call over the whole target) gives each token the log-prob that
    `step` gives it one position at a time, and padding changes nothing."""
    model = tiny(2, attention=attention, layers=2)
    srcs = [[4, 5, 6, 7], [8, 9], [10]]
    tgts = [[4, 5, EOS], [6, 7, 8, 9, EOS], [EOS]]
    src, src_len = pad(srcs, extra=2)
    tgt, _ = pad(tgts)
    with torch.no_grad():
        forced = model.token_logprobs(src, src_len, tgt)
        for i, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
            alone, alone_len = pad([s])
            state = model.encode(alone, alone_len)
            prev = torch.tensor([BOS])
            for pos, tok in enumerate(t):
                logp, state = model.step(prev, state)
                assert forced[i, pos].item() == pytest.approx(logp[0, tok].item(), abs=1e-5)
                prev = torch.tensor([tok])
            assert (forced[i, len(t) :] == 0).all()  # PAD positions score 0


@pytest.mark.parametrize("attention", ATTENTION)
def test_the_fused_search_step_equals_the_modules_and_follows_weight_updates(
    attention: str,
) -> None:
    """`grid_step` (the search's fused step: gate table, prepared products) gives the log-probs
    and (h, c) of `step` (the modules themselves), and after an optimizer step changes the
    weights in place, the new weights' (its cache is rebuilt, the output layer included)."""
    model = tiny(3, attention=attention, layers=2)
    src, src_len = pad([[4, 5, 6, 7], [8, 9], [10]])
    prev = torch.tensor([BOS, 5, 9])

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            state = model.encode(src, src_len)
            want, (h, c, *_) = model.step(prev, state)
            got, (h2, c2) = model.grid_step(prev, (state[0], state[1]), state, None, 1)
        torch.testing.assert_close(h2, h, atol=1e-5, rtol=0)
        torch.testing.assert_close(c2, c, atol=1e-5, rtol=0)
        return got, want

    got, want = both()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    logp = model(src, src_len, shift_right(torch.tensor([[4, EOS], [6, EOS], [EOS, PAD]])))
    logp[..., 4].sum().backward()
    opt.step()
    model.eval()
    got2, want2 = both()
    torch.testing.assert_close(got2, want2, atol=1e-5, rtol=0)
    assert (got2 - got).abs().max() > 1e-2  # the update moved them
    with torch.no_grad():  # the output layer alone
        model.out.weight.mul_(3.0)
    got3, want3 = both()
    torch.testing.assert_close(got3, want3, atol=1e-5, rtol=0)
    assert (got3 - got2).abs().max() > 1e-2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.1, 1.0, 8.0, 40.0]))
def test_the_fused_cell_equals_the_lstm_cell_formula(seed: int, scale: float) -> None:
    """`fused_cell` on gates with the cell input doubled (one sigmoid for all four gates, tanh
    as 2 sigmoid(2x) - 1) gives the LSTM cell's (h, c) = (o tanh(c'), f c + i tanh(g)), with
    torch's sigmoid and tanh, to 1e-6 (relative for c), saturated gates included."""
    gen = torch.Generator().manual_seed(seed)
    n, hidden = 5, 16
    gates = torch.randn(n, 4 * hidden, generator=gen) * scale
    c = torch.randn(n, hidden, generator=gen) * scale
    i, f, g, o = gates.chunk(4, dim=1)
    want_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    want_h = torch.sigmoid(o) * torch.tanh(want_c)
    doubled = gates.clone()
    doubled[:, 2 * hidden : 3 * hidden] *= 2
    got_h, got_c = fused_cell(doubled, c)
    torch.testing.assert_close(got_c, want_c, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_select_state_picks_rows_of_every_part(attention: str) -> None:
    model = tiny(3, attention=attention)
    src, lengths = pad([[4, 5], [6, 7, 8], [9]])
    with torch.no_grad():
        state = model.encode(src, lengths)
        index = torch.tensor([2, 0, 0])
        picked = select_state(state, index)
        alone = model.encode(*pad([[9], [4, 5], [4, 5]]))
        logp, _ = model.step(torch.full((3,), BOS), picked)
        ref, _ = model.step(torch.full((3,), BOS), alone)
    assert len(picked) == len(state)
    torch.testing.assert_close(logp, ref, atol=1e-5, rtol=0)


def test_config_presets_checks_and_dict_round_trip() -> None:
    cfg = ModelConfig.preset("small", attention="bahdanau", reverse_target=True)
    assert (cfg.hidden, cfg.layers, cfg.attention) == (256, 2, "bahdanau")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_vocab_sizes(7, 9).src_vocab_size == 7
    assert cfg.kind == "reversed-source bahdanau-attention r2l"
    assert ModelConfig.preset("paper").kind == "reversed-source"
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown attention"):
        ModelConfig.preset("tiny", attention="dot")


def test_initialisation_is_uniform_in_the_init_range() -> None:
    model = tiny(4, init_range=0.05)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= 0.05 and values.abs().max() > 0.04


def greedy_copies(model: Seq2Seq, seqs: list[list[int]]) -> float:
    """Fraction of sources that greedy decoding copies exactly."""
    src, lengths = pad(seqs)
    with torch.no_grad():
        state = model.encode(src, lengths)
        prev = torch.full((len(seqs),), BOS)
        out = []
        for _ in range(max(map(len, seqs)) + 2):
            logp, state = model.step(prev, state)
            prev = logp.argmax(-1)
            out.append(prev)
    rows = torch.stack(out, 1).tolist()
    return sum(r[: r.index(EOS)] == s for r, s in zip(rows, seqs, strict=True) if EOS in r) / len(
        seqs
    )


def test_a_tiny_model_learns_to_copy_in_a_few_dozen_steps() -> None:
    rng = random.Random(0)

    def sample(n: int) -> list[list[int]]:
        return [[rng.randint(4, V - 1) for _ in range(rng.randint(1, 3))] for _ in range(n)]

    model = tiny(0, init_range=0.1)
    test = sample(200)
    assert greedy_copies(model.eval(), test) < 0.1
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(60):
        seqs = sample(32)
        src, lengths = pad(seqs)
        tgt, _ = pad([[*s, EOS] for s in seqs])
        loss = -model.token_logprobs(src, lengths, tgt).sum() / (tgt != PAD).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6  # from log(12) = 2.5 nats a token
    assert greedy_copies(model.eval(), test) >= 0.75
