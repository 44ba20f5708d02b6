"""n-best benchmarks. Part "parse": reading speed and memory of `nbest_rescore.nbest_reader`'s readers.

Each measurement runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own (Linux
carries the parent's peak into a child, so the parent stays small: it never loads the data).
Measured on the real test2016 1000-best list (.gz, and a decompressed copy): the column block
reader `read_nbest_blocks` (also on a copy 5x larger, the list repeated with shifted ids, to
show that memory does not grow with the file), `read_nbest` (per-hypothesis objects, built on the
blocks), the line reader alone (decompression + UTF-8 decoding, the floor), and two baselines
run in the same invocation: the previous `read_nbest` (the per-line parser of commit
PREVIOUS_COMMIT, loaded from git; skipped, and said so, without git history) and a naive parser
(readlines + split + float, whole file in memory, no validation). Speed ratios use CPU seconds,
which the other processes of the shared machine disturb less than wall seconds (both are kept).
Writes bench/results/nbest.json (key "parse").

    python -m bench.bench_nbest [--nbest F] [--repeat N] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DATA_ENV, machine_info, multi30k_dir, write_result
from nbest_rescore.fileio import open_text
from nbest_rescore.nbest_reader import iter_lines, read_nbest, read_nbest_blocks

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("blocks", "read_nbest", "previous", "iter_lines", "naive")
PREVIOUS_COMMIT = "6f623f7"  # the last commit with the per-line parser (about 200k lines/s)


# --- what each subprocess runs ------------------------------------------------------------------


def naive_parse(path: str) -> int:
    """The baseline: whole file in memory, split, floats; no validation, no gaps, no objects."""
    with open_text(path) as fh:
        rows = [line.split(" ||| ") for line in fh.readlines()]
    parsed = [
        (
            int(r[0]),
            r[1].split(),
            [float(t) for t in r[2].split() if not t.endswith("=")],
            float(r[3]),
        )
        for r in rows
    ]
    return len(parsed)


def previous_source(tmp: Path) -> Path | None:
    """The nbest.py of PREVIOUS_COMMIT written to `tmp`, or None without git history."""
    try:
        source = subprocess.run(
            ["git", "show", f"{PREVIOUS_COMMIT}:nbest_rescore/nbest.py"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = tmp / f"nbest_{PREVIOUS_COMMIT}.py"
    path.write_bytes(source)
    return path


def previous_read_nbest(source: str) -> Any:
    """`read_nbest` of the module at `source` (see previous_source)."""
    spec = importlib.util.spec_from_file_location("nbest_previous", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module.read_nbest


def run_worker(kind: str, path: str, source: str | None = None) -> dict[str, Any]:
    """Time one pass over `path` in this process; peak RSS before and after."""
    reader = previous_read_nbest(source) if kind == "previous" and source else read_nbest
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    groups = 0
    if kind in ("read_nbest", "previous"):
        lines = 0
        for group in reader(path):
            groups += 1
            lines += len(group.hyps)
    elif kind == "blocks":
        lines = 0
        for block in read_nbest_blocks(path):
            groups += 1
            lines += len(block)
    elif kind == "iter_lines":
        lines = sum(1 for _ in iter_lines(path))
    elif kind == "naive":
        lines = naive_parse(path)
    else:
        raise ValueError(kind)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "lines": lines,
        "groups": groups,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "lines_per_s_wall": round(lines / wall),
        "lines_per_s_cpu": round(lines / cpu),
        "peak_rss_mib": round(rss_end / 1024, 1),  # ru_maxrss is KiB on Linux
        "rss_before_mib": round(rss_start / 1024, 1),
    }


def measure(kind: str, path: Path, repeat: int, source: Path | None = None) -> dict[str, Any]:
    """Run a worker `repeat` times in fresh processes; keep the fastest (by CPU time) run."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", kind, str(path), str(source or "")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs.append(json.loads(out))
    best = min(runs, key=lambda r: r["cpu_s"])
    best["file"] = str(path)
    best["file_mib"] = round(path.stat().st_size / 2**20, 1)
    best["runs"] = repeat
    best["groups_are"] = "blocks" if kind == "blocks" else "sentences"
    return best


# --- inputs ---------------------------------------------------------------------------------------


def make_inputs(nbest: Path, tmp: Path, copies: int = 5) -> tuple[Path, Path]:
    """A decompressed copy of `nbest`, and `copies` copies of it in one file, ids shifted so each
    copy follows the previous one (made once, in `tmp`, never committed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    plain = tmp / "test2016.nbest"
    big = tmp / f"test2016.x{copies}.nbest"
    if not plain.is_file():
        with gzip.open(nbest, "rb") as src, open(plain, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if not big.is_file():  # streamed, so that this parent process stays small
        with open(plain, "rb") as src:
            src.seek(max(0, plain.stat().st_size - 65536))
            n_sent = int(src.read().rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b" ", 1)[0]) + 1
        with open(big, "wb") as dst:
            for k in range(copies):
                with open(plain, "rb") as src:
                    if k == 0:
                        while block := src.read(1 << 20):
                            dst.write(block)
                        continue
                    for line in src:
                        sid, rest = line.split(b" ", 1)
                        dst.write(b"%d %s" % (int(sid) + k * n_sent, rest))
    return plain, big


# --- the parts --------------------------------------------------------------------------------


def bench_parse(nbest: Path, tmp: Path, repeat: int = 1) -> dict[str, Any]:
    """Part "parse": the block reader (gz, plain, 5x plain), read_nbest, the baselines."""
    plain, big = make_inputs(nbest, tmp)
    previous = previous_source(tmp)
    results: dict[str, Any] = {
        "blocks_gz": measure("blocks", nbest, repeat),
        "blocks_plain": measure("blocks", plain, repeat),
        "blocks_plain_5x": measure("blocks", big, repeat),
        "read_nbest_gz": measure("read_nbest", nbest, repeat),
        "read_nbest_plain": measure("read_nbest", plain, repeat),
        "iter_lines_gz": measure("iter_lines", nbest, repeat),
        "naive_gz": measure("naive", nbest, repeat),
    }
    if previous is not None:
        results["previous_gz"] = measure("previous", nbest, repeat, previous)
        results["previous_plain"] = measure("previous", plain, repeat, previous)

    def ratio(key: str, base: str) -> float | None:
        if base not in results:
            return None
        return round(results[base]["cpu_s"] / results[key]["cpu_s"], 2)

    results["summary"] = {
        "lines": results["blocks_gz"]["lines"],
        "blocks_gz_lines_per_s_wall": results["blocks_gz"]["lines_per_s_wall"],
        "blocks_gz_lines_per_s_cpu": results["blocks_gz"]["lines_per_s_cpu"],
        "blocks_plain_lines_per_s_wall": results["blocks_plain"]["lines_per_s_wall"],
        "blocks_plain_lines_per_s_cpu": results["blocks_plain"]["lines_per_s_cpu"],
        "baseline": f"read_nbest of commit {PREVIOUS_COMMIT} (the per-line parser)"
        if previous is not None
        else f"none: no git history for commit {PREVIOUS_COMMIT}",
        "blocks_vs_previous_gz_cpu": ratio("blocks_gz", "previous_gz"),
        "blocks_vs_previous_plain_cpu": ratio("blocks_plain", "previous_plain"),
        "read_nbest_vs_previous_gz_cpu": ratio("read_nbest_gz", "previous_gz"),
        "read_nbest_vs_previous_plain_cpu": ratio("read_nbest_plain", "previous_plain"),
        "blocks_vs_naive_gz_cpu": ratio("blocks_gz", "naive_gz"),
        "peak_rss_mib_1x_vs_5x": [
            results["blocks_plain"]["peak_rss_mib"],
            results["blocks_plain_5x"]["peak_rss_mib"],
        ],
        "naive_peak_rss_mib": results["naive_gz"]["peak_rss_mib"],
        "target_lines_per_s": 500_000,
        "target_peak_rss_mib": 300,
    }
    return results


def print_parse(results: dict[str, Any]) -> None:
    """A table of the parse figures."""
    print(
        f"{'measurement':22} {'lines':>9} {'wall s':>7} {'cpu s':>6} {'lines/s wall':>12} "
        f"{'lines/s cpu':>11} {'peak RSS MiB':>12}"
    )
    for key, r in results.items():
        if key == "summary":
            continue
        print(
            f"{key:22} {r['lines']:>9} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
            f"{r['lines_per_s_wall']:>12,} {r['lines_per_s_cpu']:>11,} {r['peak_rss_mib']:>12}"
        )
    s = results["summary"]
    print(f"baseline: {s['baseline']}")
    print(
        f"blocks vs baseline (CPU time): gz {s['blocks_vs_previous_gz_cpu']}x, plain "
        f"{s['blocks_vs_previous_plain_cpu']}x; read_nbest vs baseline: gz "
        f"{s['read_nbest_vs_previous_gz_cpu']}x, plain {s['read_nbest_vs_previous_plain_cpu']}x; "
        f"blocks vs naive: {s['blocks_vs_naive_gz_cpu']}x"
    )
    print(
        f"blocks peak RSS 1x vs 5x: {s['peak_rss_mib_1x_vs_5x']} MiB "
        f"(naive 1x: {s['naive_peak_rss_mib']} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nbest", type=Path, default=None, help="default: DATA/test2016.moses.1000best.gz"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (fastest kept)")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/nbest_rescore_bench"))
    parser.add_argument("--parts", nargs="+", default=["parse"], choices=["parse"])
    parser.add_argument(
        "--worker", nargs=3, metavar=("KIND", "PATH", "SOURCE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        kind, path, source = args.worker
        if kind not in WORKERS:
            parser.error(f"unknown worker {kind}")
        print(json.dumps(run_worker(kind, path, source or None)))
        return
    payload: dict[str, Any] = {"machine": machine_info()}
    if "parse" in args.parts:
        nbest = args.nbest or multi30k_dir(args.data_dir) / "test2016.moses.1000best.gz"
        payload["parse"] = bench_parse(nbest, args.tmp, args.repeat)
        print_parse(payload["parse"])
    payload["machine_after"] = {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    path = write_result("nbest", payload, merge=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
