"""Training throughput of the `small` and `paper` models on this CPU, against the FLOP bound.

A few real training steps (forward, loss summed over tokens / sentences, backward, clip, optimiser
step) on synthetic batches of Multi30k-like lengths; `paper` with a small batch so it fits. The
FLOP bound uses a matmul GFLOP/s measured in the same run: per token an LSTM layer costs
2*4*H*(E_in+H) FLOPs (paper: 4 x 16 = 64 MFLOP per token per direction), the softmax 2*H*V per
target token (paper: 160 MFLOP), x3 for forward+backward (`flops_per_pair`). The paper's 6,300
words/s (source+target) on 8 GPUs is given beside it. Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import machine_info, write_result
from nbest_rescore.model import ModelConfig, Seq2Seq, shift_right
from nbest_rescore.train import TRAIN_PRESETS
from nbest_rescore.vocab import EOS, PAD

PAPER_WORDS_PER_S = 6300  # Sutskever et al. 2014, 8 GPUs, source + target words


def lstm_flops_per_token(cfg: ModelConfig) -> float:
    """Forward FLOPs of one token through a stack of LSTM layers: 4 gates x (E_in + H) x H x 2."""
    total = 0.0
    for layer in range(cfg.layers):
        e_in = cfg.emb_dim if layer == 0 else cfg.hidden
        total += 2 * 4 * cfg.hidden * (e_in + cfg.hidden)
    return total


def flops_per_pair(cfg: ModelConfig, src_words: int, tgt_tokens: int) -> float:
    """Forward+backward FLOPs (3x forward) of one sentence pair: encoder, decoder and softmax."""
    softmax = 2 * cfg.hidden * cfg.tgt_vocab_size
    fwd = src_words * lstm_flops_per_token(cfg) + tgt_tokens * (lstm_flops_per_token(cfg) + softmax)
    return 3 * fwd


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that wall time measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(n: int = 1024, repeats: int = 10, device: str = "cpu") -> float:
    """Best-of-three fp32 matmul GFLOP/s of this machine, now (the same run's baseline)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9)
    return best


def bench_one(
    name: str,
    batch: int,
    src_len: int,
    tgt_len: int,
    steps: int,
    device: str = "cpu",
    *,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time `steps` training steps (after `warmup` untimed ones) of preset `name` on random
    batches."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset(name)
    model = Seq2Seq(cfg).to(device).train()
    tp = TRAIN_PRESETS[name]
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=tp["lr"])
        if tp["optimizer"] == "sgd"
        else torch.optim.Adam(model.parameters(), lr=tp["lr"])
    )
    src = torch.randint(4, cfg.src_vocab_size, (batch, src_len), device=device)
    tgt = torch.randint(4, cfg.tgt_vocab_size, (batch, tgt_len + 1), device=device)
    tgt[:, -1] = EOS
    src_len_t = torch.full((batch,), src_len)  # lengths stay on the CPU (packing wants them)

    def step() -> None:
        logp = model(src, src_len_t, shift_right(tgt))
        nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).masked_fill(tgt == PAD, 0.0)
        loss = nll.sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / steps
    words = batch * (src_len + tgt_len)
    tgt_tokens = batch * (tgt_len + 1)
    flops = batch * flops_per_pair(cfg, src_len, tgt_len + 1)
    return {
        "preset": name,
        "model": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": tp["optimizer"],
        "batch_sentences": batch,
        "src_len": src_len,
        "tgt_len": tgt_len,
        "steps": steps,
        "warmup_steps": warmup,
        "s_per_step": dt,
        "words_per_s": words / dt,
        "tgt_tokens_per_s": tgt_tokens / dt,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / dt / 1e9,
        "lstm_mflop_per_token_per_direction": lstm_flops_per_token(cfg) / 1e6,
        "softmax_mflop_per_token": 2 * cfg.hidden * cfg.tgt_vocab_size / 1e6,
    }


def measure(threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """All presets at one thread count, against that thread count's matmul GFLOP/s."""
    torch.set_num_threads(threads)
    peak_before = matmul_gflops()
    # Multi30k averages 13 English and 14 French words per sentence.
    runs = [
        bench_one("small", 64, 13, 14, args.small_steps),
        bench_one("paper", args.paper_batch, 13, 14, args.paper_steps),
    ]
    peak = max(peak_before, matmul_gflops())
    for r in runs:
        bound_step = r["gflop_per_step"] / peak
        r["flop_bound_s_per_step"] = bound_step
        r["flop_bound_words_per_s"] = r["words_per_s"] * r["s_per_step"] / bound_step
        r["achieved_over_bound"] = bound_step / r["s_per_step"]
        r["vs_paper_8gpu_words_per_s"] = r["words_per_s"] / PAPER_WORDS_PER_S
        print(
            f"threads {threads} {r['preset']:6s} batch {r['batch_sentences']:3d}: "
            f"{r['words_per_s']:8.0f} words/s ({r['tgt_tokens_per_s']:.0f} target tokens/s), "
            f"{r['achieved_gflops']:.1f} GFLOP/s = {r['achieved_over_bound']:.2f} of the matmul "
            f"bound ({peak:.1f} GFLOP/s; bound {r['flop_bound_words_per_s']:.0f} words/s); "
            f"paper 8 GPUs {PAPER_WORDS_PER_S} words/s -> ratio {r['vs_paper_8gpu_words_per_s']:.3f}"
        )
    return {"threads": threads, "matmul_gflops": peak, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts to measure")
    ap.add_argument("--small-steps", type=int, default=5)
    ap.add_argument("--paper-steps", type=int, default=1)
    ap.add_argument("--paper-batch", type=int, default=32)
    args = ap.parse_args()
    results = [measure(int(t), args) for t in args.threads.split(",")]
    path = write_result(
        "train",
        {
            "paper_words_per_s_8gpu": PAPER_WORDS_PER_S,
            "by_threads": results,
            "note": "the CPU is shared with other jobs: compare ratios to the same run's matmul "
            "bound, not absolute rates across runs",
            "machine": machine_info(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
