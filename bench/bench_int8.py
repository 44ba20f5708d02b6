"""`--int8` against fp32 on test2016 with the shipped models, one CPU thread: beam-12 translation
(time and BLEU) and `rescore run` over the shipped 100-best list (time and the `given` system's
BLEU), alternating fp32 and int8 runs. Writes bench/results/int8.json.

    python -m bench.bench_int8 --sentences 300 --rescore-sentences 100

`--full-sets DIR` instead measures only BLEU, of the default translator (no `-m`: the reranked
2-ensemble) fp32 against `--int8` on the whole val and test2016 sets of the Multi30k directory
DIR, the figures the "stays fp32 unless it loses under 0.1 BLEU" rule is decided by (val) and
reported with (test2016); two processes at a time, untimed. Merged into int8.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, write_result

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "multi30k"


def head(src: Path, dst: Path, n: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        for i, line in enumerate(fi):
            if i >= n:
                break
            fo.write(line)


def nbest_head(src: Path, dst: Path, n: int) -> None:
    """The hypotheses of sentence ids 0..n-1 (the list is sorted by id)."""
    with gzip.open(src, "rt", encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        for line in fi:
            if int(line.split(" ||| ", 1)[0]) >= n:
                break
            fo.write(line)


def timed(cmd: list[str]) -> tuple[float, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, res.stderr


def full_sets(data: Path) -> None:
    """BLEU of the default translator, fp32 and --int8, on the whole val and test2016 sets."""
    sets = {"val": ("val.en.gz", "val.fr.gz"),
            "test2016": ("test_2016_flickr.en.gz", "test_2016_flickr.fr.gz")}  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    bleu: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fp32", "int8"):
            procs = {
                name: subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "nbest_rescore",
                        "translate",
                        "--threads",
                        "1",
                        "--quiet",
                        "--device",
                        "cpu",
                        *(["--int8"] if mode == "int8" else []),
                        "-i",
                        str(data / src),
                        "--ref",
                        str(data / ref),
                        "-o",
                        str(Path(tmp) / f"{name}.{mode}"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name, (src, ref) in sets.items()
            }
            for name, proc in procs.items():
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(err)
                bleu.setdefault(name, {})[mode] = float(err.strip().splitlines()[-1].split()[2])
    rows = {name: {**b, "change": round(b["int8"] - b["fp32"], 2)} for name, b in bleu.items()}
    print(json.dumps(rows))
    payload = {
        "default_translator_full_sets": {
            "what": "rescore translate without -m (reranked 2-ensemble, beam 12), whole val "
            "(1,014) and test2016 (1,000) sets, BLEU 13a against the references",
            "rows": rows,
        }
    }
    print(f"wrote {write_result('int8', payload, merge=True)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--rescore-sentences", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full-sets", type=Path, default=None, metavar="DIR")
    args = ap.parse_args()
    if args.full_sets is not None:
        full_sets(args.full_sets)
        return
    py = [sys.executable, "-m", "nbest_rescore"]
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        head(DATA / "test2016.en.gz", w / "src.en", args.sentences)
        head(DATA / "test2016.fr.gz", w / "ref.fr", args.sentences)
        nbest_head(DATA / "test2016.moses.top100.nbest.gz", w / "list", args.rescore_sentences)
        head(DATA / "test2016.en.gz", w / "rsrc.en", args.rescore_sentences)
        head(DATA / "test2016.fr.gz", w / "rref.fr", args.rescore_sentences)
        times: dict[str, dict[str, list[float]]] = {"translate": {}, "run": {}}
        bleu: dict[str, dict[str, float]] = {"translate": {}, "run": {}}
        for _ in range(args.rounds):
            for mode in ("fp32", "int8"):
                flag = ["--int8"] if mode == "int8" else []
                dt, err = timed(
                    [*py, "translate", "--threads", "1", "--beam", "12", "--quiet", "-i",
                     str(w / "src.en"), "-o", str(w / f"out.{mode}"), "--ref", str(w / "ref.fr"),
                     "--device", "cpu", *flag]
                )  # fmt: skip
                times["translate"].setdefault(mode, []).append(dt)
                bleu["translate"][mode] = float(err.strip().splitlines()[-1].split()[2])
                out = w / f"run.{mode}"
                dt, _ = timed(
                    [*py, "run", "--threads", "1", "--quiet", "--nbest", str(w / "list"), "--src",
                     str(w / "rsrc.en"), "--ref", str(w / "rref.fr"), "--out", str(out),
                     "--cache-dir", str(w / f"cache.{mode}.{len(times['run'].get(mode, []))}"),
                     "--device", "cpu", *flag]
                )  # fmt: skip
                times["run"].setdefault(mode, []).append(dt)
                summary = json.loads((out / "summary.json").read_text())
                bleu["run"][mode] = summary["systems"]["given"]["bleu"]
    rows = {}
    for task in ("translate", "run"):
        fp, q = times[task]["fp32"], times[task]["int8"]
        ratios = [b / a for a, b in zip(fp, q, strict=True)]
        rows[task] = {
            "fp32_s": [round(x, 2) for x in fp],
            "int8_s": [round(x, 2) for x in q],
            "time_ratio_int8_over_fp32": {
                "min": round(min(ratios), 3),
                "median": round(statistics.median(ratios), 3),
                "max": round(max(ratios), 3),
            },
            "bleu_fp32": round(bleu[task]["fp32"], 2),
            "bleu_int8": round(bleu[task]["int8"], 2),
            "bleu_change": round(bleu[task]["int8"] - bleu[task]["fp32"], 2),
        }
        print(task, json.dumps(rows[task]))
    payload = {
        "benchmark": "int8",
        "what": "--int8 vs fp32, shipped models, one CPU thread, whole processes (load included)",
        "translate": f"beam 12, first {args.sentences} sentences of test2016, BLEU vs reference",
        "run": f"rescore run, shipped models and weights, top-100 list, first "
        f"{args.rescore_sentences} sentences; BLEU of the 'given' system",
        "rows": rows,
        "machine": machine_info(),
    }
    print(f"wrote {write_result('int8', payload)}")


if __name__ == "__main__":
    main()
