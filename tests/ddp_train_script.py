"""Run `train()` from a JSON TrainConfig, alone or under torchrun; also synthetic task corpora.

    python tests/ddp_train_script.py CONFIG.json [--kill-at-step N]
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_train_script.py CONFIG.json

`--kill-at-step N` SIGKILLs the process right after step N (no cleanup), to test `--resume`.
(Stands in for `torchrun -m nbest_rescore train ...` until the CLI calls `train()`.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import torch

from nbest_rescore.train import TrainConfig, train

SYMBOLS = [chr(ord("a") + i) for i in range(10)]


def task_pairs(
    task: str, n: int, seed: int, lengths: tuple[int, int] = (3, 6)
) -> tuple[list[str], list[str]]:
    """`n` random symbol sequences and their copies (`copy`) or reversals (`reverse`)."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        s = [rng.choice(SYMBOLS) for _ in range(rng.randint(*lengths))]
        src.append(" ".join(s))
        tgt.append(" ".join(s if task == "copy" else s[::-1]))
    return src, tgt


def write_task(directory: Path, task: str, n_train: int, n_valid: int = 100) -> dict[str, str]:
    """Write train/valid files for a synthetic task; returns the TrainConfig path fields."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for split, n, seed in (("train", n_train, 1), ("valid", n_valid, 2)):
        src, tgt = task_pairs(task, n, seed)
        for side, lines in (("src", src), ("tgt", tgt)):
            p = directory / f"{split}.{side}"
            p.write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths[f"{split}_{side}"] = str(p)
    return paths


def main(argv: list[str]) -> int:
    cfg = TrainConfig.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    kill_at = int(argv[argv.index("--kill-at-step") + 1]) if "--kill-at-step" in argv else None
    torch.set_num_threads(1)

    def on_step(step: int) -> None:
        if kill_at is not None and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(cfg, on_step=on_step)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
