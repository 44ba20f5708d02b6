"""Scoring speed by CPU thread count, on an idle machine and on one whose cores are all busy.

Scores the first `--sentences` sentences of the shipped top-100 test2016 list with the shipped
left-to-right model, once per `--threads` setting (1, 2, auto = torch's default, all cores), each
in a fresh process (torch's thread count is per process) without a cache, first on an idle
machine, then while `--load` busy processes (default: one per core) compete for the cores, as
other work does on a shared machine. Figures are ratios against `--threads 1` on the idle machine
in the same run; they chose `rescore run`'s and `translate`'s default (`--threads 1`).
Writes bench/results/threads.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, write_result

ROOT = Path(__file__).resolve().parent.parent
NBEST = ROOT / "data" / "multi30k" / "test2016.moses.top100.nbest.gz"
SRC = ROOT / "data" / "multi30k" / "test2016.en.gz"
CHECKPOINT = ROOT / "data" / "models" / "att-rev-1.pt"
SETTINGS = ("1", "2", "auto")


def worker(threads: str, nbest: Path, src: Path) -> dict[str, Any]:
    """Score `nbest` in this process with `threads` torch threads; hypotheses per second."""
    import torch

    from nbest_rescore.checkpoint import load_model
    from nbest_rescore.fileio import read_lines
    from nbest_rescore.nbest_scorer import score_nbest
    from nbest_rescore.scoring import ScoringConfig

    if threads != "auto":
        torch.set_num_threads(int(threads))
    bundle = load_model(CHECKPOINT)
    sources = read_lines(src)
    res = score_nbest(nbest, sources, [bundle], ScoringConfig(device="cpu"), None)
    t = res.timing
    return {
        "torch_threads": torch.get_num_threads(),
        "hyps": t["hyps_scored"],
        "score_s": round(t["score_s"], 3),
        "hyps_per_s": round(t["hyps_scored"] / t["score_s"], 1),
    }


def slice_inputs(tmp: Path, sentences: int) -> tuple[Path, Path]:
    """The first `sentences` sentences of the shipped list and their sources, as plain files."""
    nbest, src = tmp / "slice.nbest", tmp / "slice.en"
    with gzip.open(NBEST, "rt", encoding="utf-8") as fh, open(nbest, "w", encoding="utf-8") as out:
        for line in fh:
            if int(line.split(" ||| ", 1)[0]) >= sentences:
                break
            out.write(line)
    with gzip.open(SRC, "rt", encoding="utf-8") as fh:
        src.write_text("".join(line for _, line in zip(range(sentences), fh, strict=False)))
    return nbest, src


def measure(threads: str, nbest: Path, src: Path, timeout: float) -> dict[str, Any]:
    """One worker process (one thread setting, OMP_NUM_THREADS unset so `auto` means all cores);
    one that runs past `timeout` seconds is recorded as such (a collapse, not a figure)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, __file__, "--worker", threads, "--nbest", str(nbest), "--src", str(src)]
    try:
        out = subprocess.run(
            cmd, env=env, check=True, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"timed_out_after_s": timeout}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def busy_load(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` processes that each keep one core busy (at normal priority) until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per measurement")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--nbest", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.nbest, args.src)))
        return
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        nbest, src = slice_inputs(Path(tmp), args.sentences)
        for threads in SETTINGS:
            runs[f"idle/threads={threads}"] = measure(threads, nbest, src, args.timeout)
            print(f"idle/threads={threads}", runs[f"idle/threads={threads}"], flush=True)
        load = busy_load(args.load)
        try:
            time.sleep(1.0)  # let the load processes start spinning
            for threads in SETTINGS:
                runs[f"loaded/threads={threads}"] = measure(threads, nbest, src, args.timeout)
                print(f"loaded/threads={threads}", runs[f"loaded/threads={threads}"], flush=True)
        finally:
            for p in load:
                p.kill()
                p.wait()
    base = runs["idle/threads=1"]["hyps_per_s"]
    for name, r in runs.items():
        if "hyps_per_s" not in r:
            print(f"{name:<22} did not finish in {r['timed_out_after_s']:.0f} s")
            continue
        r["speed_vs_idle_threads_1"] = round(r["hyps_per_s"] / base, 3)
        print(
            f"{name:<22} torch threads {r['torch_threads']:>2}  {r['hyps_per_s']:>8.1f} hyp/s  "
            f"{r['speed_vs_idle_threads_1']:>6.3f}x idle --threads 1"
        )
    write_result(
        "threads",
        {
            "what": "scoring hyp/s of the shipped att-rev-1 model by --threads, idle (no load "
            "added by this benchmark; what else ran is in machine.loadavg_1_5_15) and with "
            f"{args.load} busy processes competing for the cores; ratios against threads=1 idle",
            "sentences": args.sentences,
            "load_processes": args.load,
            "runs": runs,
            "machine": machine_info(),
        },
    )


if __name__ == "__main__":
    main()
