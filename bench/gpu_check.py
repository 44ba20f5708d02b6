"""Every GPU check in one run; without CUDA it runs the CPU parts and names what it skipped.

Parts (each a key of "parts" in the JSON, with "status": ok, failed or skipped, and a "reason"
when skipped):

- scores: log P(hyp | source) of the real n-best slice in tests/data (random-init models, a
  plain one and one with Luong attention) from `scoring.score_ids`, padded (share_prefixes=False)
  and trie (share_prefixes=True): trie equals padded on the CPU, and on CUDA both equal the CPU
  scores (fp32, TF32 off, atol 1e-4); the largest bf16 difference on CUDA is reported.
- sharding: `torchrun --nproc-per-node G` over the G GPUs (NCCL) scores the slice through
  `nbest_scorer.score_nbest` as one process does (on the CPU only with --cpu-shards, over gloo).
- train: training steps of each preset (Multi30k-like lengths, random batches): target tokens/s
  and the achieved FLOP rate as a fraction of the bound, a fp32 matmul GFLOP/s measured in the
  same run on the same device (FLOPs: bench/bench_train.py flops_per_pair, 3x forward).
- score: scoring tokens/s of each preset on the slice against the same bound, per target token
  `scoring.decoder_flops_per_token` (paper preset: 64 + 160 = 224 MFLOP).
- translate: beam search sentences/s of each preset (`translate.translate_lines`); random
  weights rarely end a hypothesis early, so hypotheses run to the length limit.
- paper_train: the paper's configuration exactly (`--preset paper`: 4 x 1000 LSTMs, 1000-d
  embeddings, 160k/80k vocabularies, 384M parameters; plain SGD at 0.7, clipping at 5) on batches
  of 128 sentences of the paper's mean lengths (25 English, 29 French words: 304M and 348M words
  over 12M pairs): `--paper-steps` steps after one warm-up, words/s (source + target, against
  the paper's 6,300 on 8 GPUs) and peak memory (CUDA: the allocator's peak; CPU: the process'
  peak RSS). On the CPU it is skipped unless `--paper-steps` is given: one step there takes
  tens of seconds and several GB (`--paper-steps 1` times the first step, with no warm-up).

Writes bench/results/gpu.json on a CUDA machine, bench/results/gpu_check_cpu.json otherwise
(`--out` writes elsewhere). Exits 1 if a check failed.

    python -m bench.gpu_check [--presets small,paper] [--sentences 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_train import bench_one, matmul_gflops, sync
from bench.common import RESULTS, write_result
from nbest_rescore import distributed
from nbest_rescore.checkpoint import ModelBundle, load_model, model_payload, save_checkpoint
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.nbest_scorer import score_nbest
from nbest_rescore.scoring import ScoringConfig, decoder_flops_per_token, score_ids
from nbest_rescore.search import SearchConfig
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.translate import TranslateConfig, translate_lines
from nbest_rescore.vocab import Vocab

ROOT = Path(__file__).resolve().parent.parent
NBEST = ROOT / "tests" / "data" / "test2016.head30.top20.nbest.gz"  # real Moses lines
SOURCES = ROOT / "tests" / "data" / "test2016.head30.tok.en.gz"  # their tokenized sources
ATOL = 1e-4


# --- inputs and models --------------------------------------------------------------------------


class Slice:
    """The first `n` sentences of the real slice: source tokens, hypotheses, vocabularies."""

    def __init__(self, n: int) -> None:
        groups = list(read_nbest(NBEST, max_hyps=None))[:n]
        self.nbest_path = NBEST
        self.sources = read_lines(SOURCES)[:n]
        self.src_tokens = [line.split() for line in self.sources]
        self.hyps = [h.tokens for g in groups for h in g.hyps]
        self.hyp_src = np.array([g.sent_id for g in groups for _ in g.hyps], dtype=np.int64)
        self.src_vocab = Vocab.build(self.src_tokens)
        self.tgt_vocab = Vocab.build(self.hyps)

    def ids(self, bundle: ModelBundle) -> tuple[list[list[int]], list[list[int]]]:
        """Source and hypothesis ids under the bundle's vocabularies."""
        src = [bundle.src_vocab.encode(s) for s in self.src_tokens]
        return src, [bundle.tgt_vocab.encode(h) for h in self.hyps]


def padded_vocab(vocab: Vocab, size: int) -> Vocab:
    """`vocab` filled up with placeholder tokens to `size` entries, so that a preset's output
    layer keeps its full size (and FLOPs) while every id still decodes to a token."""
    extra = tuple(f"<filler{i}>" for i in range(max(0, size - len(vocab))))
    return Vocab(vocab.itos + extra) if extra else vocab


def make_bundle(
    data: Slice, preset: str, *, attention: str = "none", full_size: bool = True
) -> ModelBundle:
    """A random-init model of `preset` (seed 0) with the slice's vocabularies; `full_size` keeps
    the preset's vocabulary sizes, else they shrink to the slice's."""
    base = ModelConfig.preset(preset, attention=attention)
    src_v, tgt_v = data.src_vocab, data.tgt_vocab
    if full_size:
        src_v = padded_vocab(src_v, base.src_vocab_size)
        tgt_v = padded_vocab(tgt_v, base.tgt_vocab_size)
    torch.manual_seed(0)
    model = Seq2Seq(base.with_vocab_sizes(len(src_v), len(tgt_v))).eval()
    return ModelBundle(model, src_v, tgt_v, TokenizerConfig("en"), TokenizerConfig("fr"))


def on_device(bundle: ModelBundle, device: str) -> ModelBundle:
    """A copy of `bundle` whose model lives on `device`."""
    return ModelBundle(
        copy.deepcopy(bundle.model).to(device),
        bundle.src_vocab,
        bundle.tgt_vocab,
        bundle.src_tok,
        bundle.tgt_tok,
    )


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


# --- the parts ------------------------------------------------------------------------------------


def check_scores(data: Slice, preset: str, cuda: bool) -> dict[str, Any]:
    """Trie vs padded scores on the CPU; CUDA vs CPU (fp32) and bf16 on CUDA."""
    out: dict[str, Any] = {"preset": preset, "hypotheses": len(data.hyps), "atol": ATOL}
    ok = True
    for attention in ("none", "luong"):
        bundle = make_bundle(data, preset, attention=attention, full_size=False)
        src_ids, hyp_ids = data.ids(bundle)
        res: dict[str, Any] = {}
        cpu = {
            share: score_ids(
                bundle.model,
                src_ids,
                hyp_ids,
                data.hyp_src,
                ScoringConfig(share_prefixes=share, device="cpu"),
            )[0]
            for share in (False, True)
        }
        res["cpu_trie_vs_padded_max_abs"] = float(np.max(np.abs(cpu[True] - cpu[False])))
        ok &= res["cpu_trie_vs_padded_max_abs"] <= ATOL
        if cuda:
            gpu = on_device(bundle, "cuda").model
            for share, name in ((False, "padded"), (True, "trie")):
                cfg = ScoringConfig(share_prefixes=share, device="cuda")
                fp32 = score_ids(gpu, src_ids, hyp_ids, data.hyp_src, cfg)[0]
                bf16 = score_ids(
                    gpu,
                    src_ids,
                    hyp_ids,
                    data.hyp_src,
                    dataclasses.replace(cfg, bf16=True),
                )[0]
                res[f"cuda_vs_cpu_{name}_max_abs"] = float(np.max(np.abs(fp32 - cpu[share])))
                res[f"bf16_vs_fp32_{name}_max_abs"] = float(np.max(np.abs(bf16 - fp32)))
                ok &= res[f"cuda_vs_cpu_{name}_max_abs"] <= ATOL
        out[f"attention_{attention}"] = res
    out["status"] = "ok" if ok else "failed"
    if not cuda:
        out["skipped"] = "CUDA vs CPU and bf16: no CUDA device (only the CPU trie check ran)"
    return out


def shard_worker(args: argparse.Namespace) -> None:
    """(Under torchrun or alone) score the slice through the chunk store; rank 0 saves it."""
    torch.set_num_threads(1)
    with distributed.process_group(args.device) as info:
        bundle = load_model(args.model, device=args.device)
        cfg = ScoringConfig(device=args.device, src_tokenized=True, chunk_sentences=2)
        res = score_nbest(NBEST, read_lines(SOURCES)[: args.sentences], [bundle], cfg, args.cache)
        if info.rank == 0:
            np.save(args.worker_out, res.logprob)


def check_sharding(data: Slice, preset: str, device: str, nproc: int) -> dict[str, Any]:
    """torchrun over `nproc` processes against one process, through the chunk store (the whole
    slice: the store wants a source for every id of the n-best)."""
    bundle = make_bundle(Slice(30), preset, full_size=False)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = tmp / "model.pt"
        save_checkpoint(
            model,
            model_payload(
                bundle.model, bundle.src_vocab, bundle.tgt_vocab, bundle.src_tok, bundle.tgt_tok
            ),
        )
        worker = [
            __file__,
            "--shard-worker",
            "--device",
            device,
            "--model",
            str(model),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        runs = {
            "one_process": [sys.executable, *worker],
            "torchrun": [*launch, "--nproc-per-node", str(nproc), *worker],
        }
        scores = {}
        for name, cmd in runs.items():
            out = tmp / f"{name}.npy"
            cmd = [*cmd, "--cache", str(tmp / f"cache-{name}"), "--worker-out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            if proc.returncode != 0:
                return {"status": "failed", "reason": f"{name}: {proc.stderr[-2000:]}"}
            scores[name] = np.load(out)
    diff = float(np.max(np.abs(scores["torchrun"] - scores["one_process"])))
    return {
        "status": "ok" if diff <= ATOL else "failed",
        "backend": "nccl" if device == "cuda" else "gloo",
        "processes": nproc,
        "note": "a world of one process starts no process group" if nproc < 2 else "",
        "hypotheses": len(scores["one_process"]),
        "max_abs_difference": diff,
        "bitwise_equal": bool(np.array_equal(scores["torchrun"], scores["one_process"])),
    }


def check_paper_train(
    device: str, steps: int, batch: int, src_len: int, tgt_len: int, peak: float
) -> dict[str, Any]:
    """`steps` steps of the paper's model and recipe; words/s and peak memory."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    r = bench_one("paper", batch, src_len, tgt_len, steps, device=device, warmup=1 if cuda else 0)
    r.pop("model")
    r["fraction_of_flop_bound"] = r["achieved_gflops"] / peak
    if cuda:
        r["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    r["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"status": "ok", "matmul_gflops": peak, "runs": [r]}


def check_train(presets: Sequence[str], device: str, peak: float, steps: int) -> dict[str, Any]:
    """Training steps per preset against the matmul bound."""
    runs = []
    for preset in presets:
        r = bench_one(preset, 64, 13, 14, steps, device=device)
        r.pop("model")
        r["fraction_of_flop_bound"] = r["achieved_gflops"] / peak
        runs.append(r)
    return {"status": "ok", "matmul_gflops": peak, "runs": runs}


def check_score(data: Slice, presets: Sequence[str], device: str, peak: float) -> dict[str, Any]:
    """Scoring tokens/s per preset (padded and trie) against the matmul bound."""
    runs = []
    for preset in presets:
        bundle = on_device(make_bundle(data, preset), device)
        src_ids, hyp_ids = data.ids(bundle)
        lstm, softmax = decoder_flops_per_token(bundle.model)
        bound = peak * 1e9 / (lstm + softmax)
        for share in (False, True):
            cfg = ScoringConfig(share_prefixes=share, device=device)
            score_ids(bundle.model, src_ids[:1], hyp_ids[:2], [0, 0], cfg)  # warm-up
            _, stats = score_ids(bundle.model, src_ids, hyp_ids, data.hyp_src, cfg)
            seconds = stats.encode_s + stats.decode_s
            tps = stats.n_target_tokens / seconds
            runs.append(
                {
                    "preset": preset,
                    "share_prefixes": share,
                    "target_tokens": stats.n_target_tokens,
                    "seconds": seconds,
                    "target_tokens_per_s": tps,
                    "mflop_per_target_token": (lstm + softmax) / 1e6,
                    "flop_bound_tokens_per_s": bound,
                    "fraction_of_flop_bound": tps / bound,
                }
            )
    return {
        "status": "ok",
        "matmul_gflops": peak,
        "note": "with share_prefixes the decoder runs once per distinct prefix, so the "
        "fraction can exceed what the FLOPs of every token would allow",
        "runs": runs,
    }


def check_translate(data: Slice, presets: Sequence[str], device: str, beam: int) -> dict[str, Any]:
    """Beam search sentences/s per preset."""
    runs = []
    for preset in presets:
        bundle = on_device(make_bundle(data, preset), device)
        cfg = TranslateConfig(search=SearchConfig(beam=beam), src_tokenized=True)
        list(translate_lines([bundle], data.sources[:1], cfg))  # warm-up
        sync(device)
        t = time.perf_counter()
        results = list(translate_lines([bundle], data.sources, cfg))
        sync(device)
        seconds = time.perf_counter() - t
        runs.append(
            {
                "preset": preset,
                "beam": beam,
                "sentences": len(results),
                "seconds": seconds,
                "sentences_per_s": len(results) / seconds,
            }
        )
    return {"status": "ok", "runs": runs}


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--presets", help="comma-separated (default: small,paper on CUDA, small on CPU)"
    )
    ap.add_argument("--check-preset", default="small", help="preset of the equality checks")
    ap.add_argument("--sentences", type=int, default=30, help="sentences of the slice (max 30)")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument(
        "--paper-steps",
        type=int,
        default=None,
        help="paper_train steps (default: 5 on CUDA; on the CPU skipped unless given)",
    )
    ap.add_argument("--paper-batch", type=int, default=128, help="paper_train sentences/batch")
    ap.add_argument(
        "--paper-lengths", default="25,29", help="paper_train source,target words per sentence"
    )
    ap.add_argument("--beam", type=int, default=12)
    ap.add_argument("--matmul-size", type=int, default=None, help="side of the peak matmul")
    ap.add_argument("--cpu-shards", type=int, default=0, help="on CPU: gloo processes (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, help="the JSON to write (default: bench/results/...)")
    # the sharded-scoring worker (run by check_sharding)
    ap.add_argument("--shard-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shard_worker:
        shard_worker(args)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    presets = (args.presets or ("small,paper" if cuda else "small")).split(",")
    if cuda:  # fp32 means fp32: no TF32 in matmuls or cuDNN
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    data = Slice(args.sentences)
    n_gpus = torch.cuda.device_count() if cuda else 0
    started = time.perf_counter()
    parts: dict[str, Any] = {"scores": check_scores(data, args.check_preset, cuda)}
    print(f"scores: {json.dumps(parts['scores'])}", flush=True)
    if cuda:
        parts["sharding"] = check_sharding(data, args.check_preset, "cuda", n_gpus)
    elif args.cpu_shards > 0:
        parts["sharding"] = check_sharding(data, args.check_preset, "cpu", args.cpu_shards)
        parts["sharding"]["note"] = "gloo on the CPU: NCCL needs CUDA devices"
    else:
        parts["sharding"] = skipped("no CUDA device for NCCL (--cpu-shards N runs it over gloo)")
    print(f"sharding: {json.dumps(parts['sharding'])}", flush=True)
    size = args.matmul_size or (4096 if cuda else 1024)
    peak = max(matmul_gflops(size, 10, device) for _ in range(2))
    parts["train"] = check_train(presets, device, peak, args.train_steps)
    parts["score"] = check_score(data, presets, device, peak)
    parts["translate"] = check_translate(data, presets, device, args.beam)
    paper_steps = args.paper_steps if args.paper_steps is not None else (5 if cuda else 0)
    if paper_steps > 0:
        src_len, tgt_len = (int(x) for x in args.paper_lengths.split(","))
        parts["paper_train"] = check_paper_train(
            device, paper_steps, args.paper_batch, src_len, tgt_len, peak
        )
    else:
        parts["paper_train"] = skipped(
            "the paper's model on the CPU: one step takes tens of seconds and several GB "
            "(--paper-steps 1 runs it)"
        )
    for name in ("train", "score", "translate", "paper_train"):
        if "runs" not in parts[name]:
            continue
        for r in parts[name]["runs"]:
            shown = {k: v for k, v in r.items() if not isinstance(v, dict)}
            print(f"{name}: {json.dumps(shown)}", flush=True)
    failed = [name for name, part in parts.items() if part["status"] == "failed"]
    skipped_parts = {
        name: part.get("reason") or part.get("skipped")
        for name, part in parts.items()
        if part["status"] == "skipped" or "skipped" in part
    }
    payload = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA device)",
        "cuda": cuda,
        "gpus": n_gpus,
        "torch": torch.__version__,
        "tf32": False if cuda else None,
        "presets": presets,
        "sentences": args.sentences,
        "seconds": time.perf_counter() - started,
        "failed": failed,
        "skipped": skipped_parts,
        "parts": parts,
    }
    default = RESULTS / ("gpu.json" if cuda else "gpu_check_cpu.json")
    path = write_result("gpu" if cuda else "gpu_check_cpu", payload, path=args.out or default)
    print(f"device: {payload['device']}; failed: {failed or 'none'}; skipped: {skipped_parts}")
    print(f"wrote {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
