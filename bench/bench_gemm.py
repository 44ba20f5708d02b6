"""The decoder's matrix products on one CPU thread: MKL's `addmm` against the oneDNN-packed
weights the search and the scorer use (`model._Linear`).

For the shipped `att-rev-1`'s shapes (hidden 512, 2 layers, 6,567 target words) at the row
counts beam search meets (batch 64 x beam 12 = 768 rows, and fewer as sentences finish), times
`torch.addmm(b, x, W.t())` and the packed product alternately, and reports GFLOP/s and the time
ratio packed/addmm (median of `--repeats` interleaved timings). Such a loop keeps its operands
hot in cache, which favours MKL on the square shapes; so it also times what decides: beam-12
search (batch 64) of the first `--sentences` test2016 sentences in-process, every product packed
(as shipped), only the output layer's, or none, in `--rounds` alternating rounds. Writes
bench/results/gemm.json.

    python -m bench.bench_gemm [--repeats 7 --sentences 300 --rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.common import machine_info, write_result
from nbest_rescore import model as model_module
from nbest_rescore.checkpoint import ModelBundle, load_model
from nbest_rescore.fileio import read_lines
from nbest_rescore.memory import reuse_freed_memory
from nbest_rescore.model import _Linear
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, translate_lines

MODEL = "data/models/att-rev-1.pt"
SOURCE = "data/multi30k/test2016.en.gz"


def search_rows(bundle: ModelBundle, sentences: int, rounds: int) -> dict[str, object]:
    """Seconds of beam-12 search with every product packed, only the output layer's, or none."""
    lines = read_lines(SOURCE)[:sentences]
    cfg = TranslateConfig(search=SearchConfig(beam=12, batch_size=64))
    vocab = bundle.model.config.tgt_vocab_size
    packing = _Linear.of
    original = _Linear.__dict__["of"]  # the classmethod itself, restored at the end

    def unpacked(w: torch.Tensor, b: torch.Tensor | None) -> _Linear:
        return _Linear(w, b, None)

    def output_only(w: torch.Tensor, b: torch.Tensor | None) -> _Linear:
        return packing(w, b) if w.shape[0] == vocab else _Linear(w, b, None)

    modes = {"all packed": packing, "output layer packed": output_only, "none packed": unpacked}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    outputs: dict[str, list[str]] = {}
    reuse_freed_memory()  # as `rescore translate` does
    try:
        for _ in range(rounds):
            for mode, of in modes.items():
                model_module._Linear.of = of  # type: ignore[method-assign,assignment]
                bundle.model._gate_cache = None
                t0 = time.perf_counter()
                outputs[mode] = [r.text for r in translate_lines([bundle], lines, cfg)]
                seconds[mode].append(round(time.perf_counter() - t0, 2))
    finally:
        setattr(model_module._Linear, "of", original)  # noqa: B010
        bundle.model._gate_cache = None
    base = statistics.median(seconds["none packed"])
    for mode, s in seconds.items():
        print(f"search, {mode}: {s} s (median ratio to none {statistics.median(s) / base:.3f})")
    return {
        "sentences": sentences,
        "seconds": seconds,
        "median_ratio_over_none_packed": {
            m: round(statistics.median(s) / base, 3) for m, s in seconds.items()
        },
        "outputs_identical_to_none_packed": {
            m: outputs[m] == outputs["none packed"] for m in modes
        },
    }


def _seconds(f: Callable[[], object], calls: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_model(MODEL)
    model = bundle.model
    w = dict(model.named_parameters())
    products: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {
        "output layer": (w["out.weight"].detach(), w["out.bias"].detach()),
        "upper layer [x; h]": (
            torch.cat([w["decoder.weight_ih_l1"], w["decoder.weight_hh_l1"]], 1).detach(),
            (w["decoder.bias_ih_l1"] + w["decoder.bias_hh_l1"]).detach(),
        ),
        "first layer h": (w["decoder.weight_hh_l0"].detach(), None),
        "attention output": (w["att_out.weight"].detach(), None),
    }
    rows: dict[str, dict[str, object]] = {}
    with torch.inference_mode():
        for name, (weight, b) in products.items():
            packed = _Linear.of(weight, b)
            if packed.packed is None:
                raise SystemExit("this torch has no oneDNN linear: nothing to compare")
            for m in (768, 96):
                x = torch.randn(m, weight.shape[1])
                flop = 2 * m * weight.shape[0] * weight.shape[1]
                calls = max(3, int(2e10 / flop))

                def plain(
                    x: torch.Tensor = x, w: torch.Tensor = weight, b: torch.Tensor | None = b
                ) -> torch.Tensor:
                    return torch.addmm(b, x, w.t()) if b is not None else x @ w.t()

                def fast(x: torch.Tensor = x, p: _Linear = packed) -> torch.Tensor:
                    return p(x)

                diff = float((plain() - fast()).abs().max())
                ta, tp = [], []
                for _ in range(args.repeats):
                    ta.append(_seconds(plain, calls))
                    tp.append(_seconds(fast, calls))
                a, p = statistics.median(ta), statistics.median(tp)
                k, n = weight.shape[1], weight.shape[0]
                key = f"{name}, {m} x {k} @ {k} x {n}"
                rows[key] = {
                    "addmm_gflops": round(flop / a / 1e9, 1),
                    "packed_gflops": round(flop / p / 1e9, 1),
                    "ratio_packed_over_addmm": round(p / a, 3),
                    "max_abs_diff": diff,
                }
                print(f"{key}: addmm {flop / a / 1e9:.1f}, packed {flop / p / 1e9:.1f} GFLOP/s "
                      f"(ratio {p / a:.2f}), max |diff| {diff:.1e}")  # fmt: skip
    search = search_rows(bundle, args.sentences, args.rounds)
    write_result(
        "gemm",
        {
            "benchmark": "gemm",
            "what": "the shipped att-rev-1 decoder's products, one thread: MKL addmm vs "
            "oneDNN-packed weights (model._Linear); medians of interleaved timings",
            "repeats": args.repeats,
            "torch": torch.__version__,
            "rows": rows,
            "search": search,
            "machine": machine_info(),
        },
    )


if __name__ == "__main__":
    main()
