"""`translate_lines` end to end: a tiny model trained on a copy task, checkpoints on disk, ordered
streaming output, UNK copying, and Moses n-best output read back by our own reader."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nbest_rescore.checkpoint import load_model, model_payload, save_checkpoint
from nbest_rescore.ensemble import EnsembleConfig
from nbest_rescore.errors import CheckpointError
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.search import SearchConfig
from nbest_rescore.text import TokenizerConfig, tokenize
from nbest_rescore.translate import (
    TranslateConfig,
    format_output,
    load_ensemble,
    translate_lines,
    write_outputs,
)
from nbest_rescore.vocab import EOS, PAD, SPECIALS, UNK, Vocab

torch.set_num_threads(1)

WORDS = [
    "cat",
    "dog",
    "red",
    "blue",
    "big",
    "small",
    "man",
    "woman",
    "runs",
    "sits",
    "on",
    "the",
    "a",
    "park",
]
VOCAB = Vocab.build([WORDS])
# The second checkpoint reads the source through another vocabulary (other ids) and lowercases it.
VOCAB2 = Vocab((*SPECIALS, *sorted(WORDS, reverse=True)))
SRC_TOK = TokenizerConfig("en")
SRC_TOK2 = TokenizerConfig("en", lowercase=True)
TGT_TOK = TokenizerConfig("fr")


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((len(seqs), max(1, max(map(len, seqs)))), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, torch.tensor([len(s) for s in seqs])


def train_copy_model(seed: int, steps: int, src_vocab: Vocab, **config: object) -> Seq2Seq:
    """A tiny reversed-source LSTM trained to copy 1-6 word sentences (10% of words are UNK);
    `config` overrides model settings (attention, a right-to-left target)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = ModelConfig.preset(
        "tiny", src_vocab_size=len(src_vocab), tgt_vocab_size=len(VOCAB), **config
    )
    model = Seq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        seqs = [
            [None if rng.random() < 0.1 else rng.choice(WORDS) for _ in range(n)]
            for n in (rng.randint(1, 6) for _ in range(64))
        ]
        src, src_len = _pad([[UNK if w is None else src_vocab.stoi[w] for w in s] for s in seqs])
        order = -1 if cfg.reverse_target else 1
        tgt, _ = _pad(
            [[*[UNK if w is None else VOCAB.stoi[w] for w in s][::order], EOS] for s in seqs]
        )
        loss = -model.token_logprobs(src, src_len, tgt).sum() / (tgt != PAD).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checkpoints on disk: a well-trained copier and a briefly trained one with its own source
    vocabulary and tokeniser settings."""
    out = tmp_path_factory.mktemp("models")
    paths = []
    for seed, steps, src_vocab, src_tok in [(0, 1600, VOCAB, SRC_TOK), (1, 150, VOCAB2, SRC_TOK2)]:
        path = out / f"copy{seed}.pt"
        model = train_copy_model(seed, steps, src_vocab)
        save_checkpoint(path, model_payload(model, src_vocab, VOCAB, src_tok, TGT_TOK))
        paths.append(path)
    return paths


def test_copy_model_translates_end_to_end(checkpoints: list[Path]) -> None:
    rng = random.Random(42)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(25)]
    cfg = TranslateConfig(SearchConfig(beam=4, batch_size=8), window=16)
    results = list(translate_lines([load_model(checkpoints[0])], lines, cfg))
    assert [r.index for r in results] == list(range(len(lines)))
    assert [r.text for r in results] == lines
    assert [format_output(r, "tokens") for r in results] == [line + "\n" for line in lines]


def test_output_order_streaming_and_batching(checkpoints: list[Path]) -> None:
    rng = random.Random(7)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 8))) for _ in range(30)]
    ens = load_ensemble(checkpoints[:1])
    search = SearchConfig(beam=3, nbest=2, batch_size=4)
    one_at_a_time = TranslateConfig(SearchConfig(beam=3, nbest=2, batch_size=1), window=1)
    one_by_one = list(translate_lines(ens, lines, one_at_a_time))
    consumed = 0

    def reader() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line + "\n"

    stream = translate_lines(ens, reader(), TranslateConfig(search, window=8))
    first = next(stream)
    assert first.index == 0 and consumed == 8  # only the first window was read
    batched = [first, *stream]
    assert [r.index for r in batched] == list(range(len(lines)))
    assert [r.source for r in batched] == lines
    for a, b in zip(one_by_one, batched, strict=True):
        assert [h.tokens for h in a.hypotheses] == [h.tokens for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx(
            [h.score for h in b.hypotheses], abs=1e-5
        )


def test_unknown_words_are_copied_in_order(checkpoints: list[Path]) -> None:
    ens = load_ensemble(checkpoints[:1])
    lines = ["the zebra sits on a giraffe", "a small cat"]
    plain = list(translate_lines(ens, lines, TranslateConfig(SearchConfig(beam=4))))
    copied = list(translate_lines(ens, lines, TranslateConfig(SearchConfig(beam=4), copy_unk=True)))
    assert plain[0].text == "the <unk> sits on a <unk>"
    assert [r.text for r in copied] == lines
    assert copied[0].src_tokens == tuple(lines[0].split())
    forbid = list(
        translate_lines(ens, lines[:1], TranslateConfig(SearchConfig(beam=4, forbid_unk=True)))
    )
    assert UNK not in forbid[0].hypotheses[0].ids


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_nbest_output_reads_back_with_teacher_forced_scores(
    checkpoints: list[Path], tmp_path: Path, combine: str
) -> None:
    weights = (0.7, 0.3)
    ens = load_ensemble(checkpoints, EnsembleConfig(combine=combine, weights=weights))  # type: ignore[arg-type]
    lines = ["A big dog runs", "the Woman sits on the park bench", "", "cat"]
    cfg = TranslateConfig(SearchConfig(beam=5, nbest=4, batch_size=3))
    path = tmp_path / "out.nbest"
    with path.open("w", encoding="utf-8") as fh:
        best = write_outputs(translate_lines(ens, lines, cfg), fh, "nbest")
    assert len(best) == len(lines)
    groups = list(read_nbest(path, n_sentences=len(lines)))
    assert [g.sent_id for g in groups] == list(range(len(lines)))
    log_w = torch.log(torch.tensor(weights)).view(-1, 1, 1)
    for line, group in zip(lines, groups, strict=True):
        assert 1 <= len(group.hyps) <= 4
        hyps = [[VOCAB.stoi.get(t, UNK) for t in h.tokens] for h in group.hyps]
        tgt, _ = _pad([[*h, EOS] for h in hyps])
        per_model = []
        for b in ens.bundles:  # each model reads the source its own way
            src_ids = b.src_vocab.encode(tokenize(line, b.src_tok))
            src, src_len = _pad([src_ids] * len(hyps))
            with torch.no_grad():
                per_model.append(b.model.token_logprobs(src, src_len, tgt))
        per_pos = torch.stack(per_model)
        if combine == "prob":
            total = torch.logsumexp(per_pos + log_w, dim=0).masked_fill(tgt == PAD, 0).sum(1)
        else:
            total = (per_pos * log_w.exp()).sum(0).sum(1)
        for i, h in enumerate(group.hyps):
            scores = [h.feature(f"LSTM{m}")[0] for m in range(len(ens.bundles))]
            assert scores == pytest.approx(per_pos[:, i].sum(1).tolist(), abs=1e-4)
            assert h.total == pytest.approx(total[i].item(), abs=1e-4)
        assert [h.total for h in group.hyps] == sorted((h.total for h in group.hyps), reverse=True)
    assert best[3] == "cat"
    assert ens.bundles[1].src_vocab.encode(["a"]) != VOCAB.encode(["a"])


def test_pretokenized_input(checkpoints: list[Path]) -> None:
    ens = load_ensemble(checkpoints[:1])
    raw = list(translate_lines(ens, ["the cat, the dog."], TranslateConfig(SearchConfig(beam=2))))
    tok = list(
        translate_lines(
            ens, ["the cat , the dog ."], TranslateConfig(SearchConfig(beam=2), src_tokenized=True)
        )
    )
    assert raw[0].src_tokens == tok[0].src_tokens == ("the", "cat", ",", "the", "dog", ".")
    assert raw[0].hypotheses == tok[0].hypotheses


def test_mismatched_checkpoints_name_both_files(checkpoints: list[Path], tmp_path: Path) -> None:
    other = Vocab.build([[*WORDS[:-1], "garden"]])
    odd = tmp_path / "odd.pt"
    model = Seq2Seq(
        ModelConfig.preset("tiny", src_vocab_size=len(VOCAB), tgt_vocab_size=len(other))
    )
    save_checkpoint(odd, model_payload(model, VOCAB, other, SRC_TOK, TGT_TOK))
    with pytest.raises(CheckpointError) as err:
        load_ensemble([checkpoints[0], odd])
    assert str(checkpoints[0]) in str(err.value) and str(odd) in str(err.value)
    assert "target vocabularies differ" in str(err.value)


def test_cli_translates_to_a_file_with_a_reference(checkpoints: list[Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nbest_rescore.cli import app

    src = tmp_path / "src.txt"
    src.write_text("the cat sits\nA big dog runs\n")
    out = tmp_path / "out.txt"
    args = ["translate", "-m", str(checkpoints[0]), "-i", str(src), "-o", str(out), "--beam", "2"]
    res = CliRunner().invoke(app, [*args, "--ref", str(src), "-q"])
    assert res.exit_code == 0, res.stderr
    assert len(read_lines(out)) == 2 and "BLEU" in res.stderr
    res = CliRunner().invoke(app, [*args, "--nbest", "5"])
    assert res.exit_code == 2 and "--nbest 5" in res.stderr and "--beam is 2" in res.stderr


def test_attention_r2l_and_mixed_ensembles_translate(
    checkpoints: list[Path], tmp_path: Path
) -> None:
    """An attention model, a right-to-left one (output put back in reading order), and an
    ensemble mixing attention and plain models all copy their input."""
    att = tmp_path / "luong.pt"
    r2l = tmp_path / "r2l.pt"
    for path, over in ((att, {"attention": "luong"}), (r2l, {"reverse_target": True})):
        model = train_copy_model(3, 500, VOCAB, **over)
        save_checkpoint(path, model_payload(model, VOCAB, VOCAB, SRC_TOK, TGT_TOK))
    rng = random.Random(7)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(20)]
    cfg = TranslateConfig(SearchConfig(beam=4))
    for paths in ([att], [r2l], [checkpoints[0], att]):
        results = list(translate_lines(load_ensemble(paths), lines, cfg))
        exact = sum(" ".join(r.best.tokens) == line for r, line in zip(results, lines, strict=True))
        assert exact >= 17, (paths, exact)
    with pytest.raises(CheckpointError, match="opposite directions"):
        load_ensemble([checkpoints[0], r2l])


def test_no_empty_translation_for_a_non_empty_source(checkpoints: list[Path]) -> None:
    """A model that prefers stopping at once: empty output only with --min-len 0."""
    bundle = load_model(checkpoints[0])
    with torch.no_grad():
        bundle.model.out.bias[EOS] += 50.0
    lines = ["cat dog", "the man runs", "", "a"]
    default = list(translate_lines([bundle], lines, TranslateConfig(SearchConfig(beam=3))))
    assert [r.text == "" for r in default] == [False, False, True, False]
    allowed = TranslateConfig(SearchConfig(beam=3, min_len=0))
    assert all(r.text == "" for r in translate_lines([bundle], lines, allowed))


def test_shipped_translation_models_leave_out_rescoring_only_models(
    checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped directory with a left-to-right and a right-to-left model translates with the
    first alone (the R2L model is a rescoring feature)."""
    from nbest_rescore.shipped import ENV_VAR
    from nbest_rescore.translate import shipped_translation_models

    shipped = tmp_path / "models"
    shipped.mkdir()
    (shipped / "a-l2r.pt").write_bytes(checkpoints[0].read_bytes())
    model = train_copy_model(4, 50, VOCAB, reverse_target=True)
    save_checkpoint(shipped / "b-r2l.pt", model_payload(model, VOCAB, VOCAB, SRC_TOK, TGT_TOK))
    monkeypatch.setenv(ENV_VAR, str(shipped))
    bundles = shipped_translation_models()
    assert [Path(b.path).name for b in bundles] == ["a-l2r.pt"]
