"""Teacher-forced scoring of many hypotheses per source: log P(hypothesis | source), EOS included.

The work is shaped for throughput, not one hypothesis at a time:
- every source is encoded once per model and its final state is shared by all its hypotheses
  (`select_state` / `index_select`, never re-encoded);
- identical hypotheses of one sentence (same model token ids) are scored once, then scattered back;
- `share_prefixes=False`: hypotheses are sorted by length and packed into batches of at most
  `max_tokens` padded target tokens, one `nn.LSTM` decoder call + output layer + log-softmax +
  gather per batch;
- `share_prefixes=True` (default): the hypotheses of each sentence form a prefix trie, and each
  distinct (sentence, prefix) node gets one LSTM step and one softmax normaliser. Nodes are
  processed depth by depth, all nodes of a depth across the chunk's sentences in one batched
  cell step (a loop over depths, like `nn.LSTM`'s own loop over time, never over tokens); each
  token then only needs its own logit, a dot product with its node's state. On Moses n-best
  lists this cuts the decoder's work by about 2.3-2.5x (test2016 1000-best list: 5.30M tokens, 2.32M nodes).
Everything here is in memory and deterministic for a given thread count and device: the result
is a pure function of the inputs and the settings, which the resumable chunk store relies on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.model import (
    Seq2Seq,
    State,
    StepProducts,
    fused_cell,
    lstm_cell,
    select_state,
    shift_right,
    target_order,
)
from nbest_rescore.quantize import check_int8_device
from nbest_rescore.text import looks_escaped, to_model_tokens, tokenize
from nbest_rescore.validate import option_at_least
from nbest_rescore.vocab import BOS, EOS, PAD, UNK

DETECT_HYPS = 1000
"""How many leading n-best hypotheses `escaped=None` inspects to detect Moses XML escaping."""


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """How hypotheses are scored. Fields that can change a score's bits are part of cache keys."""

    max_tokens: int = 8192
    """Padded target tokens per decoder batch, trie nodes per batched LSTM step when sharing
    prefixes, and padded source tokens per encoder batch."""
    device: str = "cpu"
    bf16: bool = False
    """bf16 autocast on the decoder and output layer (CUDA); log-softmax stays in fp32."""
    escaped: bool | None = None
    """Whether n-best hypotheses carry Moses XML escapes; None detects from the first hypotheses."""
    src_tokenized: bool = False
    """Sources are already tokenized (split on spaces) instead of raw text."""
    chunk_sentences: int = 20
    """Sentence ids per chunk of the on-disk store (the unit of resumption, caching, sharding);
    also bounds memory: the trie keeps one depth's (h, c) for every node of it."""
    share_prefixes: bool = True
    """Decode each distinct (sentence, prefix) once (a prefix trie) instead of every token."""
    int8: bool = False
    """Score with the models' LSTM and linear layers dynamically quantized to int8 (CPU only)."""

    def __post_init__(self) -> None:
        if self.int8:
            check_int8_device(self.device)
        option_at_least("--max-tokens", self.max_tokens, 1)
        option_at_least("chunk_sentences", self.chunk_sentences, 1)

    def numeric_key(self) -> str:
        """The settings that can change scores' bits (batching, precision, device type, and on
        a CPU the thread count: float sums split over threads round differently). A chunk is
        thus only reused by a run that would compute the same bits, so a resumed run's outputs
        are byte-identical to a clean one's."""
        dev = torch.device(self.device).type
        threads = f";threads={torch.get_num_threads()}" if dev == "cpu" else ""
        return (
            f"max_tokens={self.max_tokens};device={dev};bf16={self.bf16};"
            f"share_prefixes={self.share_prefixes}{';int8=True' if self.int8 else ''}{threads}"
        )


@dataclass
class ScoreStats:
    """Work counters and timings of one or more scoring calls (summable)."""

    n_hyps: int = 0
    n_unique: int = 0
    n_sources: int = 0
    n_target_tokens: int = 0
    """Target tokens actually run through the decoder (after dedup, EOS included)."""
    n_padded_tokens: int = 0
    n_softmax_rows: int = 0
    """Full output-layer rows computed (trie nodes when sharing prefixes)."""
    n_batches: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0

    def add(self, other: ScoreStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class HypScores:
    """Scores of a list of hypotheses under one model, in input order."""

    logprob: np.ndarray
    """(n,) float64: sum over tokens (EOS included) of log p(y_t | y_<t, source)."""
    n_tokens: np.ndarray
    """(n,) int64: target tokens including EOS."""
    n_unk: np.ndarray
    """(n,) int64: target tokens outside the model's vocabulary."""
    src_tokens: int = 0
    src_unk: int = 0
    stats: ScoreStats = field(default_factory=ScoreStats)


# --------------------------------------------------------------------------------------------
# The tokenisation bridge: n-best tokens and raw sources -> the model's token ids.


def resolve_escaped(escaped: bool | None, sample: Sequence[Sequence[str]]) -> bool:
    """The escaping convention of a tokenized text: given, or detected from sample token lists."""
    if escaped is not None:
        return escaped
    return any(looks_escaped(tokens) for tokens in sample)


def source_tokens(
    lines: Sequence[str], bundle: ModelBundle, *, tokenized: bool, escaped: bool = False
) -> list[list[str]]:
    """Sources as model tokens: raw text through the model's tokeniser, or pre-tokenized text
    (escaping convention `escaped`) mapped to the model's convention."""
    if tokenized:
        return [to_model_tokens(line.split(), bundle.src_tok, escaped=escaped) for line in lines]
    return [tokenize(line, bundle.src_tok) for line in lines]


def hypothesis_ids(
    hyps: Sequence[Sequence[str]], bundle: ModelBundle, *, escaped: bool
) -> list[list[int]]:
    """n-best hypotheses (Moses tokens) as target ids under the model's tokeniser settings."""
    enc = bundle.tgt_vocab.encode
    cfg = bundle.tgt_tok
    return [
        target_order(enc(to_model_tokens(h, cfg, escaped=escaped)), bundle.config) for h in hyps
    ]


# --------------------------------------------------------------------------------------------
# The numeric core.


def length_batches(lengths: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """Split rows already sorted by ascending length into [start, end) batches whose padded size
    (rows x longest row) stays within `max_tokens` (a single over-long row gets its own batch)."""
    out: list[tuple[int, int]] = []
    start, n = 0, len(lengths)
    while start < n:
        end = start + 1
        while end < n and (end + 1 - start) * int(lengths[end]) <= max_tokens:
            end += 1
        out.append((start, end))
        start = end
    return out


def _padded(rows: Sequence[Sequence[int]], append_eos: bool) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 matrix of `rows` (plus EOS) and their lengths."""
    extra = 1 if append_eos else 0
    lens = np.fromiter((len(r) + extra for r in rows), dtype=np.int64, count=len(rows))
    mat = np.full((len(rows), max(1, int(lens.max(initial=1)))), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        mat[i, : len(r)] = r
        if append_eos:
            mat[i, len(r)] = EOS
    return mat, lens


def trie_nodes(tgt: np.ndarray, lens: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Prefix-trie node id (0..n_nodes-1) of every real position of `tgt`, row-major.

    Position t of a row (a sentence's hypothesis) is the node "source + y_<t": rows of one
    sentence sharing their first t tokens share it, so its softmax normaliser is computed once.
    Vectorised: sort rows lexicographically, take the common prefix of neighbours, forward-fill.
    """
    n, t_max = tgt.shape
    order = np.lexsort((*(tgt[:, j] for j in range(t_max - 1, -1, -1)), sent))
    st, ss = tgt[order], sent[order]
    lcp = np.zeros(n, dtype=np.int64)  # common prefix with the previous sorted row; 0 for row 0
    if n > 1:
        same = (st[1:] == st[:-1]) & (ss[1:] == ss[:-1])[:, None]
        lcp[1:] = np.cumprod(same, axis=1).sum(axis=1)
        lcp[1:][ss[1:] != ss[:-1]] = -1
    lcp[0] = -1
    pos = np.arange(t_max)[None, :]
    is_new = pos > lcp[:, None]  # position t's prefix y_<t is shared iff lcp >= t
    ids = np.where(is_new, np.arange(n * t_max).reshape(n, t_max), -1)
    ids = np.maximum.accumulate(ids, axis=0)  # forward-fill each column from the last new row
    node = np.empty_like(ids)
    node[order] = ids
    real = pos < lens[:, None]
    _, compact = np.unique(node[real], return_inverse=True)
    return compact.astype(np.int64)


@contextlib.contextmanager
def _autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def encode_sources(
    model: Seq2Seq, src_ids: Sequence[Sequence[int]], max_tokens: int, device: torch.device
) -> State:
    """The decoder's initial state for every source, in input order, batched by length (fp32):
    (h, c), plus (memory, keys, mask) padded to the longest source for attention models."""
    c = model.config
    n = len(src_ids)
    lens = np.fromiter((max(1, len(s)) for s in src_ids), dtype=np.int64, count=n)
    width = int(lens.max(initial=1))
    parts = [torch.zeros(c.layers, n, c.hidden, device=device) for _ in range(2)]
    if model.has_attention:
        parts += [torch.zeros(n, width, c.hidden, device=device) for _ in range(2)]
        parts.append(torch.zeros(n, width, dtype=torch.bool, device=device))
    order = np.argsort(lens, kind="stable")
    for start, end in length_batches(lens[order], max_tokens):
        idx = order[start:end]
        mat, ln = _padded([src_ids[i] for i in idx], append_eos=False)
        src = torch.from_numpy(mat).to(device)
        where = torch.from_numpy(idx).to(device)
        state = model.encode(src, torch.from_numpy(ln))
        for dim, (full, part) in enumerate(zip(parts, state, strict=True)):
            if dim < 2:
                full.index_copy_(1, where, part.float())
            else:
                full[where, : part.size(1)] = part if part.dtype == torch.bool else part.float()
    return tuple(parts)


READOUT_FLOATS = 1 << 24
"""Cap on attention memory gathered in one call (rows x source length x hidden floats)."""

DENSE_ATTENTION_COLUMNS = 2048
"""Up to this many encoder positions in all (sources x longest), bilinear attention scores every
row against all of them in one matmul and masks other sources' positions, instead of gathering
each row's memory (a copy of rows x length x hidden floats)."""


def readout_rows(
    model: Seq2Seq,
    h: torch.Tensor,
    enc: State,
    rows: torch.Tensor,
    products: StepProducts | None = None,
) -> torch.Tensor:
    """The output layer's input for top-layer states `h` (n, hidden) whose sources are rows
    `rows` of `enc`, in slices that bound memory; `products` (`Seq2Seq.step_products`) runs the
    bilinear attention's output product prepared."""
    if not model.has_attention:
        return h
    memory, keys, mask = enc[2], enc[3], enc[4]
    n_src, width, hidden = memory.shape
    dense = model.config.attention == "luong" and n_src * width <= DENSE_ATTENTION_COLUMNS
    per_row = n_src * width if dense else width * hidden
    step = max(1, READOUT_FLOATS // max(1, per_row))
    out = torch.empty_like(h)
    for s in range(0, h.size(0), step):
        sl = slice(s, min(s + step, h.size(0)))
        if dense:
            out[sl] = _dense_luong(model, h[sl], memory, keys, mask, rows[sl], products)
        else:
            out[sl] = model.readout(h[sl].unsqueeze(1), enc, rows[sl]).squeeze(1)
    return out


def _dense_luong(
    model: Seq2Seq,
    h: torch.Tensor,
    memory: torch.Tensor,
    keys: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    products: StepProducts | None = None,
) -> torch.Tensor:
    """`model.readout` for bilinear attention, scoring against every source's positions at once."""
    n_src, width, hidden = memory.shape
    scores = (h @ keys.reshape(n_src * width, hidden).t()).float()
    col_src = torch.arange(n_src * width, device=h.device) // width
    own = (col_src.unsqueeze(0) == rows.unsqueeze(1)) & mask.reshape(1, -1)
    weights = torch.softmax(scores.masked_fill(~own, float("-inf")), dim=-1).to(memory.dtype)
    return model.attentional(weights @ memory.reshape(n_src * width, hidden), h, products)


OUTPUT_ROWS_FLOATS = 1 << 25
"""Cap on output-layer logits computed in one call (rows x vocabulary floats), bounding memory."""


def _logsumexp_(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise log-sum-exp in fp32, overwriting `logits` (in place: ~3x faster than
    `torch.logsumexp`, which allocates a temporary as large as the logits)."""
    x = logits.float()
    m = x.amax(dim=-1, keepdim=True)
    return x.sub_(m).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))


def _row_chunks(n: int, vocab: int) -> Iterator[slice]:
    step = max(1, OUTPUT_ROWS_FLOATS // max(vocab, 1))
    for s in range(0, n, step):
        yield slice(s, min(s + step, n))


def _padded_row_sums(
    model: Seq2Seq,
    tgt: np.ndarray,
    lens: np.ndarray,
    rows_src: np.ndarray,
    enc: State,
    cfg: ScoringConfig,
    stats: ScoreStats,
) -> np.ndarray:
    """Length-sorted batches, one decoder call each: log_softmax + gather at real positions."""
    device = enc[0].device
    order = np.argsort(lens, kind="stable")  # ties keep input order: a pure function of inputs
    lens_o = lens[order]
    batches = length_batches(lens_o, cfg.max_tokens)
    stats.n_batches += len(batches)
    stats.n_padded_tokens += sum((e - s) * int(lens_o[e - 1]) for s, e in batches)
    stats.n_softmax_rows += int(lens.sum())
    sums = np.empty(len(lens), dtype=np.float64)
    vocab = model.config.tgt_vocab_size
    for start, end in batches:
        idx = order[start:end]
        tgt_out = torch.from_numpy(tgt[idx, : int(lens_o[end - 1])]).to(device)
        rows = torch.from_numpy(rows_src[idx]).to(device)
        state = select_state((enc[0], enc[1]), rows)
        mask = tgt_out != PAD
        y = tgt_out[mask]
        with _autocast(device, cfg.bf16):
            hs, _ = model.decoder(model.tgt_emb(shift_right(tgt_out)), state)
            h = hs[mask]  # (real tokens, hidden), row-major
            h = readout_rows(model, h, enc, rows.repeat_interleave(mask.sum(1)))
        logp = torch.empty(h.shape[0], dtype=torch.float32, device=device)
        for sl in _row_chunks(h.shape[0], vocab):
            with _autocast(device, cfg.bf16):
                logits = model.out(h[sl])
            picked = logits.gather(1, y[sl, None]).squeeze(1).float()
            logp[sl] = picked - _logsumexp_(logits)
        sums[idx] = _row_sums(logp, lens_o[start:end])
    return sums


def _row_sums(tok_logp: torch.Tensor, lens: np.ndarray) -> np.ndarray:
    """Per-row float64 sums of row-major token log-probs (rows of `lens` >= 1 tokens), summed on
    the CPU in a fixed order, so results are bit-reproducible on any device (no atomics)."""
    flat = tok_logp.double().cpu().numpy()
    return np.add.reduceat(flat, np.concatenate(([0], np.cumsum(lens)[:-1])))


def _lstm_weights(model: Seq2Seq, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's decoder weights as [W_ih | W_hh] and b_ih + b_hh: one matmul per cell step."""
    d = model.decoder
    w = torch.cat([getattr(d, f"weight_ih_l{layer}"), getattr(d, f"weight_hh_l{layer}")], dim=1)
    return w.t().contiguous(), getattr(d, f"bias_ih_l{layer}") + getattr(d, f"bias_hh_l{layer}")


def _trie_row_sums(
    model: Seq2Seq,
    tgt: np.ndarray,
    lens: np.ndarray,
    rows_src: np.ndarray,
    enc: State,
    cfg: ScoringConfig,
    stats: ScoreStats,
) -> np.ndarray:
    """Decode the prefix trie of every sentence's hypotheses level by level: each distinct prefix
    gets one LSTM step and one softmax, all nodes of a depth (across sentences) in one batch."""
    device = enc[0].device
    c = model.config
    node = trie_nodes(tgt, lens, rows_src)  # per real position, row-major
    r_idx, t_idx = np.nonzero(np.arange(tgt.shape[1])[None, :] < lens[:, None])
    first = np.unique(node, return_index=True)[1]  # a position of every node
    n_nodes = len(first)
    depth = t_idx[first]
    tok_in = np.where(depth == 0, BOS, tgt[r_idx[first], np.maximum(depth - 1, 0)])
    # The parent of a node at depth t > 0 is the node of the same row at t - 1: the previous
    # flattened position. Relabel nodes by depth so that every level is a contiguous range.
    by_depth = np.argsort(depth, kind="stable")
    new_id = np.empty(n_nodes, dtype=np.int64)
    new_id[by_depth] = np.arange(n_nodes)
    depth, tok_in, first = depth[by_depth], tok_in[by_depth], first[by_depth]
    parent = np.where(depth > 0, new_id[node[np.maximum(first - 1, 0)]], -1)
    sent = rows_src[r_idx[first]]
    node = new_id[node]
    level = np.searchsorted(depth, np.arange(int(depth.max()) + 2))
    tok_order = np.argsort(t_idx, kind="stable")  # positions grouped by depth
    tok_level = np.searchsorted(t_idx[tok_order], np.arange(int(depth.max()) + 2))
    stats.n_softmax_rows += n_nodes
    stats.n_batches += sum(
        -(-(int(level[d + 1]) - int(level[d])) // cfg.max_tokens) for d in range(len(level) - 1)
    )

    y_all = torch.from_numpy(tgt[r_idx, t_idx]).to(device)
    node_t = torch.from_numpy(node).to(device)
    lse = torch.empty(n_nodes, dtype=torch.float32, device=device)
    tok_logit = torch.empty(len(node), dtype=torch.float32, device=device)
    # fp32 on the CPU: the search's prepared products (oneDNN-packed weights, the first layer's
    # input gates looked up per token); otherwise plain matrices, under autocast where asked.
    prod = model.step_products() if device.type == "cpu" and not cfg.bf16 else None
    weights = [_lstm_weights(model, layer) for layer in range(c.layers)] if prod is None else []
    w_out, b_out = model.out.weight, model.out.bias
    sent_t = torch.from_numpy(sent).to(device)
    prev_h = prev_c = enc[0]  # replaced per level; level 0 reads the encoder states
    for d in range(len(level) - 1):
        lo, hi = int(level[d]), int(level[d + 1])
        cur_h = torch.empty(c.layers, hi - lo, c.hidden, device=device)
        cur_c = torch.empty_like(cur_h)
        cur_r = torch.empty(hi - lo, c.hidden, device=device) if model.has_attention else cur_h[-1]
        for s in range(lo, hi, cfg.max_tokens):
            e = min(s + cfg.max_tokens, hi)
            src = sent[s:e] if d == 0 else parent[s:e] - int(level[d - 1])
            at = torch.from_numpy(src).to(device)
            h_prev, c_prev = (enc[0], enc[1]) if d == 0 else (prev_h, prev_c)
            tok = torch.from_numpy(tok_in[s:e]).to(device)
            x = model.tgt_emb(tok) if prod is None else tok
            for layer in range(c.layers):
                h0, c0 = h_prev[layer].index_select(0, at), c_prev[layer].index_select(0, at)
                if prod is not None and layer == 0:
                    gates = prod.hh0(h0).add_(prod.table.index_select(0, tok))
                elif prod is not None:
                    gates = prod.layers[layer - 1](torch.cat([x, h0], dim=1))
                else:
                    w_t, bias = weights[layer]
                    with _autocast(device, cfg.bf16):
                        gates = torch.cat([x, h0], dim=1) @ w_t
                    gates = gates.float() + bias
                # The prepared products give the cell input doubled, for `fused_cell`.
                h1, c1 = (lstm_cell if prod is None else fused_cell)(gates, c0)
                cur_h[layer, s - lo : e - lo], cur_c[layer, s - lo : e - lo] = h1, c1
                x = h1
            if model.has_attention:
                with _autocast(device, cfg.bf16):
                    x = readout_rows(model, x, enc, sent_t[s:e], prod)
                cur_r[s - lo : e - lo] = x
            for sl in _row_chunks(e - s, c.tgt_vocab_size):
                with _autocast(device, cfg.bf16):
                    logits = model.out(x[sl]) if prod is None else prod.out(x[sl])
                lse[s + sl.start : s + sl.stop] = _logsumexp_(logits)
        # Each position's own logit: a dot product with its node's top-layer state.
        toks = torch.from_numpy(tok_order[tok_level[d] : tok_level[d + 1]]).to(device)
        top = cur_r.index_select(0, node_t[toks] - lo)
        y = y_all[toks]
        tok_logit[toks] = (top * w_out[y].float()).sum(-1) + b_out[y].float()
        prev_h, prev_c = cur_h, cur_c
    return _row_sums(tok_logit - lse[node_t], lens)


def score_ids(
    model: Seq2Seq,
    src_ids: Sequence[Sequence[int]],
    hyp_ids: Sequence[Sequence[int]],
    hyp_src: Sequence[int] | np.ndarray,
    cfg: ScoringConfig,
) -> tuple[np.ndarray, ScoreStats]:
    """log P(hyp | source) (float64, EOS included) for hypotheses given as target ids.

    `hyp_src[i]` indexes the source of hypothesis i in `src_ids`. Deterministic for given inputs.
    """
    stats = ScoreStats(n_hyps=len(hyp_ids))
    n = len(hyp_ids)
    if n == 0:
        return np.zeros(0, dtype=np.float64), stats
    device = torch.device(cfg.device)
    if next(model.parameters()).device.type != device.type:
        raise ValueError(f"the model is on {next(model.parameters()).device}, not {device}")
    hyp_src = np.asarray(hyp_src, dtype=np.int64)

    # Dedup identical (source, ids) pairs; first occurrences in input order.
    first: dict[tuple[int, tuple[int, ...]], int] = {}
    inverse = np.empty(n, dtype=np.int64)
    uniq: list[tuple[int, ...]] = []
    uniq_src: list[int] = []
    for i, ids in enumerate(hyp_ids):
        key = (int(hyp_src[i]), tuple(ids))
        j = first.get(key)
        if j is None:
            j = first[key] = len(uniq)
            uniq.append(key[1])
            uniq_src.append(key[0])
        inverse[i] = j
    stats.n_unique = len(uniq)

    # Encode only the sources that have hypotheses; rows refer to them by position.
    used, rows_src = np.unique(np.asarray(uniq_src, dtype=np.int64), return_inverse=True)
    stats.n_sources = len(used)
    tgt, lens = _padded(uniq, append_eos=True)
    stats.n_target_tokens = int(lens.sum())

    with torch.inference_mode():
        t0 = time.perf_counter()
        enc = encode_sources(model, [src_ids[i] for i in used], cfg.max_tokens, device)
        _sync(device)
        t1 = time.perf_counter()
        # The trie reads the LSTM's float weights; an int8 model runs its own modules instead.
        trie = cfg.share_prefixes and type(model.decoder) is torch.nn.LSTM
        row_sums = _trie_row_sums if trie else _padded_row_sums
        uniq_score = row_sums(model, tgt, lens, rows_src.astype(np.int64), enc, cfg, stats)
        _sync(device)
        stats.encode_s = t1 - t0
        stats.decode_s = time.perf_counter() - t1
    return uniq_score[inverse], stats


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_hypotheses(
    bundle: ModelBundle,
    sources: Sequence[str],
    hyps: Sequence[Sequence[str]],
    hyp_src: Sequence[int] | np.ndarray,
    cfg: ScoringConfig,
    *,
    escaped: bool,
    src_escaped: bool = False,
) -> HypScores:
    """Score n-best hypotheses (Moses tokens) against their sources (raw text, or tokenized when
    `cfg.src_tokenized`) under one model, through the model's own tokeniser settings."""
    src_tok = source_tokens(sources, bundle, tokenized=cfg.src_tokenized, escaped=src_escaped)
    src_ids = [bundle.src_vocab.encode(s) for s in src_tok]
    ids = hypothesis_ids(hyps, bundle, escaped=escaped)
    return _scored(bundle.model, src_ids, ids, hyp_src, cfg)


def _scored(
    model: Seq2Seq,
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    tgt_src: Sequence[int] | np.ndarray,
    cfg: ScoringConfig,
) -> HypScores:
    """`score_ids` with the counts a report needs: target lengths and UNKs, source UNKs."""
    logprob, stats = score_ids(model, src_ids, tgt_ids, tgt_src, cfg)
    n = len(tgt_ids)
    return HypScores(
        logprob=logprob,
        n_tokens=np.fromiter((len(r) + 1 for r in tgt_ids), dtype=np.int64, count=n),
        n_unk=np.fromiter((sum(1 for t in r if t == UNK) for r in tgt_ids), np.int64, n),
        src_tokens=sum(len(s) for s in src_ids),
        src_unk=sum(1 for s in src_ids for t in s if t == UNK),
        stats=stats,
    )


def score_source_given_hypotheses(
    bundle: ModelBundle,
    sources: Sequence[str],
    hyps: Sequence[Sequence[str]],
    hyp_src: Sequence[int] | np.ndarray,
    cfg: ScoringConfig,
    *,
    escaped: bool,
    src_escaped: bool = False,
) -> HypScores:
    """log P(source | hypothesis) under a target-to-source model (trained with the languages
    swapped): each hypothesis is encoded as the model's source and the sentence's source is
    decoded. Counts (`n_tokens`, `n_unk`) are of the decoded source, one row per hypothesis."""
    as_src = [
        bundle.src_vocab.encode(to_model_tokens(h, bundle.src_tok, escaped=escaped)) for h in hyps
    ]
    if cfg.src_tokenized:
        tgt_tok = [
            to_model_tokens(line.split(), bundle.tgt_tok, escaped=src_escaped) for line in sources
        ]
    else:
        tgt_tok = [tokenize(line, bundle.tgt_tok) for line in sources]
    tgt_ids = [target_order(bundle.tgt_vocab.encode(t), bundle.config) for t in tgt_tok]
    targets = [tgt_ids[int(i)] for i in np.asarray(hyp_src, dtype=np.int64)]
    return _scored(bundle.model, as_src, targets, np.arange(len(hyps)), cfg)


# --------------------------------------------------------------------------------------------
# References and checks.


def naive_scores(
    model: Seq2Seq,
    src_ids: Sequence[Sequence[int]],
    hyp_ids: Sequence[Sequence[int]],
    hyp_src: Sequence[int] | np.ndarray,
    device: str = "cpu",
) -> np.ndarray:
    """The reference: one hypothesis at a time, its source re-encoded, `token_logprobs` summed."""
    dev = torch.device(device)
    out = np.empty(len(hyp_ids), dtype=np.float64)
    with torch.inference_mode():
        for i, ids in enumerate(hyp_ids):
            s = list(src_ids[int(hyp_src[i])])
            src = torch.tensor([s if s else [PAD]], dtype=torch.long, device=dev)
            src_len = torch.tensor([len(s)], dtype=torch.long)
            tgt_out = torch.tensor([[*ids, EOS]], dtype=torch.long, device=dev)
            out[i] = float(model.token_logprobs(src, src_len, tgt_out).double().sum())
    return out


def bf16_max_difference(
    model: Seq2Seq,
    src_ids: Sequence[Sequence[int]],
    hyp_ids: Sequence[Sequence[int]],
    hyp_src: Sequence[int] | np.ndarray,
    cfg: ScoringConfig,
) -> float:
    """Largest |bf16 - fp32| log-prob difference over a sample (reported whenever bf16 is on)."""
    fp32, _ = score_ids(model, src_ids, hyp_ids, hyp_src, replace(cfg, bf16=False))
    bf16, _ = score_ids(model, src_ids, hyp_ids, hyp_src, replace(cfg, bf16=True))
    return float(np.max(np.abs(fp32 - bf16), initial=0.0))


def decoder_flops_per_token(model: Seq2Seq) -> tuple[int, int]:
    """Multiply-add FLOPs per target token: (decoder LSTM plus the attention output layer,
    output softmax layer). Attention scores over the source add 4 x hidden x source length more."""
    c = model.config
    lstm = 2 * 4 * c.hidden * (c.emb_dim + c.hidden) * c.layers
    if c.attention != "none":
        lstm += 2 * 2 * c.hidden * c.hidden
    return lstm, 2 * c.hidden * c.tgt_vocab_size
