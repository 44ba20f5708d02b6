"""Translation throughput: batched beam search (`translate_lines`) against a naive beam search.

Translates the first `--sentences` raw sentences of test2016 (English) with a model
(the shipped left-to-right model data/models/att-rev-1.pt, `multi30k` preset, when present, else a randomly initialised
one with vocabularies built from the training data) at beam 1, 2 and 12, and times, in the same
run, a naive decoder on the same sentences: one sentence at a time, one decoder call per
hypothesis per step, candidates sorted in Python. Writes bench/results/translate.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from bench.common import DATA_ENV, machine_info, multi30k_dir, write_result
from nbest_rescore.checkpoint import ModelBundle, load_model
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.search import SearchConfig
from nbest_rescore.text import TokenizerConfig, tokenize
from nbest_rescore.translate import TranslateConfig, TranslationResult, translate_lines
from nbest_rescore.vocab import BOS, EOS, PAD, Vocab

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "data" / "models" / "att-rev-1.pt"  # the shipped left-to-right model


def read_gz(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh]
    return lines[:n] if n is not None else lines


def get_model(data: Path) -> tuple[ModelBundle, str]:
    """The shipped attention model if it exists, else a random `small` model with real vocabularies."""
    if TRAINED.is_file():
        return load_model(TRAINED), f"trained: {TRAINED.relative_to(ROOT)}"
    src_tok, tgt_tok = TokenizerConfig("en"), TokenizerConfig("fr")
    src_v = Vocab.build((s.split() for s in read_gz(data / "train.tok.en.gz")), max_size=10_000)
    tgt_v = Vocab.build((s.split() for s in read_gz(data / "train.tok.fr.gz")), max_size=10_000)
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small").with_vocab_sizes(len(src_v), len(tgt_v))
    model = Seq2Seq(cfg).eval()
    return ModelBundle(model, src_v, tgt_v, src_tok, tgt_tok), "random init (no trained model yet)"


def last_valid() -> dict[str, object] | None:
    """The validation record (step, perplexity) of the best checkpoint so far, if the log is there."""
    log = TRAINED.parent / "log.jsonl"
    if not TRAINED.is_file() or not log.is_file():
        return None
    valid = [
        e
        for e in map(json.loads, log.read_text().splitlines())
        if e.get("event") == "valid" and e.get("improved")
    ]
    return {k: valid[-1].get(k) for k in ("step", "epoch", "valid_ppl")} if valid else None


@torch.inference_mode()
def naive_beam_search(
    bundle: ModelBundle, src_ids: list[int], k: int, max_len: int
) -> tuple[list[int], float]:
    """The straightforward decoder: a Python list of hypotheses, one decoder call each per step."""
    model = bundle.model
    src = torch.tensor([src_ids or [PAD]])
    state = model.encode(src, torch.tensor([len(src_ids)]))
    beam: list[tuple[list[int], float, tuple[torch.Tensor, ...]]] = [([], 0.0, state)]
    finished: list[tuple[list[int], float]] = []
    for t in range(max_len + 1):
        cands: list[tuple[float, int, int, tuple[torch.Tensor, ...]]] = []
        for i, (toks, score, st) in enumerate(beam):
            logp, new_st = model.step(torch.tensor([toks[-1] if toks else BOS]), st)
            logp = logp[0]
            logp[[PAD, BOS]] = float("-inf")
            if t == max_len:
                cands.append((score + float(logp[EOS]), i, EOS, new_st))
                continue
            vals, idx = logp.topk(k + 1)
            for v, w in zip(vals.tolist(), idx.tolist(), strict=True):
                cands.append((score + v, i, w, new_st))
        cands.sort(key=lambda c: c[0], reverse=True)
        new_beam: list[tuple[list[int], float, tuple[torch.Tensor, ...]]] = []
        for rank, (score, i, w, st) in enumerate(cands):
            if w == EOS:
                if rank < k:
                    finished.append((beam[i][0], score))
            elif len(new_beam) < k:
                new_beam.append(([*beam[i][0], w], score, st))
        beam = new_beam
        best_fin = max((s for _, s in finished), default=float("-inf"))
        if not beam or best_fin >= beam[0][1]:
            break
    return max(finished, key=lambda f: f[1])


def run_batched(ens: Ensemble, lines: list[str], cfg: TranslateConfig) -> list[TranslationResult]:
    return list(translate_lines(ens, lines, cfg))


def run_naive(
    bundle: ModelBundle, src_ids: list[list[int]], k: int, search: SearchConfig
) -> list[tuple[list[int], float]]:
    return [naive_beam_search(bundle, ids, k, search.max_len(len(ids))) for ids in src_ids]


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()`'s result and its fastest wall time over `repeats` runs (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=150)
    ap.add_argument("--naive-sentences", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    # One thread: on a shared, overloaded 2-core machine two OpenMP threads made a decoder step
    # ten times slower (thread contention), which would measure the machine, not the search.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 2, 12])
    ap.add_argument(
        "--repeats", type=int, default=3, help="time each run this often, keep the best"
    )
    ap.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = multi30k_dir(args.data_dir)
    bundle, which = get_model(data)
    lines = read_gz(data / "test_2016_flickr.en.gz", args.sentences)
    src_ids = [bundle.src_vocab.encode(tokenize(x, bundle.src_tok)) for x in lines]
    ens = Ensemble([bundle])
    print(f"model: {which}; {len(lines)} sentences, {args.threads} threads")

    # Warm-up (first-call allocations, tokeniser caches) outside the timings.
    list(translate_lines(ens, lines[:8], TranslateConfig(SearchConfig(beam=2))))
    for ids in src_ids[:2]:
        naive_beam_search(bundle, ids, 2, 10)

    runs = {}
    for k in args.beams:
        search = SearchConfig(beam=k, batch_size=args.batch_size)
        cfg = TranslateConfig(search)
        results, dt = best_of(args.repeats, partial(run_batched, ens, lines, cfg))
        out_tokens = sum(len(r.hypotheses[0].ids) + 1 for r in results)  # + EOS

        n_naive = min(args.naive_sentences, len(lines))
        naive, dt_naive = best_of(
            args.repeats, partial(run_naive, bundle, src_ids[:n_naive], k, search)
        )
        naive_tokens = sum(len(toks) + 1 for toks, _ in naive)
        same = sum(
            list(r.hypotheses[0].ids) == toks for r, (toks, _) in zip(results, naive, strict=False)
        )
        run = {
            "beam": k,
            "batch_size": args.batch_size,
            "sentences": len(lines),
            "seconds": round(dt, 3),
            "sentences_per_s": round(len(lines) / dt, 2),
            "tokens_per_s": round(out_tokens / dt, 1),
            "mean_output_tokens": round(out_tokens / len(lines), 2),
            "naive_sentences": n_naive,
            "naive_seconds": round(dt_naive, 3),
            "naive_sentences_per_s": round(n_naive / dt_naive, 2),
            "naive_tokens_per_s": round(naive_tokens / dt_naive, 1),
            "speedup_sentences_per_s": round((len(lines) / dt) / (n_naive / dt_naive), 2),
            "same_1best_as_naive": f"{same}/{n_naive}",
        }
        runs[str(k)] = run
        print(
            f"beam {k:2d}: batched {run['sentences_per_s']:7.1f} sent/s {run['tokens_per_s']:8.1f} tok/s"
            f" | naive {run['naive_sentences_per_s']:6.1f} sent/s | x{run['speedup_sentences_per_s']}"
            f" | same 1-best {same}/{n_naive}"
        )

    payload = {
        "benchmark": "translate",
        "what": "batched beam search (translate_lines) vs naive per-hypothesis beam search, CPU",
        "model": which,
        "model_sha256": bundle.sha256[:16],
        "model_training": last_valid(),
        "model_config": bundle.config.to_dict(),
        "data": "first sentences of test_2016_flickr.en.gz (raw, tokenised with the model's settings)",
        "threads": args.threads,
        "timing": f"best of {args.repeats} runs each, batched and naive on the same sentences",
        "runs": runs,
        "machine": machine_info(),
    }
    path = write_result("translate", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
