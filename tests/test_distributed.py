"""torchrun helpers (nbest_rescore.distributed): a plain process is rank 0 of 1, and two gloo
ranks (this process and a child) sum, broadcast and gather for real."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from nbest_rescore import distributed as dist
from nbest_rescore.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_helpers_work_without_a_process_group() -> None:
    assert not dist.active()
    assert (dist.get_rank(), dist.get_world_size(), dist.is_main()) == (0, 1, True)
    assert dist.sum_floats([1.5, 2.0]) == [1.5, 2.0]
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.all_gather_object(3) == [3]
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    dist.barrier()
    info = dist.init_from_env("cpu") if not dist.launched_by_torchrun() else dist.DistInfo()
    assert info.world_size == 1 and info.is_main and not info.distributed


def test_torchrun_environment_of_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun with one process sets the variables but needs no process group."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.launched_by_torchrun() and dist.init_from_env() == dist.DistInfo()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.launched_by_torchrun()
    with dist.process_group("cpu") as info:
        assert info == dist.DistInfo(rank=0, world_size=1, local_rank=0, backend="gloo")
        assert not torch.distributed.is_initialized() and not dist.active()


def test_resolve_device() -> None:
    assert dist.resolve_device("cpu") == "cpu"
    assert dist.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "tpu", "cpu:x", ""):
        with pytest.raises(InputError, match="expected auto, cpu or cuda"):
            dist.resolve_device(bad)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        assert dist.resolve_device("cuda:0") == "cuda:0"
        with pytest.raises(InputError, match=f"only {n} CUDA device"):
            dist.resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(InputError, match="sees no CUDA device"):
            dist.resolve_device("cuda")


def collectives(info: dist.DistInfo) -> dict[str, Any]:
    """What one rank gets from every helper in a group of two (rank 0 here, rank 1 in a child)."""
    r = info.rank
    out = {
        "info": [info.rank, info.world_size, info.backend, info.is_main, info.distributed],
        "state": [dist.active(), dist.get_rank(), dist.get_world_size(), dist.is_main()],
        "sum": dist.sum_floats([r + 1.0, 0.25, 1e15 + r]),
        "tensor": dist.all_reduce_sum(torch.tensor([float(r), 10.0])).tolist(),
        "broadcast": dist.broadcast_object({"from": r, "items": list(range(r + 2))}),
        "gathered": dist.all_gather_object(["rank", r]),
    }
    dist.barrier()
    return out


CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_distributed import collectives, dist
info = dist.init_from_env("cpu", timeout_s=60)
out = collectives(info)
dist.teardown()
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_gloo_ranks_sum_broadcast_and_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is rank 0 and a child process rank 1 of a real gloo group."""
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    child_env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": str(REPO)}  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent)],
        env=child_env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    try:
        results = [collectives(dist.init_from_env("cpu", timeout_s=60))]
    finally:
        dist.teardown()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    results.append(json.loads(out))
    assert not torch.distributed.is_initialized()
    for rank, res in enumerate(results):
        assert res["info"] == [rank, 2, "gloo", rank == 0, True]
        assert res["state"] == [True, rank, 2, rank == 0]
        assert res["sum"] == [3.0, 0.5, 2e15 + 1]  # float64: counts stay exact
        assert res["tensor"] == [1.0, 20.0]
        assert res["broadcast"] == {"from": 0, "items": [0, 1]}
        assert res["gathered"] == [["rank", 0], ["rank", 1]]
