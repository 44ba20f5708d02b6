"""Ours against OpenNMT-py 3.5.1 with the same weights, one CPU thread each, alternating runs.

Finds or makes the peer's virtual environment (bench/peers/work/venv, gitignored; OpenNMT-py
3.5.1 needs torch < 2.3), converts the shipped `att-rev-1` into an OpenNMT-py model of the same
architecture (bench/peers/onmt_side.py) and checks the conversion: both score the same n-best
hypotheses to within 1e-5 per scored token (float32 sums: a 30-token hypothesis may differ by
1e-4; a wrong mapping differs by whole nats). Then times whole processes, ours and the peer's
in turn: beam-12 translation of test2016 sentences (model tokens in and out, as the peer works;
again from raw text to detokenized text, which only ours does; and ours with --int8), scoring
the 1000-best list of the first sentences (`rescore run` against the peer's batched gold
scoring), a 1-sentence scoring run (start-up) and `rescore --help`. Also counts the sentences
whose beam-12 1-best is the peer's.
Writes bench/results/peers.json (ratios ours/peer, min/median/max).

    python -m bench.bench_peers [--sentences 300 --score-sentences 30 --rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.common import DATA_ENV, machine_info, multi30k_dir, write_result
from nbest_rescore.checkpoint import load_model
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.scoring import ScoringConfig, hypothesis_ids, score_ids, source_tokens

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "peers" / "work"
VENV = WORK / "venv"
SIDE = ROOT / "bench" / "peers" / "onmt_side.py"
MODEL = ROOT / "data" / "models" / "att-rev-1.pt"
CONVERSION_TOL_PER_TOKEN = 1e-5
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def ensure_venv() -> Path:
    """The peer's python, installing OpenNMT-py 3.5.1 (and a torch it accepts) on first use."""
    py = VENV / "bin" / "python"
    if not (VENV / "bin" / "onmt_translate").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip_env = dict(os.environ, PIP_CONSTRAINT="")
        pkgs = ["torch==2.2.*", "opennmt-py==3.5.1", "numpy<2"]
        subprocess.run([str(py), "-m", "pip", "install", *pkgs], check=True, env=pip_env)
    return py


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - t0


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


def nbest_head(src: Path, dst: Path, n: int, per_sentence: int | None = None) -> None:
    """The hypotheses of sentence ids 0..n-1 (at most `per_sentence` each), gzipped."""
    counts: dict[str, int] = {}
    with gzip.open(src, "rt", encoding="utf-8") as fi, gzip.open(dst, "wt", encoding="utf-8") as fo:
        for line in fi:
            sid = line.split(" ||| ", 1)[0]
            if int(sid) >= n:
                break
            counts[sid] = counts.get(sid, 0) + 1
            if per_sentence is None or counts[sid] <= per_sentence:
                fo.write(line)


def peer_inputs(tag: str, src_lines: list[str], nbest: Path) -> tuple[Path, Path, list[float]]:
    """Model-token files for the peer (source reversed: OpenNMT-py does not reverse it) and our
    scores of the same hypotheses (the conversion check)."""
    b = load_model(MODEL)
    srcs = source_tokens(src_lines, b, tokenized=False)
    hyps, owner = [], []
    for group in read_nbest(nbest, n_sentences=len(src_lines)):
        hyps += [h.tokens for h in group.hyps]
        owner += [group.sent_id] * len(group.hyps)
    ids = hypothesis_ids(hyps, b, escaped=True)
    src_ids = [b.src_vocab.encode(s) for s in srcs]
    ours, _ = score_ids(b.model, src_ids, ids, owner, ScoringConfig())
    s_path = write(WORK / f"{tag}.src", [" ".join(srcs[o][::-1]) for o in owner])
    t_path = write(WORK / f"{tag}.tgt", [" ".join(b.tgt_vocab.itos[i] for i in r) for r in ids])
    return s_path, t_path, [float(x) for x in ours]


def _with_out(cmd: list[str], name: str, r: int) -> list[str]:
    """`cmd` with a fresh --out directory: one left by an earlier (or killed) benchmark would
    hold that run's score cache."""
    out = WORK / f"{name}.{r}"
    shutil.rmtree(out, ignore_errors=True)
    return [*cmd, str(out)]


def _fixed(cmd: list[str], r: int) -> list[str]:
    return cmd


def ratios(ours: list[float], peer: list[float]) -> dict[str, object]:
    r = [a / b for a, b in zip(ours, peer, strict=True)]
    return {
        "ours_s": [round(x, 2) for x in ours],
        "peer_s": [round(x, 2) for x in peer],
        "ratio_ours_over_peer": {
            "min": round(min(r), 3),
            "median": round(statistics.median(r), 3),
            "max": round(max(r), 3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--score-sentences", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    args = ap.parse_args()
    data = multi30k_dir(args.data_dir)
    WORK.mkdir(parents=True, exist_ok=True)
    py = ensure_venv()
    onmt = WORK / "att-rev-1.onmt.pt"
    subprocess.run([str(py), str(SIDE), "convert", str(MODEL), str(onmt)], check=True, env=ENV)

    raw = read_lines(data / "test_2016_flickr.en.gz")
    src_file = write(WORK / "test.en", raw[: args.sentences])
    b = load_model(MODEL)
    toks = source_tokens(raw[: args.sentences], b, tokenized=False)
    tok_file = write(WORK / "test.tok.en", [" ".join(t) for t in toks])
    rev_file = write(WORK / "test.rev.tok.en", [" ".join(t[::-1]) for t in toks])
    lists = {}
    for tag, n, per in (("score", args.score_sentences, None), ("start", 1, 10)):
        nb = WORK / f"{tag}.nbest.gz"
        nbest_head(data / "test2016.moses.1000best.gz", nb, n, per)
        src = write(WORK / f"{tag}.en", raw[:n])
        lists[tag] = (nb, src, *peer_inputs(tag, raw[:n], nb))

    # The conversion check: the peer's gold scores equal ours.
    nb, src, ps, pt, ours = lists["score"]
    peer_scores = WORK / "score.peer"
    subprocess.run([str(py), str(SIDE), "score", str(onmt), str(ps), str(pt), str(peer_scores)],
                   check=True, env=ENV, capture_output=True)  # fmt: skip
    peer = [float(x) for x in peer_scores.read_text().split()]
    diffs = [abs(a - b) for a, b in zip(ours, peer, strict=True)]
    tokens = [len(t.split()) + 1 for t in pt.read_text(encoding="utf-8").splitlines()]
    max_diff = max(diffs)
    per_token = max(d / n for d, n in zip(diffs, tokens, strict=True))
    over = sum(d > 1e-4 for d in diffs)
    print(f"conversion: {len(ours)} hypotheses, max |ours - peer| = {max_diff:.2e} "
          f"({over} over 1e-4), max per token {per_token:.2e}")  # fmt: skip
    if per_token > CONVERSION_TOL_PER_TOKEN:
        raise SystemExit("the converted model does not score like ours")

    rescore = [sys.executable, "-m", "nbest_rescore"]
    onmt_translate = str(VENV / "bin" / "onmt_translate")
    translate = [*rescore, "translate", "--threads", "1", "--quiet", "--device", "cpu", "-m",
                 str(MODEL), "--beam", "12", "--batch-size", "64"]  # fmt: skip
    like_peer = ["--src-tokenized", "--tokenized-output", "-i", str(tok_file)]
    tasks: dict[str, tuple[Callable[[int], list[str]], Callable[[int], list[str]]]] = {
        # The peer's work: tokens in (ours in source order, the peer's reversed), tokens out.
        "beam12_translate": (
            lambda r: [*translate, *like_peer, "-o", str(WORK / "ours.out")],
            lambda r: [onmt_translate, "-model", str(onmt), "-src", str(rev_file), "-output",
                       str(WORK / "peer.out"), "-beam_size", "12", "-batch_size", "64",
                       "-batch_type", "sents", "-gpu", "-1"],
        ),
        # More than the peer does: ours from raw text to detokenized text (sacremoses both ways).
        "beam12_translate_raw": (
            lambda r: [*translate, "-i", str(src_file), "-o", str(WORK / "ours.raw.out")],
            lambda r: [onmt_translate, "-model", str(onmt), "-src", str(rev_file), "-output",
                       str(WORK / "peer.out"), "-beam_size", "12", "-batch_size", "64",
                       "-batch_type", "sents", "-gpu", "-1"],
        ),
        # Not the same weights' arithmetic: ours with dynamic int8 (`--int8`), the peer in fp32.
        "beam12_translate_int8": (
            lambda r: [*translate, "--int8", *like_peer, "-o", str(WORK / "ours.int8.out")],
            lambda r: [onmt_translate, "-model", str(onmt), "-src", str(rev_file), "-output",
                       str(WORK / "peer.out"), "-beam_size", "12", "-batch_size", "64",
                       "-batch_type", "sents", "-gpu", "-1"],
        ),
    }  # fmt: skip
    for tag in ("score", "start"):
        nb, src, ps, pt, _ = lists[tag]
        ours_run = [
            *rescore,
            "run",
            "--threads",
            "1",
            "--quiet",
            "--device",
            "cpu",
            "-m",
            str(MODEL),
            "--nbest",
            str(nb),
            "--src",
            str(src),
            "--out",
        ]
        peer_run = [
            str(py),
            str(SIDE),
            "score",
            str(onmt),
            str(ps),
            str(pt),
            str(WORK / f"{tag}.p"),
        ]
        tasks[f"{tag}_scoring"] = (
            partial(_with_out, ours_run, f"run.{tag}"),  # a fresh --out (no cache) every round
            partial(_fixed, peer_run),
        )  # fmt: skip
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in tasks}
    helps: list[float] = []
    for r in range(args.rounds):
        for name, (ours_cmd, peer_cmd) in tasks.items():
            first, second = (ours_cmd, peer_cmd) if r % 2 == 0 else (peer_cmd, ours_cmd)
            a, b_ = timed(first(r)), timed(second(r))
            times[name][0].append(a if r % 2 == 0 else b_)
            times[name][1].append(b_ if r % 2 == 0 else a)
            print(name, r, round(times[name][0][-1], 2), round(times[name][1][-1], 2), flush=True)
        helps.append(timed([*rescore, "--help"]))
    rows = {k: ratios(*v) for k, v in times.items()}
    ours_1best = (WORK / "ours.out").read_text(encoding="utf-8").splitlines()
    peer_1best = (WORK / "peer.out").read_text(encoding="utf-8").splitlines()
    same = sum(a == b for a, b in zip(ours_1best, peer_1best, strict=True))
    payload = {
        "benchmark": "peers",
        "what": "ours vs OpenNMT-py 3.5.1 (same weights), whole processes, 1 CPU thread each",
        "peer": "OpenNMT-py 3.5.1 on torch 2.2 (its own venv); ours on this environment's torch",
        "conversion_max_abs_diff": max_diff,
        "conversion_hypotheses": len(ours),
        "conversion_over_1e-4": over,
        "conversion_max_abs_diff_per_token": per_token,
        "conversion_tolerance": f"{CONVERSION_TOL_PER_TOKEN} per scored token (EOS included)",
        "beam12_translate": f"{args.sentences} test2016 sentences, model tokens in and out "
        "(ours --src-tokenized --tokenized-output; the peer gets them reversed)",
        "beam12_same_1best_as_peer": f"{same} of {len(ours_1best)}",
        "beam12_translate_raw": "the same sentences, ours from raw text to detokenized text "
        "(sacremoses tokenizing and detokenizing, which the peer does not do)",
        "beam12_translate_int8": "as beam12_translate, ours with --int8 (dynamic int8 LSTM and "
        "linear layers), the peer in fp32: not the same arithmetic, for scale",
        "score_scoring": f"1000-best of the first {args.score_sentences} sentences "
        "(ours: rescore run, prefix trie; peer: its model, batches of 64 padded pairs)",
        "start_scoring": "10 hypotheses of 1 sentence (start-up, model load included)",
        "rows": rows,
        "rescore_help_s": [round(x, 3) for x in helps],
        "rounds": args.rounds,
        "machine": machine_info(),
    }
    for k, v in rows.items():
        print(k, v["ratio_ours_over_peer"])
    print(f"wrote {write_result('peers', payload)}")


if __name__ == "__main__":
    main()
