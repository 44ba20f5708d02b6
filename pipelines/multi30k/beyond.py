"""Beyond the paper, on the Multi30k 1000-best lists: the consensus feature MBR0 and the tuners.

`python -m pipelines.multi30k.beyond --data-dir DIR --work-dir WORK [-m CKPT ...]` scores the val
and test2016 1000-best lists with the models (default: the shipped ones; scores come from
WORK/cache, shared with `rescore run --cache-dir`), then measures, all tuned on val only:

- MBR0 (`nbest_rescore/mbr.py`): tuned weights without and with it, its posterior scale chosen
  on val, its cost in seconds per 100k hypotheses;
- the tuners (`nbest_rescore/tune.py`): MERT with random restarts against bagged MERT (the mean
  weights over bootstrap resamples of the dev lists), by the test2016 gain and by the gain on
  each half of val when tuned on the other half (several random halvings).

Writes WORK/beyond.json and the section between the `beyond` markers of RESULTS.md (which the
study keeps when it rewrites the file).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbest_rescore.checkpoint import assign_directions, load_model
from nbest_rescore.features import BASELINE, LENGTH, MBR, model_features, model_kind
from nbest_rescore.mbr import MbrConfig, mbr_feature
from nbest_rescore.metrics import BleuConfig, corpus_bleu_many, paired_bootstrap, signature
from nbest_rescore.progress import QUIET
from nbest_rescore.rerank import rerank
from nbest_rescore.run_job import RunJob, ScoredList, even_average, read_list, score_list
from nbest_rescore.shipped import shipped_models
from nbest_rescore.table import NBestTable, as_written
from nbest_rescore.tune import MertConfig, MertResult, tune

BEGIN, END = "<!-- beyond:begin -->", "<!-- beyond:end -->"
SCALES = (0.25, 0.5, 1.0, 2.0)
HALVINGS = 3


def _bleu(stats: np.ndarray, table: NBestTable, choice: np.ndarray) -> float:
    return float(corpus_bleu_many(stats[table.rows_of(choice)].sum(axis=0))[0])


def _rows(stats: np.ndarray, table: NBestTable, choice: np.ndarray) -> np.ndarray:
    return stats[table.rows_of(choice)]


def _columns(names: Sequence[str], mbr: bool) -> list[str]:
    return [BASELINE, *names, LENGTH, *([MBR] if mbr else [])]


def _with_mbr(table: NBestTable, cfg: MbrConfig) -> tuple[NBestTable, float]:
    """`table` with its MBR0 column recomputed under `cfg`; the seconds that took."""
    t0 = time.perf_counter()
    col = as_written(mbr_feature(table, table.column(BASELINE), cfg))
    seconds = time.perf_counter() - t0
    values = table.values.copy()
    values[:, table.names.index(MBR)] = col
    return replace(table, values=values), seconds


def _tune(dev: NBestTable, stats: np.ndarray, names: Sequence[str], cfg: MertConfig) -> MertResult:
    return tune(dev, stats, even_average(dev, names), cfg)


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def measure(
    dev: ScoredList, test: ScoredList, names: Sequence[str], tuners: dict[str, MertConfig]
) -> dict[str, Any]:
    """Every figure of the section, from the two scored lists (each with an MBR0 column)."""
    assert dev.stats is not None and test.stats is not None
    ds, ts = dev.stats.stats, test.stats.stats
    base_choice = np.zeros(test.table.n_sentences, dtype=np.int64)
    base_bleu = _bleu(ts, test.table, base_choice)
    out: dict[str, Any] = {"baseline_test": base_bleu, "tuners": {}, "mbr": {}}
    plain = tuners["mert"]

    # MBR0: the scale by val (tuned dev BLEU), then test with and without.
    no_mbr_dev = dev.table.select(_columns(names, False))
    no_mbr = _tune(no_mbr_dev, ds, names, plain)
    no_mbr_choice = rerank(test.table.select(_columns(names, False)), no_mbr.weights)
    rows: list[dict[str, Any]] = []
    for scale in SCALES:
        cfg = MbrConfig(top_k=50, scale=scale)
        dev_t, secs = _with_mbr(dev.table, cfg)
        res = _tune(dev_t.select(_columns(names, True)), ds, names, plain)
        per_100k = secs / dev.table.n_hypotheses * 1e5
        rows.append(
            {"scale": scale, "top_k": 50, "dev_bleu": res.dev_bleu, "weights": res.weights,
             "seconds_per_100k": per_100k}
        )  # fmt: skip
    best = max(rows, key=lambda r: r["dev_bleu"])
    test_t, _ = _with_mbr(test.table, MbrConfig(top_k=50, scale=best["scale"]))
    mbr_choice = rerank(test_t.select(_columns(names, True)), best["weights"])
    out["mbr"] = {
        "grid": rows,
        "chosen_scale": best["scale"],
        "without": {
            "dev_bleu": no_mbr.dev_bleu,
            "test_bleu": _bleu(ts, test.table, no_mbr_choice),
            "weights": no_mbr.weights,
        },
        "with": {
            "dev_bleu": best["dev_bleu"],
            "test_bleu": _bleu(ts, test_t, mbr_choice),
            "weights": best["weights"],
            "p_vs_baseline": paired_bootstrap(
                _rows(ts, test.table, base_choice), _rows(ts, test_t, mbr_choice)
            ),
            "p_vs_without": paired_bootstrap(
                _rows(ts, test.table, no_mbr_choice), _rows(ts, test_t, mbr_choice)
            ),
        },
    }

    # Tuners, without MBR0: test2016 gain, and each half of val tuned on the other.
    cols = _columns(names, False)
    dev_t, test_c = dev.table.select(cols), test.table.select(cols)
    for name, tcfg in tuners.items():
        t0 = time.perf_counter()
        res = _tune(dev_t, ds, names, tcfg)
        seconds = time.perf_counter() - t0
        test_bleu = _bleu(ts, test_c, rerank(test_c, res.weights))
        held: list[float] = []
        for k in range(HALVINGS):
            halves = _halves(dev_t.n_sentences, seed=100 + k)
            for a, b in (halves, halves[::-1]):
                sub_a, rows_a = dev_t.subset(a)
                sub_b, rows_b = dev_t.subset(b)
                r = _tune(sub_a, ds[rows_a], names, tcfg)
                sb = ds[rows_b]
                gain = _bleu(sb, sub_b, rerank(sub_b, r.weights)) - _bleu(
                    sb, sub_b, np.zeros(sub_b.n_sentences, dtype=np.int64)
                )
                held.append(gain)
        out["tuners"][name] = {
            "config": asdict(tcfg),
            "dev_bleu": res.dev_bleu,
            "test_bleu": test_bleu,
            "test_gain": test_bleu - base_bleu,
            "held_out_gains": held,
            "held_out_mean": float(np.mean(held)),
            "held_out_sd": float(np.std(held, ddof=1)),
            "seconds": seconds,
            "weights": res.weights,
        }
    return out


def section(result: dict[str, Any]) -> str:
    """The markdown section RESULTS.md carries between the markers."""
    m, base = result["mbr"], result["baseline_test"]
    lines = [
        BEGIN,
        "## Beyond the paper: the consensus feature MBR0 and robust tuning",
        "",
        f"Produced by `{result['command']}` at commit `{result['commit']}` on "
        f"{result['machine']}, {result['date']}. Models: "
        + ", ".join(f"`{n}`" for n in result["models"])
        + f" (scores of every hypothesis of both full 1000-best lists). BLEU: "
        f"`{result['signature']}`. Everything is tuned on val only; test2016 is read once per "
        "row.",
        "",
        "**MBR0** (`rescore run --mbr`): each hypothesis' expected BLEU+1 against the top 50 of "
        "its list, under the posterior softmax(scale x the Moses total). Its scale was chosen on "
        "val by the tuned dev BLEU:",
        "",
        "| scale | val BLEU, tuned | seconds per 100k hypotheses |",
        "| --- | --- | --- |",
    ]
    for r in m["grid"]:
        lines.append(f"| {r['scale']:g} | {r['dev_bleu']:.2f} | {r['seconds_per_100k']:.2f} |")
    w, wo = m["with"], m["without"]
    lines += [
        "",
        "| tuned weights (MERT, 10 restarts) | val BLEU (tuned on) | test2016 BLEU | gain over "
        "Moses |",
        "| --- | --- | --- | --- |",
        f"| without MBR0 | {wo['dev_bleu']:.2f} | {wo['test_bleu']:.2f} | "
        f"{wo['test_bleu'] - base:+.2f} |",
        f"| with MBR0 (scale {m['chosen_scale']:g}) | {w['dev_bleu']:.2f} | "
        f"{w['test_bleu']:.2f} | {w['test_bleu'] - base:+.2f} |",
        "",
        f"MBR0's own effect on test2016: {w['test_bleu'] - wo['test_bleu']:+.2f} BLEU "
        f"(paired bootstrap p = {w['p_vs_without']:.3f} against the same weights without it; "
        f"p = {w['p_vs_baseline']:.3f} against Moses).",
        "",
        "**Tuners** (without MBR0): MERT with random restarts against bagged MERT (`--tune-"
        "bootstrap N`: the mean of the L1-normalised weights MERT finds on N bootstrap "
        f"resamples of the dev lists). Held out: val split at random into halves {HALVINGS} "
        f"times; tuned on one half, the gain over Moses on the other ({2 * HALVINGS} values).",
        "",
        "| tuner | val BLEU (tuned on) | test2016 gain | held-out half gain, mean (sd) | "
        "tuning seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, t in result["tuners"].items():
        lines.append(
            f"| {name} | {t['dev_bleu']:.2f} | {t['test_gain']:+.2f} | "
            f"{t['held_out_mean']:+.2f} ({t['held_out_sd']:.2f}) | {t['seconds']:.0f} |"
        )
    lines += ["", result.get("reading", ""), END]
    return "\n".join(lines).rstrip() + "\n"


def splice(results: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section of `results` between `begin` and `end` with `text` (which carries
    the markers; appended when there is none)."""
    old = results.read_text(encoding="utf-8") if results.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    tmp = results.with_suffix(".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(results)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_record(
    module: str, argv: Sequence[str] | None, commit: str, threads: int
) -> dict[str, str]:
    """What produced a study section: its exact command, the commit, the machine and the date."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "command": f"python -m {module} " + " ".join(shlex.quote(a) for a in args),
        "commit": commit,
        "machine": f"{platform.node()} ({platform.machine()}, {threads} torch thread)",
        "date": time.strftime("%Y-%m-%d"),
    }


def scored_lists(
    d: Path, work: Path, models: Sequence[str], mbr: MbrConfig | None = None
) -> tuple[RunJob, list[str], ScoredList, ScoredList]:
    """The val and test2016 1000-best lists of data directory `d` scored with `models` (scores
    from WORK/cache, shared with `rescore run --cache-dir`), with their BLEU statistics; the job
    (test2016 as its list) and the model features."""
    job = RunJob(
        nbest=str(d / "test2016.moses.1000best.gz"),
        src=str(d / "test_2016_flickr.en.gz"),
        ref=str(d / "test_2016_flickr.fr.gz"),
        models=tuple(models),
        out=work,
        cache_dir=work / "cache",
        bleu=BleuConfig(tokenize="13a", tgt_lang="fr"),
        mbr=mbr,
    )
    bundles = assign_directions([load_model(m) for m in models], None)
    names = model_features([model_kind(b) for b in bundles])
    dev_in = read_list(str(d / "val.moses.1000best.gz"), str(d / "val.en.gz"),
                       str(d / "val.fr.gz"), job)  # fmt: skip
    dev = score_list(dev_in, bundles, names, job, QUIET)
    test = score_list(read_list(job.nbest, job.src, job.ref, job), bundles, names, job, QUIET)
    assert dev is not None and test is not None
    return job, names, dev, test


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("-m", "--model", action="append", default=None)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "RESULTS.md")
    ap.add_argument("--bootstrap", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    commit = _commit()  # the code that measures, not what HEAD is when it ends
    torch.set_num_threads(args.threads)
    models = args.model or [str(p) for p in shipped_models().models]
    job, names, dev, test = scored_lists(args.data_dir, args.work_dir, models, MbrConfig())
    tuners = {
        "mert": MertConfig(restarts=10),
        f"bagged ({args.bootstrap} resamples)": MertConfig(restarts=2, bootstrap=args.bootstrap),
    }
    result = measure(dev, test, names, tuners)
    result.update(
        run_record("pipelines.multi30k.beyond", argv, commit, args.threads),
        models=[Path(m).name for m in models],
        signature=signature(job.bleu),
    )
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "beyond.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    splice(args.results, section(result))
    print(section(result))


if __name__ == "__main__":
    main()
