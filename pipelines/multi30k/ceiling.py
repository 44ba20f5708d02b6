"""How far `rescore run` gets on test2016 with the models we have, and what does not move it.

`python -m pipelines.multi30k.ceiling --data-dir DIR --work-dir WORK` scores the val and test2016
1000-best lists with the shipped run models and the extra ones (`--extra`, default the shipped
`att-rev-2.pt`; scores from WORK/cache, shared with `rescore run --cache-dir`), then tunes by
MERT on val, with several seeds, each of these feature sets and reads test2016 once per tuning:

- the shipped set (`Baseline0`, the run models, `Length0`): the seed spread alone;
- the shipped set plus the extra models;
- the shipped set plus the list's own dense features (Moses' 14 feature values, each its own
  weight, beside `Baseline0`: the total holds features the list does not print, such as the
  unknown-word penalty, so it stays a feature);
- the shipped set on the top 100 of each list (`--max-hyps 100`).

Writes WORK/ceiling.json and the section between the `ceiling` markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbest_rescore.features import BASELINE, LENGTH
from nbest_rescore.metrics import paired_bootstrap, signature
from nbest_rescore.rerank import rerank
from nbest_rescore.run_job import ScoredList, even_average
from nbest_rescore.shipped import shipped_models
from nbest_rescore.table import NBestTable
from nbest_rescore.tune import MertConfig, tune
from pipelines.multi30k.beyond import _bleu, _commit, _rows, run_record, scored_lists, splice

BEGIN, END = "<!-- ceiling:begin -->", "<!-- ceiling:end -->"
TARGET = 63.0
TOP_K = 100


def top_k(table: NBestTable, stats: np.ndarray, k: int) -> tuple[NBestTable, np.ndarray]:
    """The first `k` hypotheses of every list (the decoder's best k, as `--max-hyps k` reads)."""
    counts = np.minimum(table.counts, k)
    starts = table.offsets[:-1]
    rows = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(
        np.cumsum(counts) - counts, counts))  # fmt: skip
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(table.offsets.dtype)
    return NBestTable(table.names, table.values[rows], offsets, table.missing), stats[rows]


def variants(
    dev: NBestTable, run_names: Sequence[str], extra_names: Sequence[str]
) -> dict[str, tuple[list[str], list[str], int | None]]:
    """Name -> (columns, model features of the even-average start, top k or None)."""
    ours = {BASELINE, LENGTH, *run_names, *extra_names}
    dense = [n for n in dev.names if n not in ours]
    shipped = [BASELINE, *run_names, LENGTH]
    return {
        "shipped set": (shipped, list(run_names), None),
        "+ " + ", ".join(extra_names): (
            [BASELINE, *run_names, *extra_names, LENGTH], [*run_names, *extra_names], None),
        f"+ the list's {len(dense)} dense features": (
            [BASELINE, *dense, *run_names, LENGTH], list(run_names), None),
        f"shipped set, top {TOP_K}": (shipped, list(run_names), TOP_K),
    }  # fmt: skip


def measure(dev: ScoredList, test: ScoredList, run_names: Sequence[str],
            extra_names: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:  # fmt: skip
    """Every row: per seed, the tuned dev BLEU, the test2016 BLEU and its p-value against Moses."""
    assert dev.stats is not None and test.stats is not None
    ds, ts = dev.stats.stats, test.stats.stats
    base = np.zeros(test.table.n_sentences, dtype=np.int64)
    out: dict[str, Any] = {"baseline_test": _bleu(ts, test.table, base), "rows": {}}
    for name, (cols, start_models, k) in variants(dev.table, run_names, extra_names).items():
        d, d_stats = dev.table.select(cols), ds
        t, t_stats = test.table.select(cols), ts
        if k is not None:
            d, d_stats = top_k(d, ds, k)
            t, t_stats = top_k(t, ts, k)
        runs = []
        for seed in seeds:
            t0 = time.perf_counter()
            res = tune(
                d, d_stats, even_average(d, start_models), MertConfig(restarts=10, seed=seed)
            )
            choice = rerank(t, res.weights)
            runs.append({
                "seed": seed, "dev_bleu": res.dev_bleu,
                "test_bleu": _bleu(t_stats, t, choice),
                "p_vs_baseline": paired_bootstrap(_rows(t_stats, t, base), _rows(t_stats, t, choice)),
                "weights": res.weights, "seconds": time.perf_counter() - t0,
            })  # fmt: skip
            print(f"{name} seed {seed}: dev {res.dev_bleu:.2f} test {runs[-1]['test_bleu']:.2f}",
                  file=sys.stderr, flush=True)  # fmt: skip
        out["rows"][name] = runs
    return out


def _extra_features(result: dict[str, Any]) -> list[str]:
    """The extra models' feature names (the second row is named after them: see `variants`)."""
    if "extra_features" in result:
        return list(result["extra_features"])
    return str(list(result["rows"])[1]).removeprefix("+ ").split(", ")


def section(result: dict[str, Any]) -> str:
    """The markdown section RESULTS.md carries between the markers."""
    base = result["baseline_test"]
    lines = [
        BEGIN,
        f"## How far `rescore run` gets: the {TARGET:.1f} target",
        "",
        f"Produced by `{result['command']}` at commit `{result['commit']}` on "
        f"{result['machine']}, {result['date']}. Run models: "
        + ", ".join(f"`{n}`" for n in result["run_models"])
        + "; extra: "
        + ", ".join(
            f"`{n}` ({f})"
            for n, f in zip(result["extra_models"], _extra_features(result), strict=True)
        )
        + f"; full 1000-best lists. BLEU: `{result['signature']}`. Each row is tuned on val by "
        "MERT (10 random restarts) once per seed; test2016 is read once per tuning. Moses' "
        f"1-best: {base:.2f}.",
        "",
        "| features | val BLEU (tuned on), per seed | test2016 BLEU, per seed | test2016 mean | "
        "p vs Moses (worst seed) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in result["rows"].items():
        dev = ", ".join(f"{r['dev_bleu']:.2f}" for r in runs)
        test = ", ".join(f"{r['test_bleu']:.2f}" for r in runs)
        mean = float(np.mean([r["test_bleu"] for r in runs]))
        p = max(r["p_vs_baseline"] for r in runs)
        lines.append(f"| {name} | {dev} | {test} | {mean:.2f} | {p:.3f} |")
    lines += ["", result.get("reading", ""), END]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--extra", action="append", default=None, help="extra model (repeatable)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "RESULTS.md")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    commit = _commit()
    torch.set_num_threads(args.threads)
    shipped = shipped_models()
    run_models = [str(p) for p in shipped.run_models]
    extra = args.extra or [str(shipped.directory / "att-rev-2.pt")]
    models = [*run_models, *extra]
    job, names, dev, test = scored_lists(args.data_dir, args.work_dir, models)
    run_names, extra_names = names[: len(run_models)], names[len(run_models) :]
    result = measure(dev, test, run_names, extra_names, range(1, args.seeds + 1))
    result.update(
        run_record("pipelines.multi30k.ceiling", argv, commit, args.threads),
        run_models=[Path(m).name for m in run_models],
        extra_models=[Path(m).name for m in extra],
        extra_features=extra_names,
        signature=signature(job.bleu),
    )
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "ceiling.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    splice(args.results, section(result), BEGIN, END)
    print(section(result))


if __name__ == "__main__":
    main()
