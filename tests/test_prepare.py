"""`rescore prepare` and the prepared corpus on the real Multi30k slices; training from it equals
training from text, bit for bit; bad input, damage and kills leave nothing half-written."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_train_script import write_task
from typer.testing import CliRunner

from nbest_rescore.checkpoint import read_checkpoint
from nbest_rescore.cli import app
from nbest_rescore.corpus import DataSettings, IdFile, PreparedData
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.prepare import PrepareConfig, prepare
from nbest_rescore.train import TrainConfig, train
from nbest_rescore.vocab import UNK, Vocab

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    assert res.exit_code != 1, (res.stderr, res.exception)  # never an internal error
    return res.exit_code, res.stdout, res.stderr


def _write(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture()
def corpus(slice_paths: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The real slice's 30 raw pairs: 20 for training (gzipped source), 10 for validation."""
    d = tmp_path / "in"
    d.mkdir()
    en, fr = read_lines(slice_paths["src"]), read_lines(slice_paths["ref"])
    return {
        "train_src": _write(d / "train.en.gz", en[:20]),
        "train_tgt": _write(d / "train.fr", fr[:20]),
        "valid_src": _write(d / "valid.en", en[20:]),
        "valid_tgt": _write(d / "valid.fr.gz", fr[20:]),
    }


def _args(paths: dict[str, Path], out: Path) -> list[str]:
    flags = ("--train-src", "--train-tgt", "--valid-src", "--valid-tgt")
    return [*(x for f, k in zip(flags, paths, strict=True) for x in (f, str(paths[k]))),
            "--out", str(out), "-q"]  # fmt: skip


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_prepared_corpus_is_the_tokenized_text_in_order(
    corpus: dict[str, Path], slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    """Raw text tokenised by 2 workers in chunks of 7 pairs: the ids spell the Moses .tok
    files line by line; the vocabulary is `Vocab.build`'s; validation words unseen in training
    are UNK and counted."""
    settings = DataSettings(src_vocab_size=None, tgt_vocab_size=None)
    cfg = PrepareConfig(**{k: str(v) for k, v in corpus.items()}, out=str(tmp_path / "two"),
                        settings=settings, workers=2, chunk_pairs=7)  # fmt: skip
    res = prepare(cfg)
    assert not res.up_to_date and res.pairs_per_s
    data = PreparedData.open(res.path)
    tok = {lang: [s.split() for s in read_lines(slice_paths[f"tok_{side}"])]
           for lang, side in (("en", "src"), ("fr", "ref"))}  # fmt: skip
    assert data.src_vocab == Vocab.build(tok["en"][:20])
    assert data.tgt_vocab == Vocab.build(tok["fr"][:20])
    for split, rows in (("train", range(20)), ("valid", range(20, 30))):
        c = getattr(data, split)
        for side, lang, vocab in (("src", "en", data.src_vocab), ("tgt", "fr", data.tgt_vocab)):
            got = [getattr(c, side)[i].tolist() for i in range(len(c))]
            assert got == [[vocab.stoi.get(t, UNK) for t in tok[lang][r]] for r in rows]
    unseen = [t for s in tok["fr"][20:] for t in s if t not in data.tgt_vocab.stoi]
    n_valid = sum(map(len, tok["fr"][20:]))
    assert unseen and data.report["oov"]["valid_tgt"]["token"] == len(unseen) / n_valid
    assert data.report["train_words"] == {"src": sum(map(len, tok["en"][:20])),
                                          "tgt": sum(map(len, tok["fr"][:20]))}  # fmt: skip
    # compact and on disk: uint16 ids, uint8 lengths (in memory), int64 offsets, read by rows
    ids, offsets = data.train.src.ids, data.train.src.offsets
    assert isinstance(ids, IdFile) and isinstance(offsets, IdFile)
    assert ids.dtype == np.uint16 and data.train.src.lengths.dtype == np.uint8
    assert offsets.dtype == np.int64 and len(offsets) == len(data.train) + 1
    assert data.manifest["inputs"]["train_src"]["sha256"] and data.manifest["tokenizers"]["src"]
    # one worker in this process writes the same bytes
    one = prepare(PrepareConfig(**{k: str(v) for k, v in corpus.items()},
                                out=str(tmp_path / "one"), settings=settings))  # fmt: skip
    assert _files(Path(one.path)) == _files(Path(res.path))


def test_vocabularies_count_kept_pairs_and_the_filter_is_reported(tmp_path: Path) -> None:
    src = ["a b c", "a b", "", "a " * 9 + "zz", "c c b", "d"]
    tgt = ["x y", "x", "y", "x", "", "y y y"]
    paths = {}
    for role, lines in (("train_src", src), ("train_tgt", tgt), ("valid_src", ["a zz q"]),
                        ("valid_tgt", [""])):  # fmt: skip
        paths[role] = str(_write(tmp_path / role, lines))
    settings = DataSettings(tokenized=True, max_len=5, src_vocab_size=6, vocab_min_count=1)
    data = PreparedData.open(prepare(PrepareConfig(**paths, out=str(tmp_path / "d"),
                                                   settings=settings)).path)  # fmt: skip
    kept_src = [["a", "b", "c"], ["a", "b"], ["d"]]
    assert data.src_vocab == Vocab.build(kept_src, max_size=6)  # "zz" was only in a dropped pair
    assert data.report["train_filter"] == {"total": 6, "kept": 3, "empty": 2, "too_long": 1}
    assert [data.train.src[i].tolist() for i in range(3)] == [
        data.src_vocab.encode(s) for s in kept_src
    ]
    # validation pairs are all kept, even an empty side, and encoded with the vocabulary
    assert len(data.valid) == 1 and data.valid.tgt.lengths.tolist() == [0]
    assert data.valid.src[0].tolist() == [data.src_vocab.stoi["a"], UNK, UNK]


def test_prepare_again_is_a_no_op_that_says_so(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "data"
    code, text, _ = cli("prepare", *_args(corpus, out), "--workers", "1")
    assert code == 0 and "prepared 20 of 20 training pairs" in text
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, text, _ = cli("prepare", *_args(corpus, out), "--workers", "1")
    assert code == 0 and "up to date" in text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # other settings or other input bytes are not this directory's: refused, untouched
    code, _, err = cli("prepare", *_args(corpus, out), "--max-len", "20")
    assert code == 2 and str(out) in err and "other inputs or settings" in err
    _write(corpus["valid_src"], read_lines(corpus["valid_src"])[::-1])
    code, _, err = cli("prepare", *_args(corpus, out))
    assert code == 2 and "other inputs or settings" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "in"]  # no temporary left


@pytest.mark.parametrize(
    ("role", "content", "line", "message"),
    [
        ("train_tgt", "short", 16, "differ in length"),
        ("train_src", "utf8", 5, "invalid UTF-8"),
        ("valid_tgt", "utf8", 3, "invalid UTF-8"),
        ("valid_src", "empty", None, "empty corpus"),
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(
    corpus: dict[str, Path], tmp_path: Path, role: str, content: str, line: int | None,
    message: str,
) -> None:  # fmt: skip
    bad = corpus[role]
    lines = read_lines(bad)
    if content == "short":
        _write(bad, lines[:15])
    elif content == "empty":
        _write(bad, [])
        _write(corpus["valid_tgt"], [])
    else:
        raw = "".join(s + "\n" for s in lines).encode().split(b"\n")
        raw[line - 1] = b"caf\xe9 " + raw[line - 1]  # type: ignore[operator]
        data = b"\n".join(raw)
        bad.write_bytes(gzip.compress(data) if bad.suffix == ".gz" else data)
    out = tmp_path / "data"
    code, _, err = cli("prepare", *_args(corpus, out), "--workers", "2")
    assert code == 2 and message in err, err
    where = f"{bad}:{line}:" if line else str(bad)
    assert where in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_killed_prepare_leaves_no_directory_and_the_next_one_cleans_up(tmp_path: Path) -> None:
    words = np.array([f"w{i}" for i in range(500)])
    rows = words[np.random.default_rng(0).integers(0, 500, (120_000, 12))].tolist()
    src = _write(tmp_path / "s.txt", [" ".join(r) for r in rows])
    valid = _write(tmp_path / "v.txt", ["w1 w2"])
    paths = {"train_src": src, "train_tgt": src, "valid_src": valid, "valid_tgt": valid}
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "nbest_rescore", "prepare", *_args(paths, out), "--tokenized",
           "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not list(tmp_path.glob(".data.prepare-*/train.src.prov")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "prepare ended before the kill"
    assert not out.exists() and len(list(tmp_path.glob(".data.prepare-*"))) == 1
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not list(tmp_path.glob(".data.*")), "the killed run's temporary was not removed"
    assert len(PreparedData.open(out).train) == 120_000


def test_a_damaged_directory_is_refused(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert cli("prepare", *_args(corpus, out))[0] == 0
    ids = out / "train.tgt.ids"
    ids.write_bytes(ids.read_bytes()[:-2])
    with pytest.raises(InputError) as err:
        PreparedData.open(out)
    assert err.value.path == str(ids) and "damaged" in str(err.value)
    code, _, err_text = cli("train", "--data", str(out), "--out", str(tmp_path / "r"), "-q")
    assert code == 2 and str(ids) in err_text
    code, _, err_text = cli("train", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "r"))
    assert code == 2 and "not a prepared-data directory" in err_text


def _train_args(out: Path, *data: str) -> list[str]:
    return ["train", *data, "--out", str(out), "--preset", "tiny", "--batch-size", "16",
            "--epochs", "2", "--lr", "0.01", "--log-every", "1", "--threads", "1", "-q"]  # fmt: skip


def test_training_from_text_equals_training_from_the_prepared_directory(tmp_path: Path) -> None:
    """`train --train-src ...` prepares into OUT/data and trains from it; `prepare` with the
    same settings then `train --data` takes the same steps, bit for bit."""
    paths = write_task(tmp_path / "task", "reverse", n_train=200, n_valid=30)
    texts = [x for k in ("train_src", "train_tgt", "valid_src", "valid_tgt")
             for x in (f"--{k.replace('_', '-')}", paths[k])]  # fmt: skip
    code, _, err = cli(*_train_args(tmp_path / "text", *texts, "--tokenized"))
    assert code == 0, err
    prepared = tmp_path / "prepared"
    code, _, err = cli("prepare", *texts, "--out", str(prepared), "--tokenized",
                       "--src-vocab-size", "64", "--tgt-vocab-size", "64", "--max-len", "50",
                       "-q")  # fmt: skip
    assert code == 0, err
    assert _files(prepared) == _files(tmp_path / "text" / "data")  # paths and bytes alike
    code, _, err = cli(*_train_args(tmp_path / "dir", "--data", str(prepared)))
    assert code == 0, err
    a = read_checkpoint(tmp_path / "text" / "checkpoint_last.pt")
    b = read_checkpoint(tmp_path / "dir" / "checkpoint_last.pt")
    assert a["train_state"]["loop"]["step"] == b["train_state"]["loop"]["step"] == 26
    assert a["train_state"]["data"] == b["train_state"]["data"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    torch.manual_seed(1)
    cfg = TrainConfig.from_dict(a["train_state"]["config"])
    from nbest_rescore.model import Seq2Seq

    init = Seq2Seq(cfg.model_config(len(a["src_vocab"]), len(a["tgt_vocab"]))).state_dict()
    assert max(float((init[k] - a["model"][k]).abs().max()) for k in init) > 1e-2  # it learnt
    # Resuming reuses OUT/data (no second preparation) and its settings may not change.
    stamp = (tmp_path / "text" / "data" / "manifest.json").stat().st_mtime_ns
    code, _, err = cli(*_train_args(tmp_path / "text", *texts, "--tokenized"), "--resume")
    assert code == 0, err
    assert (tmp_path / "text" / "data" / "manifest.json").stat().st_mtime_ns == stamp
    code, _, err = cli(*_train_args(tmp_path / "text", *texts, "--tokenized", "--max-len", "9"),
                       "--resume")  # fmt: skip
    assert code == 2 and "max_len: 50 -> 9" in err


def test_data_settings_belong_to_the_directory(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert cli("prepare", *_args(corpus, out), "--max-len", "30")[0] == 0
    code, _, err = cli("train", "--data", str(out), "--out", str(tmp_path / "r"), "--max-len",
                       "20", "--src-vocab-size", "9")  # fmt: skip
    assert code == 2 and "--src-vocab-size, --max-len: settings of the prepared" in err
    code, _, err = cli("train", "--out", str(tmp_path / "r"))
    assert code == 2 and "--data" in err and "--train-src" in err
    assert not (tmp_path / "r").exists()
    # a run resumed on a directory prepared from other data is refused
    run = TrainConfig.preset_config("tiny", data_dir=str(out), out_dir=str(tmp_path / "r"),
                                    epochs=0.2)  # fmt: skip
    result = train(run)
    assert read_checkpoint(result.last_checkpoint)["train_state"]["config"]["max_len"] == 30
    other = tmp_path / "other"
    _write(corpus["train_tgt"], read_lines(corpus["train_tgt"])[::-1])
    assert cli("prepare", *_args(corpus, other), "--max-len", "30")[0] == 0
    with pytest.raises(CheckpointError, match="other data"):
        train(TrainConfig.from_dict({**run.to_dict(), "data_dir": str(other), "resume": True}))


def test_prepare_refuses_stdin_and_foreign_directories(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    args = _args(corpus, tmp_path / "d")
    code, _, err = cli("prepare", *[("-" if a == str(corpus["train_src"]) else a) for a in args])
    assert code == 2 and "--train-src -" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = cli("prepare", *_args(corpus, busy))
    assert code == 2 and "not a prepared-data directory" in err
    assert os.listdir(busy) == ["notes.txt"]
