"""Shared fixtures: the real Multi30k/Moses slices and a tiny model trained on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nbest_rescore.checkpoint import model_payload, save_checkpoint
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import EOS, PAD, Vocab

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def slice_paths() -> dict[str, Path]:
    """The real test2016 slice: 30 sentences, top-20 Moses hypotheses each."""
    return {
        "nbest": DATA / "test2016.head30.top20.nbest.gz",
        "src": DATA / "test2016.head30.en.gz",
        "ref": DATA / "test2016.head30.fr.gz",
        "tok_src": DATA / "test2016.head30.tok.en.gz",
        "tok_ref": DATA / "test2016.head30.tok.fr.gz",
    }


@pytest.fixture(scope="session")
def slice_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, slice_paths: dict[str, Path]
) -> Path:
    """A tiny reversed-source model fitted for a few steps to the slice's 30 sentence pairs.

    It is small enough to train in a second, and has learnt enough that its scores are not flat.
    """
    torch.manual_seed(0)
    src = [line.split() for line in read_lines(slice_paths["tok_src"])]
    tgt = [line.split() for line in read_lines(slice_paths["tok_ref"])]
    sv, tv = Vocab.build(src), Vocab.build(tgt)
    model = Seq2Seq(ModelConfig.preset("tiny", src_vocab_size=len(sv), tgt_vocab_size=len(tv)))
    s_ids = [torch.tensor(sv.encode(s)) for s in src]
    t_ids = [torch.tensor([*tv.encode(t), EOS]) for t in tgt]
    s_pad = torch.nn.utils.rnn.pad_sequence(s_ids, batch_first=True, padding_value=PAD)
    t_pad = torch.nn.utils.rnn.pad_sequence(t_ids, batch_first=True, padding_value=PAD)
    s_len = torch.tensor([len(s) for s in s_ids])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss = -model.token_logprobs(s_pad, s_len, t_pad).sum() / len(src)
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(
        path,
        model_payload(model.eval(), sv, tv, TokenizerConfig("en"), TokenizerConfig("fr")),
    )
    return path


MAX_WORKERS = 4
"""`-n auto` uses one worker per core up to this: each worker holds torch and its own fixtures."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
