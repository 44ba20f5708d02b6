"""Cost of the MBR0 consensus feature on a real 1000-best list, against reading that list.

Reads the test2016 Moses 1000-best list into a table (the baseline, timed in the same run), then
computes MBR0 (`mbr.mbr_feature`) with several evidence sizes (`top_k`). Prints and writes
bench/results/mbr.json: seconds, seconds per 100k hypotheses and the ratio to the read.

    python -m bench.bench_mbr [--data-dir DIR] [--top-k 10 50 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import DATA_ENV, machine_info, multi30k_dir, write_result
from nbest_rescore.mbr import MbrConfig, mbr_feature
from nbest_rescore.table import TOTAL, read_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    ap.add_argument("--top-k", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = multi30k_dir(args.data_dir) / "test2016.moses.1000best.gz"
    reads, table = [], None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        table = read_table(path)
        reads.append(time.perf_counter() - t0)
    assert table is not None
    total = table.column(TOTAL)
    n = table.n_hypotheses
    read_s = min(reads)
    rows = {}
    for k in args.top_k:
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            mbr_feature(table, total, MbrConfig(top_k=k))
            times.append(time.perf_counter() - t0)
        best = min(times)
        rows[str(k)] = {
            "seconds": round(best, 3),
            "seconds_per_100k_hypotheses": round(best / n * 1e5, 3),
            "ratio_to_read": round(best / read_s, 3),
        }
        print(f"top_k {k}: {best:.2f} s, {best / n * 1e5:.2f} s per 100k hypotheses, "
              f"{best / read_s:.2f}x the read")  # fmt: skip
    payload = {
        "benchmark": "mbr",
        "what": "MBR0 (expected BLEU+1 against the top_k by the decoder total) over a whole list",
        "list": "test2016.moses.1000best.gz",
        "sentences": table.n_sentences,
        "hypotheses": n,
        "read_seconds": round(read_s, 3),
        "timing": f"best of {args.rounds} rounds, one process, numpy (1 thread for torch)",
        "top_k": rows,
        "machine": machine_info(),
    }
    print(f"wrote {write_result('mbr', payload)}")


if __name__ == "__main__":
    main()
