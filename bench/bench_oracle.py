"""Oracle benchmark: BLEU statistics of every hypothesis of a real 1000-best list, and the oracles.

On `test2016.moses.1000best.gz` (382,839 hypotheses) in both BLEU modes: `--tokenize none`
(tokenized hypotheses vs `test_2016_flickr.tok.fr.gz`) and `13a` (hypotheses detokenized, vs the
raw `test_2016_flickr.fr.gz`). Measured, wall and CPU seconds (the machine is shared):

- end to end as `rescore oracle` runs it: read the list (streamed) + statistics + corpus oracle;
- statistics alone on already-read groups, with 1 and 2 worker processes;
- sentence oracle, corpus oracle (and one hill-climbing pass), anti-oracle, oracle@k;
- baselines in the same run: sacrebleu's own segment statistics (`_compute_segment_statistics`,
  reference n-grams once per sentence) on a sample of sentences, extrapolated to the whole list;
  and for one hill-climbing pass, sacrebleu per candidate swap on a sample, extrapolated, both
  from statistics (`BLEU.compute_bleu` on the summed row) and naively (`corpus_score` on text).

It also checks the numbers against sacrebleu on the full data: the 1-best and the corpus oracle's
selection re-scored from text by `sacrebleu.BLEU.corpus_score`. Writes bench/results/oracle.json.

    python -m bench.bench_oracle [--data-dir DIR] [--modes none,13a] [--sample-sentences N]
"""

from __future__ import annotations

import argparse
import functools
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench.common import DATA_ENV, machine_info, multi30k_dir, write_result
from nbest_rescore import oracle
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    bleu_metric,
    bleu_of_selection,
    compute_hyp_stats,
    hypothesis_text,
    signature,
)
from nbest_rescore.nbest_reader import NBestGroup, read_nbest

ROOT = Path(__file__).resolve().parent.parent
REFS = {"none": "test_2016_flickr.tok.fr.gz", "13a": "test_2016_flickr.fr.gz"}
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Run `fn`; its result and wall / CPU seconds (CPU includes finished child processes)."""

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall0, cpu0 = time.perf_counter(), cpu()
    out = fn()
    return out, {
        "wall_s": round(time.perf_counter() - wall0, 3),
        "cpu_s": round(cpu() - cpu0, 3),
    }


def sacrebleu_stats_baseline(
    groups: list[NBestGroup], refs: list[str], config: BleuConfig, n_sent: int
) -> dict[str, Any]:
    """sacrebleu's own per-hypothesis statistics on the first `n_sent` sentences; also checks
    that they equal ours row for row."""
    metric = bleu_metric(config)
    sample = groups[:n_sent]

    def run() -> np.ndarray:
        rows = []
        for g in sample:
            ref_info = metric._extract_reference_info([metric._preprocess_segment(refs[g.sent_id])])
            for h in g.hyps:
                text = metric._preprocess_segment(hypothesis_text(h.tokens, config))
                rows.append(metric._compute_segment_statistics(text, ref_info))
        return np.array(rows, dtype=np.int64)

    rows, t = timed(run)
    ours = compute_hyp_stats(sample, refs[:n_sent], config)
    n_hyps = len(rows)
    return {
        "sample_sentences": n_sent,
        "sample_hypotheses": n_hyps,
        **t,
        "us_per_hypothesis": round(t["wall_s"] / n_hyps * 1e6, 2),
        "rows_equal_ours": bool(np.array_equal(rows, ours.stats)),
    }


def climb_pass_baselines(
    hs: HypStats, texts_1best: list[str], refs: list[str], n_sent: int, n_text: int
) -> dict[str, Any]:
    """One hill-climbing pass, one sacrebleu call per candidate swap, timed on a sample."""
    sel = hs.one_best()
    total = hs.totals(sel)
    starts = hs.offsets[:-1]

    metric = bleu_metric(hs.config)

    def from_stats() -> int:
        n = 0
        for i in range(n_sent):
            base = total - hs.stats[starts[i]]
            for j in range(int(hs.counts[i])):
                s = (base + hs.stats[starts[i] + j]).tolist()
                metric._compute_score_from_stats(s)
                n += 1
        return n

    n_stats, t_stats = timed(from_stats)
    cand_texts = list(texts_1best)

    def from_text() -> int:
        for k in range(n_text):  # swap sentence 0 to candidate k, rescore the corpus from text
            cand_texts[0] = texts_1best[0] if k == 0 else texts_1best[k % len(texts_1best)]
            metric.corpus_score(cand_texts, [refs])
        return n_text

    _, t_text = timed(from_text)
    n_all = int(hs.counts.sum())
    per_stats = t_stats["wall_s"] / n_stats
    per_text = t_text["wall_s"] / n_text
    return {
        "compute_bleu_per_candidate": {
            "sample_candidates": n_stats,
            **t_stats,
            "us_per_candidate": round(per_stats * 1e6, 2),
            "extrapolated_pass_s": round(per_stats * n_all, 2),
        },
        "corpus_score_per_candidate": {
            "sample_candidates": n_text,
            **t_text,
            "ms_per_candidate": round(per_text * 1e3, 2),
            "extrapolated_pass_s": round(per_text * n_all, 1),
        },
    }


def bench_mode(data: Path, tok: str, sample_sentences: int) -> dict[str, Any]:
    """Everything for one BLEU mode."""
    nbest = data / "test2016.moses.1000best.gz"
    refs = read_lines(data / REFS[tok])
    config = BleuConfig(tokenize=tok)
    res: dict[str, Any] = {"signature": signature(config), "reference": REFS[tok]}

    # End to end, streamed, as `rescore oracle` does it.
    workers = 2 if config.detokenizes else 1

    def end_to_end() -> tuple[HypStats, np.ndarray]:
        hs = compute_hyp_stats(
            read_nbest(nbest, n_sentences=len(refs)), refs, config, workers=workers
        )
        return hs, oracle.corpus_oracle(hs)

    (hs, corp), t = timed(end_to_end)
    res["end_to_end_read_stats_corpus_oracle"] = {"workers": workers, **t}
    res["n_sentences"], res["n_hypotheses"] = hs.n_sentences, hs.n_hypotheses

    groups, t = timed(lambda: list(read_nbest(nbest, n_sentences=len(refs))))
    res["read_nbest"] = t
    for w in (1, 2):
        hs_w, t = timed(functools.partial(compute_hyp_stats, groups, refs, config, workers=w))
        assert np.array_equal(hs_w.stats, hs.stats)
        res[f"stats_workers{w}"] = t

    # Oracles.
    sent, t_sent = timed(lambda: oracle.sentence_oracle(hs))
    corp, t_corp = timed(lambda: oracle.corpus_oracle(hs))
    _, t_pass = timed(lambda: oracle._climb(hs, sent, hs.counts, 1.0, 1))
    anti, t_anti = timed(lambda: oracle.anti_oracle(hs))
    at_k, t_at_k = timed(lambda: oracle.oracle_at_k(hs))
    sent_at_k, t_sent_at_k = timed(lambda: oracle.sentence_oracle_at_k(hs))
    res["timings"] = {
        "sentence_oracle": t_sent,
        "corpus_oracle": t_corp,
        "one_climb_pass": t_pass,
        "anti_oracle": t_anti,
        "oracle_at_k": t_at_k,
        "sentence_oracle_at_k": t_sent_at_k,
    }

    def score(sel: np.ndarray) -> float:
        return round(float(bleu_of_selection(hs, sel).score), 4)

    res["bleu"] = {
        "one_best": score(hs.one_best()),
        "one_best_verbose": str(bleu_of_selection(hs, hs.one_best())),
        "sentence_oracle": score(sent),
        "corpus_oracle": score(corp),
        "corpus_oracle_verbose": str(bleu_of_selection(hs, corp)),
        "anti_oracle": score(anti),
        "oracle_at_k": {str(k): round(v, 4) for k, v in at_k.items()},
        "sentence_oracle_at_k": {str(k): round(v, 4) for k, v in sent_at_k.items()},
    }
    res["corpus_oracle_rank_histogram"] = oracle.rank_histogram(corp)

    # Cross-check against sacrebleu on text, full data.
    metric = bleu_metric(config)

    def texts(sel: np.ndarray) -> list[str]:
        return [
            hypothesis_text(g.hyps[j].tokens, config)
            for g, j in zip(groups, sel.tolist(), strict=True)
        ]

    checks = {}
    for name, sel in (("one_best", hs.one_best()), ("corpus_oracle", corp)):
        want = metric.corpus_score(texts(sel), [refs]).score
        checks[name] = abs(want - float(bleu_of_selection(hs, sel).score))
    res["abs_diff_vs_sacrebleu_corpus_score"] = checks
    assert all(d < 1e-9 for d in checks.values()), checks

    # Baselines.
    base = sacrebleu_stats_baseline(groups, refs, config, sample_sentences)
    base["extrapolated_s"] = round(base["us_per_hypothesis"] * hs.n_hypotheses / 1e6, 2)
    res["baseline_sacrebleu_stats"] = base
    res["speedup_stats_vs_sacrebleu_1worker"] = round(
        base["extrapolated_s"] / res["stats_workers1"]["wall_s"], 2
    )
    climb = climb_pass_baselines(hs, texts(hs.one_best()), refs, 20, 20)
    res["baseline_climb_pass"] = climb
    res["speedup_climb_pass_vs_compute_bleu_loop"] = round(
        climb["compute_bleu_per_candidate"]["extrapolated_pass_s"] / t_pass["wall_s"], 1
    )
    res["speedup_climb_pass_vs_corpus_score_loop"] = round(
        climb["corpus_score_per_candidate"]["extrapolated_pass_s"] / t_pass["wall_s"], 0
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help=f"default: ${DATA_ENV}")
    ap.add_argument("--modes", default="none,13a")
    ap.add_argument("--sample-sentences", type=int, default=50)
    args = ap.parse_args()
    payload: dict[str, Any] = {"machine": machine_info(), "nbest": "test2016.moses.1000best.gz"}
    for tok in args.modes.split(","):
        res = bench_mode(multi30k_dir(args.data_dir), tok, args.sample_sentences)
        payload[f"tokenize_{tok}"] = res
        b = res["bleu"]
        print(
            f"[{tok}] end-to-end {res['end_to_end_read_stats_corpus_oracle']['wall_s']} s; "
            f"stats 1w {res['stats_workers1']['wall_s']} s, 2w {res['stats_workers2']['wall_s']} s; "
            f"1-best {b['one_best']}, sentence oracle {b['sentence_oracle']}, "
            f"corpus oracle {b['corpus_oracle']}, anti {b['anti_oracle']}",
            flush=True,
        )
    payload["machine_after"] = {"loadavg_1_5_15": machine_info()["loadavg_1_5_15"]}
    path = write_result("oracle", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
