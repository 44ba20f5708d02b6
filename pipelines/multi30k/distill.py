"""Sequence-level knowledge distillation (Kim & Rush 2016) on Multi30k: the teacher ensemble's
beam-search translations of the training sources become the targets of one student of the
`multi30k` recipe, validated on the real val references.

    python -m pipelines.multi30k.distill --data-dir DIR --work-dir WORK [--teacher CKPT ...]
        [--beam 5] [--shards 2] [--threads 1] [--translate-only] [--epochs X] [--targets F]

Steps, each resumable (a finished step's files are kept and reused):
1. WORK/teacher/part.K.en: the training sources in `--shards` contiguous pieces of about equal
   bytes (as `split -n l/K` cuts them), each translated by one `rescore translate` process
   (`--no-rerank`, one thread), side by side, into part.K.fr;
2. WORK/train.kd.fr: the pieces joined, checked line-aligned with the source and without an empty
   line;
3. WORK/student: `rescore train --preset multi30k --resume` on (train.en, train.kd.fr).
`--targets FILE` skips steps 1 and 2 and trains on FILE (checked the same way), e.g. the shipped
teacher's translations `data/multi30k/train.kd.fr.gz`.
WORK/distill.json records the commands, the teacher's files and hashes, and the step times.
The student is then measured as a translator by `python -m pipelines.multi30k.translators`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbest_rescore.fileio import atomic_write, sha256_file
from nbest_rescore.shipped import shipped_models


def shard_bounds(data: bytes, shards: int) -> list[int]:
    """Byte offsets of `shards` contiguous pieces of whole lines, cut as `split -n l/K` does: the
    line holding byte k * len / K - 1 ends piece k - 1."""
    starts = [0]
    for k in range(1, shards):
        cut = data.find(b"\n", k * len(data) // shards - 1) + 1
        starts.append(cut if cut > 0 else len(data))
    return [*starts, len(data)]


def write_shards(source: Path, out: Path, shards: int) -> list[Path]:
    """The source's pieces as WORK/teacher/part.K.en (rewritten only when their bytes differ)."""
    with gzip.open(source, "rb") as fh:
        data = fh.read()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    bounds = shard_bounds(data, shards)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(shards):
        path = out / f"part.{k}.en"
        piece = data[bounds[k] : bounds[k + 1]]
        if not path.is_file() or path.read_bytes() != piece:
            path.write_bytes(piece)
        paths.append(path)
    return paths


def translate_command(teacher: Sequence[str], beam: int, src: Path, out: Path) -> list[str]:
    models = [a for m in teacher for a in ("-m", m)]
    return ["rescore", "translate", *models, "--no-rerank", "--beam", str(beam), "--batch-size",
            "64", "--threads", "1", "--device", "cpu", "--quiet", "-i", str(src), "-o", str(out)]  # fmt: skip


def translate_shards(teacher: Sequence[str], beam: int, parts: Sequence[Path]) -> list[list[str]]:
    """Translate every piece without its output, side by side; the commands run."""
    running = []
    for src in parts:
        out = src.with_suffix(".fr")
        if out.is_file():
            continue
        cmd = translate_command(teacher, beam, src, out)
        running.append((cmd, subprocess.Popen(cmd)))
    for cmd, proc in running:
        if proc.wait() != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return [cmd for cmd, _ in running]


def check_targets(path: Path, hyp: Sequence[str], n_src: int) -> None:
    """Translations usable as training targets: one per source line, none empty."""
    if len(hyp) != n_src:
        raise SystemExit(f"{path}: {len(hyp)} lines for {n_src} sources")
    if any(not h.strip() for h in hyp):
        raise SystemExit(f"{path}: an empty translation")


def join_targets(parts: Sequence[Path], out: Path) -> int:
    """The pieces' translations as one file, checked line by line against their sources."""
    lines: list[str] = []
    for src in parts:
        n_src = len(src.read_text(encoding="utf-8").splitlines())
        hyp = src.with_suffix(".fr").read_text(encoding="utf-8").splitlines()
        check_targets(src.with_suffix(".fr"), hyp, n_src)
        lines.extend(hyp)
    with atomic_write(out) as fh:
        fh.write("\n".join(lines) + "\n")
    return len(lines)


def student_command(d: Path, work: Path, target: Path, threads: int, epochs: float | None) -> list[str]:  # fmt: skip
    return ["rescore", "train", "--preset", "multi30k", "--train-src", str(d / "train.en.gz"),
            "--train-tgt", str(target), "--valid-src", str(d / "val.en.gz"), "--valid-tgt",
            str(d / "val.fr.gz"), "--out", str(work / "student"), "--threads", str(threads),
            "--resume", *(["--epochs", str(epochs)] if epochs is not None else [])]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--teacher", action="append", default=None, help="default: the shipped "
                    "translation models (att-rev-1.pt, att-rev-2.pt)")  # fmt: skip
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="student training threads")
    ap.add_argument("--epochs", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--translate-only", action="store_true")
    ap.add_argument("--targets", type=Path, default=None, help="train on these translations")
    args = ap.parse_args(argv)
    shipped = shipped_models().directory
    teacher = args.teacher or [str(shipped / "att-rev-1.pt"), str(shipped / "att-rev-2.pt")]
    work: Path = args.work_dir
    record: dict[str, Any] = {
        "command": "python -m pipelines.multi30k.distill "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.targets is None:
        record["teacher"] = [{"name": Path(m).name, "sha256": sha256_file(m)} for m in teacher]
        record["beam"] = args.beam
        t0 = time.time()
        parts = write_shards(args.data_dir / "train.en.gz", work / "teacher", args.shards)
        record["translate_commands_run"] = translate_shards(teacher, args.beam, parts)
        record["translate_s"] = time.time() - t0
        target = work / "train.kd.fr"
        record["distilled_pairs"] = join_targets(parts, target)
    else:
        target = args.targets
        with gzip.open(args.data_dir / "train.en.gz", "rt", encoding="utf-8") as fh:
            n_src = sum(1 for _ in fh)
        with (gzip.open if target.suffix == ".gz" else open)(target, "rt", encoding="utf-8") as fh:
            hyp = fh.read().splitlines()
        check_targets(target, hyp, n_src)
        record["distilled_pairs"] = n_src
    record["targets"] = str(target)
    record["distilled_sha256"] = sha256_file(target)
    if not args.translate_only:
        cmd = student_command(args.data_dir, work, target, args.threads, args.epochs)
        record["student_command"] = cmd
        t1 = time.time()
        subprocess.run(cmd, check=True)
        record["student_s"] = time.time() - t1
    with atomic_write(work / "distill.json") as fh:
        fh.write(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
