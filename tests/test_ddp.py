"""Two gloo processes under torchrun take the same steps as one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_train_script import write_task

from nbest_rescore.checkpoint import read_checkpoint
from nbest_rescore.train import TrainConfig, train

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def _config(paths: dict[str, str], out: Path, attention: str = "none") -> TrainConfig:
    # 50 sentences in global batches of 7: uneven 3/4 slices, and a final batch of ONE sentence
    # (one rank idle). Paper SGD with clipping, so clipping must also agree.
    return TrainConfig.preset_config(
        "tiny",
        **paths,
        out_dir=str(out),
        tokenized=False,  # raw text: rank 0 prepares OUT/data first, then rank 1 opens it
        optimizer="sgd",
        lr=0.7,
        clip_norm=1.0,
        batch_size=7,
        epochs=1.0,
        log_every=2,
        checkpoint_every=3,
        num_threads=1,
        attention=attention,
    )


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.slow
@pytest.mark.parametrize("attention", ["none", "luong"])
def test_two_process_gloo_matches_single_process(tmp_path: Path, attention: str) -> None:
    """...and, without attention, `torchrun --nnodes 2` matches the one-node 2-process run."""
    torch.set_num_threads(1)
    paths = write_task(tmp_path / "data", "reverse", n_train=50, n_valid=20)
    single = train(_config(paths, tmp_path / "single", attention))
    assert single.steps == 8

    cfg = _config(paths, tmp_path / "ddp", attention)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # The user's command: `torchrun --nproc-per-node 2 -m nbest_rescore train ...`.
    options = ["-m", "nbest_rescore", "train", "--preset", "tiny", "--optimizer", "sgd",
               "--lr", "0.7", "--clip-norm", "1.0", "--batch-size", "7", "--epochs", "1",
               "--log-every", "2", "--checkpoint-every", "3", "--threads", "1",
               "--attention", attention, "--quiet"]  # fmt: skip
    texts = ["--train-src", paths["train_src"], "--train-tgt", paths["train_tgt"],
             "--valid-src", paths["valid_src"], "--valid-tgt", paths["valid_tgt"]]  # fmt: skip
    proc = subprocess.run([*cmd, *options, *texts, "--out", cfg.out_dir], capture_output=True,
                          text=True, timeout=180, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    if attention == "none":  # two nodes of one process each, from the directory rank 0 prepared
        _two_nodes(tmp_path / "ddp" / "data", options, tmp_path / "nodes", env)
        one_node, two_nodes = _losses(tmp_path / "ddp"), _losses(tmp_path / "nodes")
        assert len(one_node) == 4 and [s for s, _ in one_node] == [s for s, _ in two_nodes]
        for (_, x), (_, y) in zip(one_node, two_nodes, strict=True):
            assert math.isclose(x, y, rel_tol=1e-6), (one_node, two_nodes)
        nodes = read_checkpoint(tmp_path / "nodes" / "checkpoint_last.pt")
        ddp = read_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
        assert nodes["train_state"]["world_size"] == 2
        for name, tensor in ddp["model"].items():
            torch.testing.assert_close(nodes["model"][name], tensor, atol=1e-6, rtol=0)

    a = read_checkpoint(single.last_checkpoint)
    b = read_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert b["train_state"]["world_size"] == 2 and len(b["train_state"]["rng"]) == 2
    assert b["train_state"]["loop"]["step"] == 8
    moved = 0.0
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=1e-5, rtol=0)
    # The comparison is meaningful: training moved the weights far beyond the tolerance.
    torch.manual_seed(cfg.seed)
    from nbest_rescore.model import Seq2Seq

    init = Seq2Seq(cfg.model_config(len(a["src_vocab"]), len(a["tgt_vocab"]))).state_dict()
    moved = max(float((init[k] - a["model"][k]).abs().max()) for k in init)
    assert moved > 1e-2

    # Only rank 0 wrote the log: one data record, one end record, world size 2.
    records = [
        json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["event"] for r in records].count("data") == 1
    assert [r["event"] for r in records].count("end") == 1
    assert records[0]["world_size"] == 2
    prepared = records[0]["prepared"]
    assert prepared["dir"] == str(tmp_path / "ddp" / "data")  # rank 0 prepared, both read it
    assert prepared["key"] == read_checkpoint(single.last_checkpoint)["train_state"]["data"]["key"]
    valid = [r["valid_ppl"] for r in records if r["event"] == "valid"]
    assert valid and abs(valid[-1] - single.final_valid_ppl) < 1e-4 * single.final_valid_ppl


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def _losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"]) for r in records if r["event"] == "train"]


def _two_nodes(data: Path, cli: list[str], out: Path, env: dict[str, str]) -> None:
    """`torchrun --nnodes 2 --nproc-per-node 1` twice on this machine (c10d rendezvous, gloo):
    two node agents training from one prepared directory on a shared filesystem."""
    endpoint = f"localhost:{_free_port()}"
    run = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "0"]
    nodes = [
        subprocess.Popen(
            [*run, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
             "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "test",
             *cli, "--data", str(data), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
