"""The beam-search step's elementwise and selection work on one CPU thread, before and after.

At the shapes of the shipped `att-rev-1`'s beam-12 search (batch 64 x beam 12 = 768 rows,
hidden 512, 6,567 target words), times, interleaved, each pair in turn (median of `--repeats`):

- tanh: `torch.tanh` against `model.tanh_doubled` (2 sigmoid(2x) - 1) on 768 x 512;
- the LSTM cell: `model.lstm_cell` (`torch.sigmoid` x3, `torch.tanh` x2 over the gate chunks) against
  `model.fused_cell` (one sigmoid over all gates, the cell input doubled);
- the beam's 24 best continuations: one `topk` over the (64, 12 x 6567) sums against
  `search.top_candidates` (block maxima first).

Ratios are new/old; the new sides also pay for their inputs' copy or doubling (`fused_cell`
overwrites its gates), so they are conservative. Also checks that each pair agrees. Writes bench/results/step_ops.json.

    python -m bench.bench_step_ops [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.common import machine_info, write_result
from nbest_rescore.model import fused_cell, lstm_cell, tanh_doubled
from nbest_rescore.search import top_candidates

ROWS, HIDDEN, VOCAB, BATCH, BEAM = 768, 512, 6567, 64, 12


def _ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _pair(old: Callable[[], object], new: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median milliseconds of `old` and `new`, timed alternately after a warm-up."""
    old(), new()
    a, b = [], []
    for _ in range(repeats):
        a.append(_ms(old))
        b.append(_ms(new))
    mo, mn = statistics.median(a), statistics.median(b)
    return {"old_ms": round(mo, 3), "new_ms": round(mn, 3), "ratio_new_over_old": round(mn / mo, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, HIDDEN, generator=gen) * 2
    gates = torch.randn(ROWS, 4 * HIDDEN, generator=gen) * 2
    doubled = gates.clone()
    doubled[:, 2 * HIDDEN : 3 * HIDDEN] *= 2
    c = torch.randn(ROWS, HIDDEN, generator=gen)
    logp = torch.log_softmax(torch.randn(BATCH, BEAM, VOCAB, generator=gen) * 3, dim=-1)
    scores = torch.randn(BATCH, BEAM, generator=gen) * 5

    def direct() -> tuple[torch.Tensor, torch.Tensor]:
        return (scores.unsqueeze(-1) + logp).view(BATCH, -1).topk(2 * BEAM, dim=1)

    rows = {
        "tanh, 768 x 512": _pair(lambda: torch.tanh(x), lambda: tanh_doubled(x * 2), args.repeats),
        "LSTM cell, 768 rows x 512": _pair(
            lambda: lstm_cell(gates, c), lambda: fused_cell(doubled.clone(), c), args.repeats
        ),
        "top 24 of 64 x (12 x 6567) continuations": _pair(
            direct, lambda: top_candidates(scores, logp, 2 * BEAM), args.repeats
        ),
    }
    h_old, c_old = lstm_cell(gates, c)
    h_new, c_new = fused_cell(doubled.clone(), c)
    agree = {
        "tanh_max_abs_diff": float((torch.tanh(x) - tanh_doubled(x * 2)).abs().max()),
        "cell_h_max_abs_diff": float((h_old - h_new).abs().max()),
        "cell_c_max_abs_diff": float((c_old - c_new).abs().max()),
        "top_candidates_equal_scores": bool(
            torch.equal(direct()[0], top_candidates(scores, logp, 24)[0])
        ),
    }
    for name, r in rows.items():
        print(f"{name}: {r['old_ms']} -> {r['new_ms']} ms ({r['ratio_new_over_old']}x)")
    print(agree)
    payload = {
        "benchmark": "step_ops",
        "what": "beam-step elementwise and selection ops, old vs new, 1 CPU thread, median ms",
        "repeats": args.repeats,
        "rows": rows,
        "agreement": agree,
        "machine": machine_info(),
    }
    print(f"wrote {write_result('step_ops', payload)}")


if __name__ == "__main__":
    main()
