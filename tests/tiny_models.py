"""Tiny models of a toy task, shared by the model, search and ensemble tests: right padding,
random sources, and a model nudged by a few Adam steps (cached: each seed trains once)."""

from __future__ import annotations

import functools
import random

import torch

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import EOS, PAD, SPECIALS, Vocab

SRC_VOCAB = Vocab(SPECIALS + tuple("abcdefgh"))
TGT_VOCAB = Vocab((*SPECIALS, "le", "chat", "noir", "dort"))  # 4 real tokens + UNK can be emitted


def pad(seqs: list[list[int]], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (batch, width) ids, `extra` free columns more, and their lengths."""
    width = max(1, max(len(s) for s in seqs) + extra)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, torch.tensor([len(s) for s in seqs])


@functools.cache
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
        src, src_len = pad(srcs)
        tgt, _ = pad(tgts)
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


def sources(n: int, seed: int = 0) -> list[tuple[list[int]]]:
    """`n` random sources of 0-6 ids, each as a one-model ensemble's id lists."""
    rng = random.Random(seed)
    return [([rng.randint(4, 11) for _ in range(rng.randint(0, 6))],) for _ in range(n)]
