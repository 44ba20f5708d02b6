"""The 2014 deep LSTM encoder-decoder: no attention, the encoder's final (h, c) starts the decoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from nbest_rescore.vocab import BOS, EOS, PAD

State = tuple[Tensor, Tensor]
"""Decoder state (h, c), each of shape (layers, batch, hidden)."""

PRESETS: dict[str, dict[str, Any]] = {
    # Sutskever et al. 2014: 4 layers x 1000 cells, 1000-d embeddings, 160k/80k vocabularies.
    "paper": dict(
        src_vocab_size=160_000, tgt_vocab_size=80_000, emb_dim=1000, hidden=1000, layers=4
    ),
    # Trains on Multi30k on two CPU cores in well under an hour.
    "small": dict(src_vocab_size=10_000, tgt_vocab_size=10_000, emb_dim=256, hidden=256, layers=2),
    # Unit tests.
    "tiny": dict(src_vocab_size=64, tgt_vocab_size=64, emb_dim=32, hidden=64, layers=1),
}


@dataclass(frozen=True)
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


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` tokens of every row of a right-padded (batch, time) tensor."""
    t = x.size(1)
    pos = torch.arange(t, device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return x.gather(1, idx)


class Seq2Seq(nn.Module):
    """Encoder LSTM and a separate decoder LSTM, p(T|S) = prod_t softmax(W h_t)[y_t]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.src_emb = nn.Embedding(c.src_vocab_size, c.emb_dim, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, c.emb_dim, padding_idx=PAD)
        lstm_dropout = c.dropout if c.layers > 1 else 0.0
        self.encoder = nn.LSTM(
            c.emb_dim, c.hidden, c.layers, batch_first=True, dropout=lstm_dropout
        )
        self.decoder = nn.LSTM(
            c.emb_dim, c.hidden, c.layers, batch_first=True, dropout=lstm_dropout
        )
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden, c.tgt_vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: every parameter uniform in [-init_range, init_range]."""
        r = self.config.init_range
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        """Read right-padded source ids (batch, time) and return the final (h, c) of every layer.

        The source is reversed here (when configured), so every caller sees the same convention.
        """
        if self.config.reverse_source:
            src = reverse_padded(src, src_len)
        emb = self.drop(self.src_emb(src))
        packed = pack_padded_sequence(
            emb, src_len.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, c) = self.encoder(packed)
        return h, c

    def decode(self, tgt_in: Tensor, state: State) -> Tensor:
        """Teacher-forced decoder: logits (batch, time, vocab) for inputs `tgt_in` (BOS + prefix).

        Padding only trails, and the LSTM is causal, so outputs at real positions are exact.
        """
        emb = self.drop(self.tgt_emb(tgt_in))
        hs, _ = self.decoder(emb, state)
        return self.out(self.drop(hs))

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
        hs, new_state = self.decoder(emb, state)
        return torch.log_softmax(self.out(hs.squeeze(1)).float(), dim=-1), new_state


def shift_right(tgt_out: Tensor) -> Tensor:
    """Decoder inputs for targets `y_1..y_n EOS PAD..`: `BOS y_1..y_n PAD..` (EOS never fed)."""
    tgt_in = torch.full_like(tgt_out, PAD)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = tgt_out[:, :-1]
    return tgt_in.masked_fill(tgt_in == EOS, PAD)


def select_state(state: State, index: Tensor) -> State:
    """Pick/reorder batch entries of a decoder state (beam bookkeeping, shared encodings)."""
    h, c = state
    return h.index_select(1, index), c.index_select(1, index)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
