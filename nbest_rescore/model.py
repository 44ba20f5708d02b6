"""The 2014 deep LSTM encoder-decoder: the encoder's final (h, c) starts the decoder.

`attention="none"` is the paper's model. `"luong"` (bilinear, "general") and `"bahdanau"` (additive,
MLP) add global attention over the encoder's outputs on top of the decoder's last layer, as in
Luong et al. (2015) without input feeding: the recurrence stays a plain `nn.LSTM`, so teacher
forcing runs the whole target in one call and the prefix-trie scorer keeps its (h, c) recurrence.
The attention keys (a projection of the encoder outputs) are computed once per source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol, TypeVar, get_args

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nbest_rescore.vocab import BOS, EOS, PAD

State = tuple[Tensor, ...]
"""Decoder state: (h, c), each (layers, batch, hidden); attention models add (memory, keys, mask),
each with the batch first: encoder outputs (batch, S, hidden), their attention keys, (batch, S) bool."""

Attention = Literal["none", "luong", "bahdanau"]
ATTENTION: tuple[Attention, ...] = get_args(Attention)

GATE_TABLE_MAX = 2**25
"""Most entries (32M floats, 128 MiB) of the decoder's per-token input-gate table (`grid_step`)."""

PRESETS: dict[str, dict[str, Any]] = {
    # Sutskever et al. 2014: 4 layers x 1000 cells, 1000-d embeddings, 160k/80k vocabularies.
    "paper": dict(
        src_vocab_size=160_000, tgt_vocab_size=80_000, emb_dim=1000, hidden=1000, layers=4
    ),
    # Trains on Multi30k on two CPU cores in well under an hour.
    "small": dict(src_vocab_size=10_000, tgt_vocab_size=10_000, emb_dim=256, hidden=256, layers=2),
    # Multi30k to convergence on two CPU cores (see train.TRAIN_PRESETS["multi30k"]).
    "multi30k": dict(
        src_vocab_size=10_000, tgt_vocab_size=10_000, emb_dim=256, hidden=512, layers=2
    ),
    # Unit tests.
    "tiny": dict(src_vocab_size=64, tgt_vocab_size=64, emb_dim=32, hidden=64, layers=1),
}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of `Seq2Seq`. `reverse_source` is part of the model: it decides what the encoder sees."""

    src_vocab_size: int
    tgt_vocab_size: int
    emb_dim: int = 1000
    hidden: int = 1000
    layers: int = 4
    dropout: float = 0.0
    init_range: float = 0.08
    reverse_source: bool = True
    attention: Attention = "none"
    """`none` (the paper), `luong` (bilinear score) or `bahdanau` (additive score)."""
    reverse_target: bool = False
    """Right-to-left model: trained on reversed targets; scorers and search reverse the ids."""

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown attention {self.attention!r}; choose from {ATTENTION}")

    @property
    def kind(self) -> str:
        """A short human name: `reversed-source` / `forward`, with `attention` and `r2l` marks."""
        parts = ["reversed-source" if self.reverse_source else "forward"]
        if self.attention != "none":
            parts.append(f"{self.attention}-attention")
        if self.reverse_target:
            parts.append("r2l")
        return " ".join(parts)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset (`paper`, `small`, `tiny`) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def with_vocab_sizes(self, src: int, tgt: int) -> ModelConfig:
        return replace(self, src_vocab_size=src, tgt_vocab_size=tgt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**d)


class _Directed(Protocol):
    @property
    def reverse_target(self) -> bool: ...


_Seq = TypeVar("_Seq", list[int], tuple[int, ...], list[str])


def target_order(seq: _Seq, config: _Directed) -> _Seq:
    """Target ids (or tokens) in the order a model reads them, reversed for right-to-left models;
    the same call turns a right-to-left model's output back. `config`: a model's or a training
    run's settings."""
    return seq[::-1] if config.reverse_target else seq


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` tokens of every row of a right-padded (batch, time) tensor."""
    t = x.size(1)
    pos = torch.arange(t, device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return x.gather(1, idx)


@dataclass(frozen=True)
class _Linear:
    """x W^T + b for inference, the weight prepared once for many products.

    On a CPU where torch has oneDNN, the weight is stored in oneDNN's packed layout and the
    product runs there; elsewhere `addmm`. On an AVX2 EPYC, beam search takes 0.87x the time
    of `addmm` with identical output (bench/bench_gemm.py): the output layer (vocabulary x
    hidden) gains most, 1.4x alone; the square products gain little, or lose in a hot loop.
    """

    weight: Tensor
    bias: Tensor | None
    packed: Tensor | None

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None) -> _Linear:
        packed = None
        if weight.device.type == "cpu" and weight.dtype == torch.float32:
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            except (AttributeError, RuntimeError):  # a torch without oneDNN's linear
                packed = None
        return cls(weight, bias, packed)

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            out: Tensor = torch.ops.mkldnn._linear_pointwise(
                x, self.packed, self.bias, "none", [], ""
            )
            return out
        return nn.functional.linear(x, self.weight, self.bias)


def tanh_doubled(x2: Tensor) -> Tensor:
    """tanh(x) from `x2` = 2x (overwritten): 2 sigmoid(2x) - 1, within 2e-7 of `torch.tanh` and
    0.43x its time on an AVX2 CPU at 768 x 512, the doubling included (bench/bench_step_ops.py)."""
    return x2.sigmoid_().mul_(2).sub_(1)


def lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM cell update from gate pre-activations laid out [i, f, g, o], as `nn.LSTM`'s
    weights give them: the new (h, c) = (o tanh(c'), f c + i tanh(g))."""
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def fused_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM cell update from gate pre-activations laid out [i, f, 2g, o] (the cell input
    doubled, as `StepProducts`'s products give them), so that one in-place sigmoid serves all
    four gates: tanh(g) = 2 sigmoid(2g) - 1. Returns the new (h, c); `gates` is overwritten."""
    s = gates.sigmoid_()
    i, f, g, o = s.chunk(4, dim=1)
    c_new = torch.addcmul(f * c, i, g.mul_(2).sub_(1))
    return o * tanh_doubled(c_new * 2), c_new


@dataclass(frozen=True)
class StepProducts:
    """`Seq2Seq._gate_table`'s cache: the weights' (address, version) it was built from, the
    first layer's per-token input gates (both biases in) and hidden product, every further
    layer's [W_ih W_hh] product (b_ih + b_hh), and the readout's products (`att_out` with
    attention, `out`).

    The gate products' cell-input block (rows 2H:3H, g) and `att_out` are stored doubled, for
    `fused_cell` and `tanh_doubled`: scaling by 2 is exact, so they give exactly 2x the
    original pre-activations.
    """

    key: tuple[tuple[int, int], ...]
    table: Tensor
    hh0: _Linear
    layers: tuple[_Linear, ...]
    att_out: _Linear | None
    out: _Linear


def _embedding(n: int, dim: int, init: bool) -> nn.Embedding:
    if init:
        return nn.Embedding(n, dim, padding_idx=PAD)
    return nn.Embedding(n, dim, padding_idx=PAD, _weight=torch.empty(n, dim))


class Seq2Seq(nn.Module):
    """Encoder LSTM and a separate decoder LSTM, p(T|S) = prod_t softmax(W r_t)[y_t], where the
    readout r_t is the decoder's top state h_t, or tanh(W_c [context_t; h_t]) with attention."""

    def __init__(self, config: ModelConfig, *, init: bool = True) -> None:
        """`init=False` leaves the weights uninitialised, for a shape-only shell or a model whose
        weights are loaded next: start-up then skips the random draws, and on the meta device
        the embeddings' normal init, which imports torch._dynamo (seconds)."""
        super().__init__()
        self.config = config
        c = config
        self.src_emb = _embedding(c.src_vocab_size, c.emb_dim, init)
        self.tgt_emb = _embedding(c.tgt_vocab_size, c.emb_dim, init)
        lstm_dropout = c.dropout if c.layers > 1 else 0.0
        self.encoder = nn.LSTM(
            c.emb_dim, c.hidden, c.layers, batch_first=True, dropout=lstm_dropout
        )
        self.decoder = nn.LSTM(
            c.emb_dim, c.hidden, c.layers, batch_first=True, dropout=lstm_dropout
        )
        self.drop = nn.Dropout(c.dropout)
        if c.attention != "none":
            self.att_key = nn.Linear(c.hidden, c.hidden, bias=c.attention == "bahdanau")
            self.att_out = nn.Linear(2 * c.hidden, c.hidden, bias=False)
        if c.attention == "bahdanau":
            self.att_query = nn.Linear(c.hidden, c.hidden, bias=False)
            self.att_v = nn.Linear(c.hidden, 1, bias=False)
        self.out = nn.Linear(c.hidden, c.tgt_vocab_size)
        self._gate_cache: StepProducts | None = None
        if init:
            self.reset_parameters()

    @property
    def has_attention(self) -> bool:
        return self.config.attention != "none"

    def reset_parameters(self) -> None:
        """The paper's initialisation: every parameter uniform in [-init_range, init_range]."""
        r = self.config.init_range
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        """Read right-padded source ids (batch, time) and return the decoder's initial state: the
        final (h, c) of every layer, plus (memory, keys, mask) for attention models.

        The source is reversed here (when configured), so every caller sees the same convention.
        """
        if self.config.reverse_source:
            src = reverse_padded(src, src_len)
        emb = self.drop(self.src_emb(src))
        packed = pack_padded_sequence(
            emb, src_len.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h, c) = self.encoder(packed)
        if not self.has_attention:
            return h, c
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        mask = torch.arange(src.size(1), device=src.device)[None, :] < src_len.clamp(min=1).to(
            src.device
        ).unsqueeze(1)
        return h, c, memory, self.att_key(memory), mask

    def readout(self, hs: Tensor, state: State, rows: Tensor | None = None) -> Tensor:
        """What the output layer reads for top-layer decoder states `hs` (batch, time, hidden):
        `hs` itself, or the attentional state. `rows` maps each batch row to its source's row of
        the state's memory (default: the same row), so many prefixes can share one encoding."""
        if not self.has_attention:
            return hs
        memory, keys, mask = state[2], state[3], state[4]
        if rows is not None:
            memory, keys, mask = memory[rows], keys[rows], mask[rows]
        if self.config.attention == "luong":
            scores = torch.bmm(hs, keys.transpose(1, 2))  # (b, t, s)
        else:
            q = self.att_query(hs)  # (b, t, h)
            scores = self.att_v(torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(memory.dtype)
        return self.attentional(torch.bmm(weights, memory), hs)

    def attentional(
        self, context: Tensor, hs: Tensor, products: StepProducts | None = None
    ) -> Tensor:
        """The attentional state tanh(W_c [context; h]) the output layer reads; with `products`
        (`step_products`), by its prepared (doubled) W_c and `tanh_doubled`."""
        both = torch.cat([context, hs], dim=-1)
        if products is None or products.att_out is None:
            return torch.tanh(self.att_out(both))
        return tanh_doubled(products.att_out(both))

    def decode(self, tgt_in: Tensor, state: State) -> Tensor:
        """Teacher-forced decoder: logits (batch, time, vocab) for inputs `tgt_in` (BOS + prefix).

        Padding only trails, and the LSTM is causal, so outputs at real positions are exact.
        """
        emb = self.drop(self.tgt_emb(tgt_in))
        hs, _ = self.decoder(emb, (state[0], state[1]))
        return self.out(self.drop(self.readout(hs, state)))

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Log-probabilities (batch, time, vocab) of the next target token at every position."""
        return torch.log_softmax(self.decode(tgt_in, self.encode(src, src_len)).float(), dim=-1)

    def token_logprobs(self, src: Tensor, src_len: Tensor, tgt_out: Tensor) -> Tensor:
        """log p(y_t | y_<t, S) for every target position (batch, time); 0 at PAD positions.

        `tgt_out` holds y_1..y_n EOS, right-padded; the decoder input is BOS y_1..y_n.
        """
        tgt_in = shift_right(tgt_out)
        logp = self(src, src_len, tgt_in)
        picked = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(tgt_out == PAD, 0.0)

    def step(self, prev: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoder step for search: log-probs (n, vocab) of the token after `prev` (n,)."""
        emb = self.tgt_emb(prev).unsqueeze(1)
        hs, (h, c) = self.decoder(emb, (state[0], state[1]))
        r = self.readout(hs, state).squeeze(1)
        return torch.log_softmax(self.out(r).float(), dim=-1), (h, c, *state[2:])

    def grid_step(
        self, prev: Tensor, hc: tuple[Tensor, Tensor], enc: State, slots: Tensor | None, width: int
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One decoder step for beam search's rows: log-probs (n, vocab) after `prev` (n,), new (h, c).

        The rows sit on a (sentences x `width`) grid: `slots` (n,) are their flat positions in it,
        None when every position holds a row, in order. `enc` is `encode`'s state, one entry per
        sentence, so attention reads each sentence's memory in place: the rows of a sentence
        share it, and it is never copied per row.
        """
        gt = self.step_products()
        h, c = self._decoder_cell(prev, hc[0], hc[1], gt)
        top = h[-1]
        if self.has_attention:
            top = self._grid_readout(top, enc, slots, width, gt)
        logits = self.out(top) if gt is None else gt.out(top)
        return torch.log_softmax(logits.float(), dim=-1), (h, c)

    def _grid_readout(
        self, hs: Tensor, enc: State, slots: Tensor | None, width: int, gt: StepProducts | None
    ) -> Tensor:
        """The attentional state of rows `hs` (n, hidden) laid out as in `grid_step`."""
        memory, keys, mask = enc[2], enc[3], enc[4]
        nb, hidden = memory.size(0), hs.size(-1)
        if slots is None:
            q = hs.view(nb, width, hidden)
        else:  # empty slots read zeros; their results are dropped below
            q = hs.new_zeros(nb * width, hidden).index_copy_(0, slots, hs).view(nb, width, hidden)
        if self.config.attention == "luong":
            scores = torch.bmm(q, keys.transpose(1, 2))  # (nb, width, s)
        else:
            qp = self.att_query(q)
            scores = self.att_v(torch.tanh(qp.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(memory.dtype)
        context = torch.bmm(weights, memory).view(nb * width, hidden)
        if slots is not None:
            context = context.index_select(0, slots)
        return self.attentional(context, hs, gt)

    def _decoder_cell(
        self, prev: Tensor, h: Tensor, c: Tensor, gt: StepProducts | None
    ) -> tuple[Tensor, Tensor]:
        """All decoder layers for one token per row: new (h, c), each (layers, n, hidden).

        With `gt` (eval mode, a plain `nn.LSTM`, not a quantized one) this is one fused step: the
        first layer's input gates come from a per-token table (embedding x input weights, both
        biases), so that layer's input product is a lookup, and each further layer is one matrix
        product of [input; h]. Without, the LSTM module itself runs.
        """
        if gt is None:
            emb = self.tgt_emb(prev).unsqueeze(1)
            _, (h2, c2) = self.decoder(emb, (h, c))
            return h2, c2
        hs, cs = [], []
        x = h[0]  # replaced by each layer's output; layer 0 reads the table instead
        for layer in range(self.config.layers):
            if layer == 0:
                gates = gt.hh0(h[0]).add_(gt.table.index_select(0, prev))
            else:
                gates = gt.layers[layer - 1](torch.cat([x, h[layer]], dim=1))
            x, c_new = fused_cell(gates, c[layer])
            hs.append(x)
            cs.append(c_new)
        return torch.stack(hs), torch.stack(cs)

    def step_products(self) -> StepProducts | None:
        """The decoder's products prepared for inference (`_gate_table`): in eval mode with a
        plain `nn.LSTM` (not a quantized one) and a table within `GATE_TABLE_MAX`; else None."""
        if self.training or type(self.decoder) is not nn.LSTM:
            return None
        return self._gate_table()

    def _gate_table(self) -> StepProducts | None:
        """The first decoder layer's input gates for every target token, (vocab, 4 * hidden),
        the further layers' [input; hidden] weights and the readout's; None where the table
        would pass `GATE_TABLE_MAX` entries (the paper's 80k x 4000 would take 1.3 GB).

        Rebuilt whenever a weight it reads changed in place (an optimizer step) or moved, so a
        model that trains between searches never decodes with stale weights.
        """
        d = self.decoder
        if self.config.tgt_vocab_size * 4 * self.config.hidden > GATE_TABLE_MAX:
            return None
        readout = [
            *(self.att_out.parameters() if self.has_attention else ()),
            *self.out.parameters(),
        ]
        params = [self.tgt_emb.weight, *d.parameters(), *readout]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._gate_cache is None or self._gate_cache.key != key:
            # Ordinary tensors even when built under inference mode (usable outside it too).
            with torch.inference_mode(False), torch.no_grad():
                w: dict[str, Tensor] = {k: _double_g(v) for k, v in d.named_parameters()}
                table = torch.addmm(
                    w["bias_ih_l0"] + w["bias_hh_l0"], self.tgt_emb.weight, w["weight_ih_l0"].t()
                )
                layers = tuple(
                    _Linear.of(
                        torch.cat([w[f"weight_ih_l{k}"], w[f"weight_hh_l{k}"]], 1),
                        w[f"bias_ih_l{k}"] + w[f"bias_hh_l{k}"],
                    )
                    for k in range(1, self.config.layers)
                )
                hh0 = _Linear.of(w["weight_hh_l0"], None)
                att = _Linear.of(self.att_out.weight * 2, None) if self.has_attention else None
                out = _Linear.of(self.out.weight.detach(), self.out.bias.detach())
            self._gate_cache = StepProducts(key, table, hh0, layers, att, out)
        return self._gate_cache


def _double_g(p: Tensor) -> Tensor:
    """An LSTM weight or bias (4H rows, gates i, f, g, o) with its g block doubled (a copy)."""
    out = p.detach().clone()
    h = out.size(0) // 4
    out[2 * h : 3 * h] *= 2
    return out


def shift_right(tgt_out: Tensor) -> Tensor:
    """Decoder inputs for targets `y_1..y_n EOS PAD..`: `BOS y_1..y_n PAD..` (EOS never fed)."""
    tgt_in = torch.full_like(tgt_out, PAD)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = tgt_out[:, :-1]
    return tgt_in.masked_fill(tgt_in == EOS, PAD)


def select_state(state: State, index: Tensor) -> State:
    """Pick/reorder batch entries of a decoder state (beam bookkeeping, shared encodings)."""
    h, c, *rest = state
    return (
        h.index_select(1, index),
        c.index_select(1, index),
        *(x.index_select(0, index) for x in rest),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
