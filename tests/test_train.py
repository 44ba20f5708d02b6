"""Training: learning synthetic tasks, source reversal, exact kill/resume, errors (nbest_rescore.train)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ddp_train_script import task_pairs, write_task

from nbest_rescore.checkpoint import load_model, read_checkpoint, save_checkpoint
from nbest_rescore.corpus import EncodedCorpus, PreparedData
from nbest_rescore.data import collate
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.train import TrainConfig, cpu_bf16_supported, lr_at, train
from nbest_rescore.vocab import BOS

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _greedy_accuracy(checkpoint: str, task: str, n: int = 200) -> float:
    """Token accuracy of greedy decoding (model.step) on fresh random sequences."""
    b = load_model(checkpoint)
    src, tgt = task_pairs(task, n, seed=3)
    corpus = EncodedCorpus.from_lists(
        [b.src_vocab.encode(s.split()) for s in src], [b.tgt_vocab.encode(t.split()) for t in tgt]
    )
    batch = collate(corpus, list(range(n)))
    with torch.no_grad():
        state = b.model.encode(batch.src, batch.src_len)
        prev = torch.full((n,), BOS, dtype=torch.long)
        steps = []
        for _ in range(batch.tgt_out.size(1) + 2):
            logp, state = b.model.step(prev, state)
            prev = logp.argmax(-1)
            steps.append(prev)
    hyps = torch.stack(steps, 1).tolist()
    correct = total = 0
    for ids, ref in zip(hyps, tgt, strict=True):
        hyp, words = b.tgt_vocab.decode(ids), ref.split()
        total += len(words)
        correct += sum(1 for i, w in enumerate(words) if i < len(hyp) and hyp[i] == w)
    return correct / total


@pytest.mark.parametrize(
    ("task", "reverse", "attention"),
    [("copy", True, "none"), ("reverse", False, "none"), ("copy", True, "luong"),
     ("reverse", False, "bahdanau")],
)  # fmt: skip
def test_tiny_model_learns_task(tmp_path: Path, task: str, reverse: bool, attention: str) -> None:
    paths = write_task(tmp_path / "data", task, n_train=3000)
    cfg = TrainConfig.preset_config(
        "tiny",
        **paths,
        out_dir=str(tmp_path / "run"),
        tokenized=True,
        hidden=128,
        epochs=5,
        lr=0.01,
        reverse_source=reverse,
        attention=attention,
    )
    result = train(cfg)
    assert load_model(result.best_checkpoint).config.attention == attention
    assert result.best_valid_ppl < 1.2
    assert _greedy_accuracy(result.best_checkpoint, task) >= 0.95


def test_reverse_flag_does_not_touch_the_data(tmp_path: Path) -> None:
    """Batches (sources and targets) are identical with and without reversal; only the model differs."""
    paths = write_task(tmp_path / "data", "copy", n_train=60, n_valid=10)
    results = {}
    for rev in (True, False):
        cfg = TrainConfig.preset_config(
            "tiny",
            **paths,
            out_dir=str(tmp_path / f"r{rev}"),
            tokenized=True,
            epochs=0.2,
            reverse_source=rev,
        )
        train(cfg)
        ckpt = read_checkpoint(cfg.out_dir + "/checkpoint_last.pt")
        assert ckpt["model_config"]["reverse_source"] is rev
        results[rev] = ckpt
    assert results[True]["src_vocab"] == results[False]["src_vocab"]
    assert (
        results[True]["train_state"]["data_position"]
        == results[False]["train_state"]["data_position"]
    )


def _kill_resume_config(paths: dict[str, str], out: Path) -> TrainConfig:
    # Two layers with dropout so RNG restoration matters; 2.5 epochs so the last one is partial.
    return TrainConfig.preset_config(
        "tiny",
        **paths,
        out_dir=str(out),
        tokenized=True,
        layers=2,
        hidden=32,
        dropout=0.2,
        batch_size=16,
        epochs=2.5,
        checkpoint_every=5,
        valid_every=7,
        log_every=3,
        num_threads=1,
    )


def test_killed_run_resumes_exactly(tmp_path: Path) -> None:
    paths = write_task(tmp_path / "data", "reverse", n_train=300, n_valid=40)
    full = train(_kill_resume_config(paths, tmp_path / "full"))
    assert full.steps == 48  # 19 batches per epoch x 2.5

    cfg = _kill_resume_config(paths, tmp_path / "killed")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(cfg_file), "--kill-at-step", "23"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    killed = read_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")["train_state"]
    assert killed["loop"]["step"] == 20  # steps 21..23 were lost with the process
    assert killed["data_position"] == {"epoch": 1, "next_batch": 1}

    resumed = train(replace(cfg, resume=True))
    assert resumed.resumed_from_step == 20 and resumed.steps == 48
    # CPU time carries over the kill: the resumed total includes the first process's share
    assert full.cpu_s is not None and resumed.cpu_s is not None
    assert 0 < killed["loop"]["cpu_s"] < resumed.cpu_s
    a = read_checkpoint(full.last_checkpoint)
    b = read_checkpoint(resumed.last_checkpoint)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=1e-6, rtol=0)
    assert math.isclose(full.best_valid_ppl, resumed.best_valid_ppl, rel_tol=1e-6)

    def valid_curve(log: str) -> list[tuple[int, float]]:
        recs = [json.loads(line) for line in Path(log).read_text().splitlines()]
        return [(r["step"], r["valid_ppl"]) for r in recs if r["event"] == "valid"]

    curve_full, curve_resumed = valid_curve(full.log), valid_curve(resumed.log)
    assert [s for s, _ in curve_resumed] == [s for s, _ in curve_full]  # no duplicates left
    for (_, p), (_, q) in zip(curve_full, curve_resumed, strict=True):
        assert math.isclose(p, q, rel_tol=1e-6)


class _Crash(Exception):
    pass


def test_a_checkpoint_of_the_old_batch_order_resumes_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints written before the prepared corpus (Python's random.Random batch order, no
    "batch_order" or "data" in train_state) resume exactly in that order; new runs use numpy's."""
    import nbest_rescore.train as train_module

    paths = write_task(tmp_path / "data", "reverse", n_train=300, n_valid=40)
    new_order = train(_kill_resume_config(paths, tmp_path / "new"))
    monkeypatch.setattr(train_module, "BATCH_ORDER", 1)  # what the old version wrote
    old_full = train(_kill_resume_config(paths, tmp_path / "old"))

    def crash(step: int) -> None:
        if step == 23:
            raise _Crash

    cfg = _kill_resume_config(paths, tmp_path / "killed")
    with pytest.raises(_Crash):
        train(cfg, on_step=crash)
    monkeypatch.undo()
    ckpt = read_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")
    assert ckpt["train_state"]["data_position"] == {"epoch": 1, "next_batch": 1}  # mid-epoch
    del ckpt["train_state"]["batch_order"], ckpt["train_state"]["data"]
    ckpt["train_state"]["config"]["cache_dir"] = None  # a field of the old config
    for k in ("src_vocab_size", "tgt_vocab_size"):  # the old config left the preset's as None
        ckpt["train_state"]["config"][k] = None
    save_checkpoint(tmp_path / "killed" / "checkpoint_last.pt", ckpt)
    resumed = train(replace(cfg, resume=True))
    assert resumed.steps == old_full.steps == new_order.steps == 48
    a, b = read_checkpoint(old_full.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=1e-6, rtol=0)
    assert b["train_state"]["batch_order"] == 1  # and it stays in it
    c = read_checkpoint(new_order.last_checkpoint)
    assert c["train_state"]["batch_order"] == 2
    assert max(float((c["model"][k] - t).abs().max()) for k, t in a["model"].items()) > 1e-3


def test_cpu_time_is_unknown_after_resuming_a_checkpoint_that_lacks_it(tmp_path: Path) -> None:
    """Checkpoints written before CPU time was kept must not yield a total that silently
    counts only the resumed part."""
    paths = write_task(tmp_path / "data", "copy", n_train=64, n_valid=16)
    cfg = TrainConfig.preset_config(
        "tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True, epochs=1, batch_size=16
    )
    first = train(cfg)
    assert first.cpu_s is not None and first.cpu_s > 0
    records = [json.loads(line) for line in Path(first.log).read_text().splitlines()]
    assert all(r["cpu_s"] > 0 for r in records if r["event"] in ("train", "valid"))
    old = read_checkpoint(first.last_checkpoint)
    del old["train_state"]["loop"]["cpu_s"]
    save_checkpoint(first.last_checkpoint, old)
    again = train(replace(cfg, resume=True, epochs=2.0))
    assert again.steps == 8 and again.cpu_s is None


def test_checkpoints_are_self_describing(tmp_path: Path) -> None:
    paths = write_task(tmp_path / "data", "copy", n_train=64, n_valid=16)
    cfg = TrainConfig.preset_config(
        "tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True, epochs=1, batch_size=16
    )
    result = train(cfg)
    last = read_checkpoint(result.last_checkpoint)  # weights_only=True inside
    state = last["train_state"]
    assert state["loop"]["step"] == 4 and state["data_position"] == {"epoch": 1, "next_batch": 0}
    # the config of the run as trained: the data settings it was prepared with spelled out
    assert TrainConfig.from_dict(state["config"]) == cfg.with_data(cfg.data_settings())
    assert state["config"]["src_vocab_size"] == 64  # the tiny preset's
    assert state["data"]["key"] == PreparedData.open(tmp_path / "run" / "data").key
    assert {"torch", "python"} <= set(state["rng"][0])
    bundle = load_model(result.best_checkpoint)
    assert bundle.model.config.reverse_source is True
    records = [json.loads(line) for line in Path(result.log).read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[0] == "data" and "valid" in events and events[-1] == "end"
    data = records[0]
    assert data["train_filter"]["kept"] == 64 and "oov" in data
    assert data["prepared"]["key"] == state["data"]["key"]
    assert data["prepared"]["manifest_sha256"] == state["data"]["manifest_sha256"]


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    paths = write_task(tmp_path / "data", "copy", n_train=32, n_valid=8)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    cfg = TrainConfig.preset_config("tiny", **paths, out_dir=str(out), tokenized=True, resume=True)
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    assert str(out / "checkpoint_last.pt") in str(err.value)


def test_existing_run_needs_resume_and_same_settings(tmp_path: Path) -> None:
    paths = write_task(tmp_path / "data", "copy", n_train=32, n_valid=8)
    cfg = TrainConfig.preset_config(
        "tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True, epochs=0.5
    )
    train(cfg)
    with pytest.raises(InputError, match="--resume"):
        train(cfg)
    with pytest.raises(CheckpointError, match="lr"):
        train(replace(cfg, resume=True, lr=0.5))
    # Longer training is an allowed change on resume.
    assert train(replace(cfg, resume=True, epochs=1.0)).epochs_done == 1.0


def test_corpus_errors_surface_from_train(tmp_path: Path) -> None:
    paths = write_task(tmp_path / "data", "copy", n_train=10, n_valid=5)
    Path(paths["train_tgt"]).write_text("a b\n" * 7)
    cfg = TrainConfig.preset_config("tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True)
    with pytest.raises(InputError) as err:
        train(cfg)
    assert err.value.path == paths["train_tgt"] and err.value.line == 8
    assert paths["train_src"] in str(err.value)


def test_paper_preset_schedule() -> None:
    cfg = TrainConfig.preset_config(
        "paper", train_src="s", train_tgt="t", valid_src="s", valid_tgt="t", out_dir="o"
    )
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size, cfg.epochs, cfg.clip_norm) == (
        "sgd",
        0.7,
        0.0,
        128,
        7.5,
        5.0,
    )
    m = cfg.model_config(160_000, 80_000)
    assert (m.layers, m.hidden, m.emb_dim, m.init_range) == (4, 1000, 1000, 0.08)
    expected = {
        0.0: 0.7,
        4.99: 0.7,
        5.0: 0.35,
        5.49: 0.35,
        5.5: 0.175,
        7.0: 0.7 / 32,
        7.49: 0.7 / 32,
    }
    for epoch, lr in expected.items():
        assert math.isclose(lr_at(cfg, epoch), lr), epoch
    override = TrainConfig.preset_config(
        "paper",
        train_src="s",
        train_tgt="t",
        valid_src="s",
        valid_tgt="t",
        out_dir="o",
        lr=0.1,
        preset="small",
    )
    assert override.lr == 0.1 and override.optimizer == "sgd" and override.preset == "small"


def test_bf16_on_a_cpu_without_bf16_kernels_is_an_error(tmp_path: Path) -> None:
    """Where the CPU has no bf16 kernels, --bf16 is refused before training, naming the cause."""
    if cpu_bf16_supported():
        pytest.skip("this CPU runs bf16: test_options_beyond_the_paper_run trains with it")
    paths = write_task(tmp_path / "data", "copy", n_train=8, n_valid=4)
    cfg = TrainConfig.preset_config(
        "tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True, bf16=True
    )
    with pytest.raises(InputError, match="no bf16 support"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_options_beyond_the_paper_run(tmp_path: Path) -> None:
    """Label smoothing, bf16 autocast (where the CPU has bf16 kernels), token-budget batches and
    early stopping work together."""
    paths = write_task(tmp_path / "data", "copy", n_train=96, n_valid=16)
    cfg = TrainConfig.preset_config(
        "tiny",
        **paths,
        out_dir=str(tmp_path / "run"),
        tokenized=True,
        epochs=30,
        lr=0.0,  # validation cannot improve, so patience must stop the run
        label_smoothing=0.1,
        bf16=cpu_bf16_supported(),
        batch_size=1,
        batch_tokens=100,
        valid_every=2,
        log_every=1,
        patience=2,
    )
    result = train(cfg)
    assert result.stopped_early and result.steps == 6  # validations at 2 (best), 4, 6
    records = [json.loads(line) for line in Path(result.log).read_text().splitlines()]
    train_recs = [r for r in records if r["event"] == "train"]
    assert train_recs and all(math.isfinite(r["train_loss"]) for r in train_recs)
    n_batches = records[0]["batches_per_epoch"]
    assert 96 * 8 // 100 <= n_batches < 96  # batches of several sentences each


def test_plateau_schedule_halves_then_stops(tmp_path: Path) -> None:
    """`lr_schedule=plateau`: a validation without a new best halves the lr; training stops once
    `patience` validations brought none, or the lr fell below `min_lr`; resume keeps the decay."""
    paths = write_task(tmp_path / "data", "copy", n_train=200, n_valid=20)
    cfg = TrainConfig.preset_config(
        "tiny",
        **paths,
        out_dir=str(tmp_path / "run"),
        tokenized=True,
        epochs=40,
        lr=0.5,  # far too high for Adam: validation perplexity stalls, so the lr must decay
        lr_schedule="plateau",
        plateau_patience=1,
        lr_decay_factor=0.5,
        min_lr=0.02,
        patience=20,
        valid_every=3,
    )
    result = train(cfg)
    valid = [
        json.loads(line)
        for line in Path(result.log).read_text().splitlines()
        if '"valid"' in line and json.loads(line).get("event") == "valid"
    ]
    assert result.stopped_early and result.epochs_done < 40
    for prev, cur in itertools.pairwise(valid):
        expected = prev["lr"] if prev["improved"] else prev["lr"] * 0.5
        assert cur["lr"] == pytest.approx(expected)
    assert valid[-1]["lr"] * 0.5 < 0.02 or not valid[-1]["improved"]
    ckpt = read_checkpoint(result.last_checkpoint)
    assert ckpt["train_state"]["loop"]["lr_scale"] < 1.0


def test_right_to_left_model_reads_reversed_targets(tmp_path: Path) -> None:
    """An R2L model trained on the copy task emits, read left to right, the reversed source."""
    paths = write_task(tmp_path / "data", "copy", n_train=3000)
    cfg = TrainConfig.preset_config(
        "tiny", **paths, out_dir=str(tmp_path / "run"), tokenized=True, hidden=128, epochs=5,
        lr=0.01, reverse_target=True, attention="luong",
    )  # fmt: skip
    result = train(cfg)
    bundle = load_model(result.best_checkpoint)
    assert bundle.config.reverse_target and "r2l" in bundle.config.kind
    assert _greedy_accuracy(result.best_checkpoint, "reverse") >= 0.95


@pytest.mark.parametrize(
    ("bad", "option"),
    [
        ({"attention": "dot"}, "--attention"),
        ({"lr_schedule": "cosine"}, "--lr-schedule"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"batch_size": 0}, "--batch-size"),
        ({"num_threads": 5000}, "--threads"),
        ({"prepare_workers": 0}, "--workers"),
        ({"dropout": 1.0}, "--dropout"),
        ({"epochs": float("nan")}, "--epochs"),
        ({"lr_decay_every": 0.0}, "--lr-decay-every"),
        ({"patience": -1}, "--patience"),
    ],
)
def test_a_config_refuses_bad_settings_naming_the_option(
    bad: dict[str, object], option: str
) -> None:
    """`TrainConfig` checks itself on construction, so the library and the CLI refuse the same
    values, by the option's name, before any data is read."""
    paths = {k: "x" for k in ("train_src", "train_tgt", "valid_src", "valid_tgt")}
    with pytest.raises(InputError, match=option):
        TrainConfig.preset_config("tiny", **paths, out_dir="r", **bad)  # type: ignore[arg-type]
