"""What the shipped default translator costs: `rescore translate` with no `-m` (the 2-ensemble,
its 12-best reranked with the right-to-left model) against one model and against the plain
2-ensemble, beam 12, one CPU thread, whole processes (start-up and model loads included),
rounds alternating. Writes bench/results/translators.json.

    python -m bench.bench_translators --sentences 300 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bench_int8 import DATA, head, timed
from bench.common import machine_info, write_result
from nbest_rescore.shipped import shipped_models


def systems(models: Path) -> dict[str, list[str]]:
    """System name -> its `rescore translate` model options."""
    one, two = str(models / "att-rev-1.pt"), str(models / "att-rev-2.pt")
    return {
        "att-rev-1": ["-m", one, "--no-rerank"],
        "att-rev-1 + att-rev-2": ["-m", one, "-m", two, "--no-rerank"],
        "default (2-ensemble, reranked)": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    py = [sys.executable, "-m", "nbest_rescore"]
    runs = systems(shipped_models().directory)
    times: dict[str, list[float]] = {name: [] for name in runs}
    bleu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        head(DATA / "test2016.en.gz", w / "src.en", args.sentences)
        head(DATA / "test2016.fr.gz", w / "ref.fr", args.sentences)
        for _ in range(args.rounds):
            for k, (name, opts) in enumerate(runs.items()):
                dt, err = timed(
                    [*py, "translate", "--threads", "1", "--beam", "12", "--quiet", "--device",
                     "cpu", *opts, "-i", str(w / "src.en"), "-o", str(w / f"out.{k}"), "--ref",
                     str(w / "ref.fr")]
                )  # fmt: skip
                times[name].append(dt)
                bleu[name] = float(err.strip().splitlines()[-1].split()[2])
    base = times["att-rev-1"]
    rows = {}
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        rows[name] = {
            "seconds": [round(t, 2) for t in ts],
            "sentences_per_s_median": round(args.sentences / statistics.median(ts), 2),
            "time_ratio_over_att_rev_1": {
                "min": round(min(ratios), 3),
                "median": round(statistics.median(ratios), 3),
                "max": round(max(ratios), 3),
            },
            "bleu": round(bleu[name], 2),
            "options": runs[name],
        }
        print(name, rows[name])
    payload = {
        "benchmark": "translators",
        "what": "rescore translate, beam 12, shipped models, one CPU thread, whole processes "
        "(start-up and model loads included), rounds alternating",
        "data": f"first {args.sentences} sentences of test2016 (data/multi30k), BLEU vs reference",
        "rounds": args.rounds,
        "rows": rows,
        "machine": machine_info(),
    }
    print(f"wrote {write_result('translators', payload)}")


if __name__ == "__main__":
    main()
