"""The trainer at the paper's scale (issue 21): `rescore prepare` and `rescore train --data` on
corpora made from real data, from Multi30k's 29k pairs to the paper's 12M.

Corpora (tokenized Multi30k train, plain text under --work-dir, made once and reused):
- `1x`, `10x`, `100x`: train.tok.{en,fr} repeated (29k, 290k, 2.9M pairs; ~13/14 words).
- `12M` (`--paper-pairs`): 12M pairs of the paper's mean length, made by walking the Multi30k
  pairs in order (cyclically) and joining consecutive pairs two or three at a time, three with
  the probability that brings the French mean to the paper's 29 words (348M French words / 12M
  pairs; English then comes out near its 25); the chosen counts are drawn with numpy, seed 0.
Validation: Multi30k val (tokenized, 1,014 pairs) for every size.

For each size:
- `prepare --tokenized --workers W`: wall seconds, pairs/s, lines/s per worker, the peak RSS of
  its largest process (getrusage of a fresh wrapper process: exact) and the sampled peak of its
  whole process tree, disk bytes per token of the prepared directory.
- `train --data` with `--preset tiny` and `--preset small` (one thread): seconds from process
  start to the first optimizer step (polling log.jsonl with --log-every 1; also the CPU seconds
  it had used then, which the load of a shared machine does not stretch), and at step 200 the
  process' peak RSS (VmHWM) with its RssAnon and RssFile; the run is then killed. With `1x`
  measured in the same run, each size states its peak RSS minus 1x's.
Writes bench/results/train_data.json: one key per size, merged into the file's earlier sizes.

    python -m bench.bench_train_data --sizes 1x,10x        # a check at small scale
    python -m bench.bench_train_data                       # 1x,10x,100x,12M (hours, ~12 GB disk)
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DATA_ENV, RESULTS, git_commit, machine_info, multi30k_dir, write_result

PAPER_FR_WORDS = 348e6 / 12e6  # the paper's French words per sentence pair (29)
STEPS = 200
POLL_S = 0.02
BLOCK = 100_000


def _read_tok(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [" ".join(line.split()) for line in fh]


def _write_lines(path: Path, lines: Iterator[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        block: list[str] = []
        for line in lines:
            block.append(line)
            if len(block) == BLOCK:
                fh.write("\n".join(block) + "\n")
                block = []
        if block:
            fh.write("\n".join(block) + "\n")
    os.replace(tmp, path)


def _concatenated(
    en: list[str], fr: list[str], pairs: int, p_three: float
) -> tuple[Iterator[str], Iterator[str]]:
    """`pairs` pairs, each 2 or 3 consecutive Multi30k pairs joined (cyclically)."""
    ks = np.random.default_rng(0).random(pairs) < p_three
    starts = np.concatenate([[0], np.cumsum(2 + ks.astype(np.int64))[:-1]])

    def side(lines: list[str]) -> Iterator[str]:
        n = len(lines)
        for s, three in zip(starts.tolist(), ks.tolist(), strict=True):
            yield " ".join(lines[(s + j) % n] for j in range(3 if three else 2))

    return side(en), side(fr)


def make_corpus(size: str, work: Path, data: Path, paper_pairs: int) -> dict[str, Any]:
    """The size's train.en/train.fr under work/corpora/SIZE (made once), and what it is."""
    d = work / "corpora" / size
    info_path = d / "corpus.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any]
    en, fr = _read_tok(data / "train.tok.en.gz"), _read_tok(data / "train.tok.fr.gz")
    if size.endswith("x"):
        copies = int(size[:-1])
        _write_lines(d / "train.en", (s for _ in range(copies) for s in en))
        _write_lines(d / "train.fr", (s for _ in range(copies) for s in fr))
        info = {"pairs": copies * len(en), "how": f"Multi30k train.tok repeated {copies}x"}
    else:
        mean_fr = sum(len(s.split()) for s in fr) / len(fr)
        p_three = min(1.0, max(0.0, PAPER_FR_WORDS / mean_fr - 2))
        src, tgt = _concatenated(en, fr, paper_pairs, p_three)
        _write_lines(d / "train.en", src)
        _write_lines(d / "train.fr", tgt)
        info = {
            "pairs": paper_pairs,
            "how": "Multi30k train.tok pairs in order, cyclically, joined 2 or 3 at a time "
            f"(3 with probability {p_three:.4f}, numpy seed 0) for a French mean of "
            f"{PAPER_FR_WORDS:.1f} words (the paper's 348M / 12M)",
        }
    info["mean_words"] = {
        lang: _mean_words(d / f"train.{lang}", info["pairs"]) for lang in ("en", "fr")
    }
    info["bytes"] = sum((d / f"train.{lang}").stat().st_size for lang in ("en", "fr"))
    info_path.write_text(json.dumps(info, indent=1))
    return info


def _mean_words(path: Path, pairs: int) -> float:
    words = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            words += block.count(b" ")
    return (words + pairs) / pairs  # words = spaces + 1 per (non-empty) line


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of a process, in bytes (empty once it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


RUSAGE_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(r.ru_maxrss * 1024, r.ru_utime + r.ru_stime); sys.exit(rc)"
)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_prepare(corpus: Path, out: Path, data: Path, workers: int) -> dict[str, Any]:
    """`rescore prepare` from scratch: time, rates and memory."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "nbest_rescore", "prepare", "--tokenized", "-q",
           "--train-src", str(corpus / "train.en"), "--train-tgt", str(corpus / "train.fr"),
           "--valid-src", str(data / "val.tok.en.gz"), "--valid-tgt", str(data / "val.tok.fr.gz"),
           "--out", str(out), "--workers", str(workers)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUSAGE_WRAPPER, *cmd], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, sum(_status(p).get("VmRSS", 0) for p in _tree(proc.pid)[1:]))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}): {stdout}")
    maxrss, cpu = stdout.split()[-2:]
    manifest = json.loads((out / "manifest.json").read_text())
    report = manifest["report"]
    pairs = report["train_filter"]["total"]
    tokens = sum(report["train_words"].values()) + sum(
        int(f["count"]) for name, f in manifest["files"].items() if name.startswith("valid.")
        and name.endswith(".ids")
    )  # fmt: skip
    disk = sum(p.stat().st_size for p in out.iterdir())
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "cpu_s_all_processes": round(float(cpu), 2),
        "pairs_per_s": round(pairs / wall),
        "lines_per_s_per_worker": round(2 * pairs / wall / workers),
        "peak_rss_largest_process_mb": round(int(maxrss) / 1e6, 1),
        "peak_rss_process_tree_sampled_mb": round(tree_peak / 1e6, 1),
        "disk_bytes": disk,
        "disk_bytes_per_token": round(disk / tokens, 3),
        "tokens": tokens,
        "kept_pairs": report["train_filter"]["kept"],
        "vocab": [report["src_vocab"], report["tgt_vocab"]],
        "dtypes": {
            n: f["dtype"] for n, f in manifest["files"].items() if n.startswith("train.src")
        },
    }


def _train_records(log: Path) -> list[dict[str, Any]]:
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a record being written
        if rec.get("event") == "train":
            out.append(rec)
    return out


def bench_train(prepared: Path, run: Path, preset: str) -> dict[str, Any]:
    """`rescore train --data` until step 200: start-up time and memory; then killed."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "nbest_rescore", "train", "--data", str(prepared), "--out",
           str(run), "--preset", preset, "--threads", "1", "--log-every", "1", "--epochs", "1",
           "--checkpoint-every", "1000000", "-q"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    first = first_cpu = None
    status: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    try:
        while proc.poll() is None:
            records = _train_records(run / "log.jsonl")
            if records and first is None:
                first, first_cpu = time.perf_counter() - t0, _cpu_s(proc.pid)
            if records and records[-1]["step"] >= STEPS:
                status = _status(proc.pid)
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    if not status:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"train --preset {preset} ended before step {STEPS}: {err[-2000:]}")
    at = next(r for r in records if r["step"] >= STEPS)
    shutil.rmtree(run, ignore_errors=True)
    return {
        "preset": preset,
        "first_step_s": round(first or 0.0, 2),
        "first_step_cpu_s": round(first_cpu or 0.0, 2),
        "steps": at["step"],
        "seconds_to_step": round(at["elapsed_s"], 1),
        "peak_rss_mb": round(status["VmHWM"] / 1e6, 1),
        "rss_anon_mb": round(status["RssAnon"] / 1e6, 1),
        "rss_file_mb": round(status["RssFile"] / 1e6, 1),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _date_earlier_sizes(path: Path) -> None:
    """Sizes kept from an earlier run of the file get that run's commit and date (the file's
    top-level ones, which this run replaces), so every figure says which code produced it."""
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    for value in data.values():
        if isinstance(value, dict) and "corpus" in value and "git" not in value:
            value["git"], value["date"] = data.get("git"), data.get("date")
            value["corpus_reader"] = "mmap"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1x,10x,100x,12M", help="comma-separated: NNx or 12M")
    ap.add_argument("--paper-pairs", type=int, default=12_000_000, help="pairs of the 12M size")
    ap.add_argument("--workers", type=int, default=2, help="prepare's tokenising processes")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"Multi30k (train.tok.*.gz); default: ${DATA_ENV}",
    )
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/nbest-rescore-bench-train-data"))
    ap.add_argument("--keep", action="store_true", help="keep the prepared directories")
    ap.add_argument("--out", type=Path, help="the JSON to write (default bench/results/...)")
    args = ap.parse_args()
    args.data_dir = multi30k_dir(args.data_dir)
    results: dict[str, Any] = {}
    for size in args.sizes.split(","):
        corpus = make_corpus(size, args.work_dir, args.data_dir, args.paper_pairs)
        prepared = args.work_dir / "prepared" / size
        res: dict[str, Any] = {
            "corpus": corpus,
            "machine": machine_info(),
            "git": git_commit(),
            "date": _now(),
            "corpus_reader": "pread",
        }
        res["prepare"] = bench_prepare(
            args.work_dir / "corpora" / size, prepared, args.data_dir, args.workers
        )
        print(f"{size}: corpus {json.dumps(corpus)}\n{size}: prepare {json.dumps(res['prepare'])}",
              flush=True)  # fmt: skip
        res["train"] = {}
        for preset in args.presets.split(","):
            r = bench_train(prepared, args.work_dir / "runs" / f"{size}-{preset}", preset)
            if "1x" in results and size != "1x":
                base = results["1x"]["train"][preset]["peak_rss_mb"]
                r["peak_rss_minus_1x_mb"] = round(r["peak_rss_mb"] - base, 1)
            res["train"][preset] = r
            print(f"{size}: train {json.dumps(r)}", flush=True)
        if not args.keep:
            shutil.rmtree(prepared, ignore_errors=True)
        results[size] = res
    _date_earlier_sizes(args.out or RESULTS / "train_data.json")
    path = write_result(
        "train_data",
        {
            **results,
            "note": "2-core machine shared with other jobs (load in machine.loadavg_1_5_15): "
            "wall times stretch with the load, memory does not. corpus_reader: how train read "
            "the prepared ids and offsets at that size's commit (mmap: memory-mapped, whose "
            "touched pages count in the process' RSS; pread: read by rows, nothing mapped)",
        },
        merge=True,
        path=args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
