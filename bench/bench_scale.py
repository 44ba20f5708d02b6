"""Paper-scale benchmark: `rescore run` end to end on a 3M-hypothesis 1000-best list.

The paper rescored newstest2014 (3,003 sentences x 1000-best, about 3M hypotheses). We have no
list that large, so we build one from the real Multi30k test2016 Moses 1000-best list (382,839
hypotheses; the shipped top-100 slice without ../shared) repeated COPIES times with shifted
sentence ids, and the source and reference repeated alike. Repeating means the list holds only
1/COPIES distinct (source, hypotheses) chunks: `rescore run` scores each distinct chunk once (the
chunk cache is keyed by content), so the scoring stage here does 1/COPIES of a real list's
model work; every other stage (parsing, hashing, the table, BLEU statistics, reranking, the
augmented list, the scores table, the report) handles all 3M hypotheses. The per-hypothesis
scoring speed of a real list is bench_score.py's.

Runs, each in a fresh process with its peak RSS measured by the parent (ru_maxrss of children):
1. `rescore run` on one copy with a fresh cache: scores every distinct chunk once (its figures
   are recorded too: scoring speed and the scorer's working memory);
2. one copy again and 3. the full list, one process each, default (shipped) models,
   `--max-hyps` unset, both loading run 1's scores: their difference is the memory that grows
   with the list (bytes per hypothesis), without the scorer's working set in either;
4. the full list under `torchrun --nproc-per-node 2` with a fresh cache: sharded scoring of every
   distinct chunk, and rank 0 then holds the whole 3M-row table, so its peak is the one-process
   peak with the scorer's working set included; its outputs must be byte-identical to run 3's.
Stage times and peak RSS after each stage come from the run's summary.json (`timing`). Every run
uses one CPU thread per process (`--threads 1`, what each torchrun rank gets): scores' last bits
depend on the thread count, so byte-identical outputs are asked of runs with the same count.
Writes bench/results/scale.json.

    python -m bench.bench_scale [--copies 8] [--nbest F --src F --ref F] [-m MODEL ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DATA_ENV, ROOT, find_multi30k, machine_info, write_result

FULL = ("test2016.moses.1000best.gz", "test_2016_flickr.en.gz", "test_2016_flickr.fr.gz")
"""The full test2016 list and its texts, in the Multi30k directory (`common.find_multi30k`)."""
SHIPPED = (
    ROOT / "data" / "multi30k" / "test2016.moses.top100.nbest.gz",
    ROOT / "data" / "multi30k" / "test2016.en.gz",
    ROOT / "data" / "multi30k" / "test2016.fr.gz",
)
THREADS = 1
"""CPU threads of every `rescore run` here (`--threads`)."""
COMPARED = (
    "best.tok.txt",
    "best.detok.txt",
    "weights.json",
    "nbest.with-lstm.gz",
    "scores.parquet",
)


def build_list(nbest: Path, src: Path, ref: Path, copies: int, out: Path) -> dict[str, Any]:
    """The list repeated `copies` times with ids shifted by the number of source lines, and the
    source and reference repeated alike (gzip level 1)."""
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        src_lines = fh.read()
    with gzip.open(ref, "rt", encoding="utf-8") as fh:
        ref_lines = fh.read()
    n_src = src_lines.count("\n")
    with gzip.open(nbest, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    heads = [line.partition(" ||| ") for line in lines]
    paths = {"nbest": out / "nbest.gz", "src": out / "src.gz", "ref": out / "ref.gz"}
    with gzip.open(paths["nbest"], "wt", encoding="utf-8", compresslevel=1) as fh:
        for c in range(copies):
            shift = c * n_src
            fh.writelines(f"{int(i) + shift} ||| {rest}\n" for i, _, rest in heads)
    for key, text in (("src", src_lines), ("ref", ref_lines)):
        with gzip.open(paths[key], "wt", encoding="utf-8", compresslevel=1) as fh:
            fh.write(text * copies)
    return {
        "copies": copies,
        "n_hypotheses": len(lines) * copies,
        "n_sentences": n_src * copies,
        "from": str(nbest.name),
        "paths": {k: str(v) for k, v in paths.items()},
    }


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd` in a fresh wrapper process; its wall time and the peak RSS of its largest
    descendant (for torchrun: the largest rank)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 'wall_s': round(wall, 2), 'peak_rss_mib': round(peak, 1)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=False
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return result


def rescore_cmd(
    paths: dict[str, str], out: Path, cache: Path, models: list[str], nproc: int
) -> list[str]:
    args = ["run", "--nbest", paths["nbest"], "--src", paths["src"], "--ref", paths["ref"]]
    # One CPU thread per process everywhere: torchrun's ranks get one each, and scores' last bits
    # depend on the thread count, so this is what makes the sharded run comparable byte for byte.
    args += ["--out", str(out), "--cache-dir", str(cache), "--threads", str(THREADS), "--quiet"]
    for m in models:
        args += ["-m", m]
    if nproc > 1:
        torchrun = shutil.which("torchrun") or "torchrun"
        return [torchrun, "--nproc-per-node", str(nproc), "-m", "nbest_rescore", *args]
    return [sys.executable, "-m", "nbest_rescore", *args]


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (our gzip headers hold no time or name: byte-identical runs
    give byte-identical files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def one_run(
    label: str,
    paths: dict[str, str],
    work: Path,
    cache: str,
    models: list[str],
    nproc: int,
    fresh_cache: bool,
) -> dict[str, Any]:
    out = work / label
    shutil.rmtree(out, ignore_errors=True)
    if fresh_cache:
        shutil.rmtree(work / cache, ignore_errors=True)
    res = measured(rescore_cmd(paths, out, work / cache, models, nproc))
    summary = json.loads((out / "summary.json").read_text())
    n = summary["n_hypotheses"]
    scoring = summary["scoring"]
    return {
        "nproc": nproc,
        "cache": "fresh" if fresh_cache else "warm (run 1's)",
        **res,
        "n_hypotheses": n,
        "hyps_per_s_end_to_end": round(n / res["wall_s"]),
        "stages": summary["timing"],
        "report_s_and_startup": round(
            res["wall_s"] - sum(s["seconds"] for s in summary["timing"].values()), 2
        ),
        "scoring_timing": scoring.get("timing"),
        "bleu": {k: v["bleu"] for k, v in summary.get("systems", {}).items()},
        "digests": {f: content_digest(out / f) for f in COMPARED if (out / f).exists()},
        "models": [m["sha256"][:16] for m in summary["models"]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=None, help="default: 3M hypotheses or more")
    p.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    p.add_argument("--nbest", type=Path, default=None)
    p.add_argument("--src", type=Path, default=None)
    p.add_argument("--ref", type=Path, default=None)
    p.add_argument("-m", "--model", action="append", default=[], help="default: shipped")
    p.add_argument("--work", type=Path, default=Path("/tmp/nbest_rescore_scale"))
    p.add_argument("--skip-torchrun", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/scale.json")
    a = p.parse_args()
    data = find_multi30k(a.data_dir)
    nbest, src, ref = tuple(data / f for f in FULL) if data is not None else SHIPPED
    nbest, src, ref = a.nbest or nbest, a.src or src, a.ref or ref
    with gzip.open(nbest, "rb") as fh:
        per_copy = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
    copies = a.copies or -(-3_000_000 // per_copy)
    t0 = time.perf_counter()
    one = build_list(nbest, src, ref, 1, a.work / "list-1")
    full = build_list(nbest, src, ref, copies, a.work / f"list-{copies}")
    print(f"built {full['n_hypotheses']:,} hypotheses in {time.perf_counter() - t0:.0f} s")

    runs: dict[str, Any] = {}
    runs["one_copy_scoring"] = one_run("run-1s", one["paths"], a.work, "cache", a.model, 1, True)
    print("one copy, scoring:", json.dumps(runs["one_copy_scoring"]["stages"]))
    runs["one_copy"] = one_run("run-1", one["paths"], a.work, "cache", a.model, 1, False)
    print("one copy:", json.dumps(runs["one_copy"]["stages"]))
    runs["full"] = one_run("run-full", full["paths"], a.work, "cache", a.model, 1, False)
    print("full:", json.dumps(runs["full"]["stages"]))
    write(a.out, full, runs)  # a partial result, should the sharded run be stopped
    if not a.skip_torchrun:
        runs["full_torchrun2"] = one_run(
            "run-full-ddp", full["paths"], a.work, "cache-ddp", a.model, 2, True
        )
        print("torchrun:", json.dumps(runs["full_torchrun2"]["stages"]))
    write(a.out, full, runs)


def write(out: Path | None, full: dict[str, Any], runs: dict[str, Any]) -> None:
    """bench/results/scale.json (or `out`) from the runs so far."""
    f, o = runs["full"], runs["one_copy"]
    per_hyp = (f["peak_rss_mib"] - o["peak_rss_mib"]) * (1 << 20)
    per_hyp /= f["n_hypotheses"] - o["n_hypotheses"]
    result: dict[str, Any] = {
        "what": "rescore run end to end on the real test2016 Moses 1000-best list repeated with "
        "shifted ids (distinct chunks are scored once: scoring does 1/copies of a real list's "
        "model work); default models unless -m",
        "list": {k: v for k, v in full.items() if k != "paths"},
        "runs": runs,
        "threads_per_process": THREADS,
        "peak_rss_mib_one_process": f["peak_rss_mib"],
        "peak_rss_gb_one_process": round(f["peak_rss_mib"] * (1 << 20) / 1e9, 3),
        "peak_rss_mib_largest_rank_scoring": runs.get("full_torchrun2", {}).get("peak_rss_mib"),
        "target_peak_rss_gb": 2.0,
        "marginal_bytes_per_hypothesis": round(per_hyp),
        "target_bytes_per_hypothesis": 400,
        "ru_maxrss_note": "peak RSS of the largest process, measured by the parent",
    }
    if "full_torchrun2" in runs:
        d = runs["full_torchrun2"]["digests"]
        result["torchrun_outputs_identical"] = d == f["digests"]
        result["torchrun_files_differing"] = sorted(k for k in d if d[k] != f["digests"].get(k))
    else:
        result["torchrun_outputs_identical"] = "not run"
    result["machine"] = machine_info()
    path = write_result("scale", result, path=out)
    print(
        f"{f['n_hypotheses']:,} hyps: {f['wall_s']:.0f} s, peak RSS {f['peak_rss_mib']:.0f} MiB, "
        f"{result['marginal_bytes_per_hypothesis']} B/hyp beyond the one-copy run; torchrun "
        f"identical: {result.get('torchrun_outputs_identical')}; wrote {path}"
    )


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
