"""In-memory batched scoring against the model's own one-at-a-time teacher-forced log-probs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nbest_rescore.checkpoint import ModelBundle, load_model, model_payload, save_checkpoint
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.scoring import (
    ScoringConfig,
    bf16_max_difference,
    hypothesis_ids,
    length_batches,
    naive_scores,
    resolve_escaped,
    score_hypotheses,
    score_source_given_hypotheses,
    source_tokens,
    trie_nodes,
)
from nbest_rescore.text import TokenizerConfig, escape_token, tokenize
from nbest_rescore.vocab import UNK, Vocab

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"
SRC = DATA / "test2016.head30.en.gz"


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def slice_data() -> tuple[list[str], list[tuple[str, ...]], list[int]]:
    """The real slice: raw sources, every hypothesis's tokens and its sentence id."""
    sources = read_lines(SRC)
    hyps: list[tuple[str, ...]] = []
    owner: list[int] = []
    for group in read_nbest(NBEST, n_sentences=len(sources)):
        for h in group.hyps:
            hyps.append(h.tokens)
            owner.append(group.sent_id)
    return sources, hyps, owner


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory,
    slice_data: tuple[list[str], list[tuple[str, ...]], list[int]],
) -> ModelBundle:
    """A tiny 2-layer model, vocabularies from the slice but capped so some tokens are UNK,
    saved and loaded through the real checkpoint code."""
    sources, hyps, _ = slice_data
    src_tok, tgt_tok = TokenizerConfig("en"), TokenizerConfig("fr")
    src_vocab = Vocab.build([tokenize(s, src_tok) for s in sources], max_size=120)
    tgt_vocab = Vocab.build(hyps, max_size=150)
    torch.manual_seed(1)
    config = ModelConfig.preset(
        "tiny", src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab), layers=2
    )
    model = Seq2Seq(config)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_checkpoint(path, model_payload(model, src_vocab, tgt_vocab, src_tok, tgt_tok))
    return load_model(path)


def _ids(bundle: ModelBundle, sources: list[str], hyps: list[tuple[str, ...]]) -> tuple:
    src_ids = [bundle.src_vocab.encode(t) for t in source_tokens(sources, bundle, tokenized=False)]
    return src_ids, hypothesis_ids(hyps, bundle, escaped=False)


@pytest.mark.parametrize("share_prefixes", [True, False])
@pytest.mark.parametrize("max_tokens", [64, 5000])
def test_scores_equal_one_at_a_time_token_logprobs(
    bundle: ModelBundle, slice_data: tuple, share_prefixes: bool, max_tokens: int
) -> None:
    sources, hyps, owner = slice_data
    cfg = ScoringConfig(max_tokens=max_tokens, share_prefixes=share_prefixes)
    res = score_hypotheses(bundle, sources, hyps, owner, cfg, escaped=False)
    src_ids, hyp_ids = _ids(bundle, sources, hyps)
    # The reference: model.token_logprobs on a batch of one, source re-encoded, summed in fp64.
    ref = naive_scores(bundle.model, src_ids, hyp_ids, owner)
    assert res.logprob.dtype == np.float64 and res.logprob.shape == (len(hyps),)
    np.testing.assert_allclose(res.logprob, ref, rtol=0, atol=1e-5)
    assert (res.logprob < 0).all()
    np.testing.assert_array_equal(res.n_tokens, [len(h) + 1 for h in hyps])
    np.testing.assert_array_equal(
        res.n_unk, [sum(t not in bundle.tgt_vocab.stoi for t in h) for h in hyps]
    )
    assert res.n_unk.sum() > 0  # the capped vocabulary makes the UNK path real
    src_tokens = [tokenize(s, bundle.src_tok) for s in sources]
    assert res.src_tokens == sum(map(len, src_tokens))
    assert res.src_unk / res.src_tokens == pytest.approx(bundle.src_vocab.oov_rate(src_tokens))
    if max_tokens == 64:
        assert res.stats.n_batches > 20
        assert res.stats.n_padded_tokens <= 64 * res.stats.n_batches


def test_dedup_and_shared_encoding_do_not_change_scores(
    bundle: ModelBundle, slice_data: tuple
) -> None:
    sources, hyps, owner = slice_data
    # Every hypothesis of the first 5 sentences twice, interleaved in a scrambled order.
    base = [i for i, o in enumerate(owner) if o < 5]
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.permutation(base + base)]
    dup_hyps = [hyps[i] for i in picks]
    dup_owner = [owner[i] for i in picks]
    cfg = ScoringConfig(max_tokens=300)

    encoded_rows: list[int] = []
    handle = bundle.model.encoder.register_forward_hook(
        lambda _m, inp, _o: encoded_rows.append(int(inp[0].batch_sizes[0]))
    )
    try:
        res = score_hypotheses(bundle, sources, dup_hyps, dup_owner, cfg, escaped=False)
    finally:
        handle.remove()
    # Each of the 5 sources with hypotheses is encoded exactly once (other sources not at all).
    assert sum(encoded_rows) == 5 == res.stats.n_sources
    assert res.stats.n_unique <= len(base) < res.stats.n_hyps
    src_ids, hyp_ids = _ids(bundle, sources, dup_hyps)
    np.testing.assert_allclose(
        res.logprob, naive_scores(bundle.model, src_ids, hyp_ids, dup_owner), rtol=0, atol=1e-5
    )
    # Duplicates get bit-identical scores, and the scores of the list without duplicates.
    by_hyp: dict[tuple[int, tuple[str, ...]], float] = {}
    for h, o, s in zip(dup_hyps, dup_owner, res.logprob, strict=True):
        assert by_hyp.setdefault((o, h), s) == s
    single = score_hypotheses(
        bundle, sources, [hyps[i] for i in base], [owner[i] for i in base], cfg, escaped=False
    )
    expect = [single.logprob[base.index(i)] for i in picks]
    np.testing.assert_allclose(res.logprob, expect, rtol=0, atol=1e-5)
    # The same surface under another source is not merged with it.
    swapped = score_hypotheses(bundle, sources, [hyps[0]], [1], cfg, escaped=False)
    assert swapped.logprob[0] != res.logprob[dup_hyps.index(hyps[0])]


def test_prefix_sharing_saves_softmax_rows_on_real_nbest(
    bundle: ModelBundle, slice_data: tuple
) -> None:
    sources, hyps, owner = slice_data
    on = score_hypotheses(bundle, sources, hyps, owner, ScoringConfig(), escaped=False)
    off = score_hypotheses(
        bundle, sources, hyps, owner, ScoringConfig(share_prefixes=False), escaped=False
    )
    assert off.stats.n_softmax_rows == off.stats.n_target_tokens
    assert on.stats.n_softmax_rows < 0.8 * off.stats.n_softmax_rows
    np.testing.assert_allclose(on.logprob, off.logprob, rtol=0, atol=1e-5)


def test_escaped_nbest_scores_like_unescaped(bundle: ModelBundle, slice_data: tuple) -> None:
    sources, hyps, owner = slice_data
    escaped = [tuple(escape_token(t) for t in h) for h in hyps]
    assert any(e != h for e, h in zip(escaped, hyps, strict=True))  # apostrophes in French
    assert resolve_escaped(None, escaped[:50]) and not resolve_escaped(None, hyps)
    assert resolve_escaped(False, escaped) is False
    cfg = ScoringConfig()
    plain = score_hypotheses(bundle, sources, hyps, owner, cfg, escaped=False)
    from_escaped = score_hypotheses(bundle, sources, escaped, owner, cfg, escaped=True)
    np.testing.assert_array_equal(plain.logprob, from_escaped.logprob)
    # Read literally (as if unescaped), `&apos;` is an unknown word: the bridge matters.
    wrong = score_hypotheses(bundle, sources, escaped, owner, cfg, escaped=False)
    assert wrong.n_unk.sum() > plain.n_unk.sum()


def test_pretokenized_sources(bundle: ModelBundle, slice_data: tuple) -> None:
    sources, hyps, owner = slice_data
    tok = [" ".join(tokenize(s, bundle.src_tok)) for s in sources]
    raw = score_hypotheses(bundle, sources, hyps, owner, ScoringConfig(), escaped=False)
    pre = score_hypotheses(
        bundle, tok, hyps, owner, ScoringConfig(src_tokenized=True), escaped=False
    )
    np.testing.assert_array_equal(raw.logprob, pre.logprob)


def test_bf16_difference_is_reported(bundle: ModelBundle, slice_data: tuple) -> None:
    sources, hyps, owner = slice_data
    src_ids, hyp_ids = _ids(bundle, sources[:5], hyps[:60])
    diff = bf16_max_difference(bundle.model, src_ids, hyp_ids, owner[:60], ScoringConfig())
    assert np.isfinite(diff) and 0 < diff < 1.0


def test_empty_inputs(bundle: ModelBundle) -> None:
    res = score_hypotheses(
        bundle, ["a dog ."], [(), ("un",)], [0, 0], ScoringConfig(), escaped=False
    )
    assert res.n_tokens.tolist() == [1, 2] and np.isfinite(res.logprob).all()
    empty = score_hypotheses(bundle, ["a"], [], [], ScoringConfig(), escaped=False)
    assert empty.logprob.shape == (0,)


@given(st.lists(st.integers(1, 50), min_size=0, max_size=60), st.integers(1, 200))
def test_length_batches_cover_in_order_within_budget(lengths: list[int], budget: int) -> None:
    lens = np.sort(np.array(lengths, dtype=np.int64))
    batches = length_batches(lens, budget)
    assert [i for s, e in batches for i in range(s, e)] == list(range(len(lens)))
    for s, e in batches:
        assert e - s == 1 or (e - s) * lens[e - 1] <= budget


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.lists(st.integers(4, 7), min_size=0, max_size=5)),
        min_size=1,
        max_size=25,
        unique_by=lambda r: (r[0], tuple(r[1])),
    )
)
def test_trie_nodes_are_exactly_the_distinct_prefixes(rows: list) -> None:
    sent = np.array([s for s, _ in rows], dtype=np.int64)
    seqs = [[*ys, 3] for _, ys in rows]  # + EOS
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    tgt = np.zeros((len(seqs), int(lens.max())), dtype=np.int64)
    for i, s in enumerate(seqs):
        tgt[i, : len(s)] = s
    node = trie_nodes(tgt, lens, sent)
    prefixes = [(int(sent[i]), tuple(s[:t])) for i, s in enumerate(seqs) for t in range(len(s))]
    assert len(node) == len(prefixes)
    first: dict[tuple, int] = {}
    for p, n in zip(prefixes, node, strict=True):
        assert first.setdefault(p, int(n)) == n
    assert len(set(node.tolist())) == len(first) == int(node.max()) + 1


def test_unk_id_is_counted(bundle: ModelBundle) -> None:
    ids = hypothesis_ids([("zzzunseen", "un")], bundle, escaped=False)
    assert ids[0][0] == UNK


KINDS = {
    "plain": {},
    "luong": {"attention": "luong"},
    "bahdanau": {"attention": "bahdanau"},
    "r2l": {"reverse_target": True},
    "luong-r2l-forward": {"attention": "luong", "reverse_target": True, "reverse_source": False},
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind_bundle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, bundle: ModelBundle
) -> ModelBundle:
    """A model of every kind (attention, right-to-left), same vocabularies, through a checkpoint."""
    torch.manual_seed(2)
    config = ModelConfig.preset(
        "tiny",
        src_vocab_size=len(bundle.src_vocab),
        tgt_vocab_size=len(bundle.tgt_vocab),
        layers=2,
        init_range=0.2,
        **KINDS[request.param],
    )
    path = tmp_path_factory.mktemp("kinds") / f"{request.param}.pt"
    payload = model_payload(
        Seq2Seq(config), bundle.src_vocab, bundle.tgt_vocab, bundle.src_tok, bundle.tgt_tok
    )
    save_checkpoint(path, payload)
    return load_model(path)


@pytest.mark.parametrize("share_prefixes", [True, False])
def test_every_model_kind_scores_like_teacher_forcing(
    kind_bundle: ModelBundle, slice_data: tuple, share_prefixes: bool
) -> None:
    """Attention keys computed once per source and the prefix trie give the same log-probs as
    plain teacher forcing; a right-to-left model scores the hypothesis read backwards."""
    sources, hyps, owner = slice_data
    cfg = ScoringConfig(max_tokens=300, share_prefixes=share_prefixes)
    res = score_hypotheses(kind_bundle, sources, hyps, owner, cfg, escaped=False)
    src_ids = [
        kind_bundle.src_vocab.encode(t)
        for t in source_tokens(sources, kind_bundle, tokenized=False)
    ]
    left_to_right = [kind_bundle.tgt_vocab.encode(list(h)) for h in hyps]
    read = [r[::-1] for r in left_to_right] if kind_bundle.config.reverse_target else left_to_right
    ref = naive_scores(kind_bundle.model, src_ids, read, owner)
    np.testing.assert_allclose(res.logprob, ref, rtol=0, atol=1e-5)
    if kind_bundle.config.reverse_target:
        forward = naive_scores(kind_bundle.model, src_ids, left_to_right, owner)
        assert np.abs(forward - ref).max() > 1e-3  # the direction really matters


def test_checkpoint_of_every_kind_reports_its_kind(kind_bundle: ModelBundle) -> None:
    c = kind_bundle.config
    assert ("attention" in c.kind) == (c.attention != "none")
    assert ("r2l" in c.kind) == c.reverse_target
    assert c.kind.startswith("reversed-source" if c.reverse_source else "forward")


def test_target_to_source_scores_equal_teacher_forcing(
    tmp_path: Path, bundle: ModelBundle, slice_data: tuple
) -> None:
    """A French->English model scores p(source | hypothesis): the hypothesis is its source."""
    sources, hyps, owner = slice_data
    torch.manual_seed(3)
    config = ModelConfig.preset(
        "tiny",
        src_vocab_size=len(bundle.tgt_vocab),
        tgt_vocab_size=len(bundle.src_vocab),
        attention="luong",
        init_range=0.2,
    )
    path = tmp_path / "t2s.pt"
    payload = model_payload(
        Seq2Seq(config), bundle.tgt_vocab, bundle.src_vocab, bundle.tgt_tok, bundle.src_tok
    )
    save_checkpoint(path, payload)
    t2s = load_model(path)
    res = score_source_given_hypotheses(
        t2s, sources, hyps, owner, ScoringConfig(max_tokens=500), escaped=False
    )
    as_src = [t2s.src_vocab.encode(list(h)) for h in hyps]
    decoded = [t2s.tgt_vocab.encode(tokenize(sources[i], t2s.tgt_tok)) for i in owner]
    ref = naive_scores(t2s.model, as_src, decoded, list(range(len(hyps))))
    np.testing.assert_allclose(res.logprob, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(res.n_tokens, [len(d) + 1 for d in decoded])
    # Hypotheses of one sentence differ in how well they explain the same source.
    first = np.asarray(owner) == owner[0]
    assert np.ptp(res.logprob[first]) > 0


def test_bilinear_attention_gather_path_equals_dense_path(
    kind_bundle: ModelBundle, slice_data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `DENSE_ATTENTION_COLUMNS` encoder positions the scorer gathers each row's memory
    instead; both paths give the same log-probs."""
    import nbest_rescore.scoring as scoring

    sources, hyps, owner = slice_data
    cfg = ScoringConfig(max_tokens=300)
    dense = score_hypotheses(kind_bundle, sources, hyps, owner, cfg, escaped=False).logprob
    monkeypatch.setattr(scoring, "DENSE_ATTENTION_COLUMNS", 0)
    gathered = score_hypotheses(kind_bundle, sources, hyps, owner, cfg, escaped=False).logprob
    np.testing.assert_allclose(dense, gathered, rtol=0, atol=1e-5)
