"""The Multi30k En->Fr study (`python -m pipelines.multi30k`): the paper's Tables 1 and 2, a depth
table and its Figures 2 and 3, at our scale, with the `multi30k` recipe (train to convergence;
attention as an extra row), written to RESULTS.md with what each table says.

train -> translate -> rescore (+ oracle) -> results. Every step writes its outputs under the work
directory and is skipped when they already exist, so the study resumes after a kill (training runs
resume from their last checkpoint). The models take CPU-hours in all, so `--models` trains a subset
and `--no-train` builds the tables from the models that are ready (a `checkpoint_best.pt`);
rows whose models are missing are listed as pending in RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.fileio import atomic_write
from nbest_rescore.metrics import (
    BleuConfig,
    signature,
)
from nbest_rescore.progress import ProgressSettings
from nbest_rescore.train import TrainConfig
from pipelines.multi30k.curves import plot_curves
from pipelines.multi30k.models import (
    ATT,
    COST_FOOTNOTE,
    DEPTHS,
    HERE,
    MODELS,
    StudyConfig,
    checkpoint,
    cost_cell,
    curve,
    train_models,
)
from pipelines.multi30k.study import (
    ATT_ALONE,
    FEATURE_ROWS,
    DirectionTest,
    by_direction,
    depth_table,
    direction_table,
    figure2,
    figure3,
    parameters,
    rescore_dir,
    seed_spread,
    source_lengths,
    table1,
    table1_systems,
    table2,
    table2_systems,
    translate_system,
)


def _depth_reading(depth: pd.DataFrame, spread: tuple[float, float, int] | None) -> str:
    """One line on whether depth helps beyond seed noise."""
    if spread is None:
        return ""
    lo, hi, n = spread
    line = (
        f"Seed noise for scale: {n} seeds of the 2-layer model span {lo:.2f}-{hi:.2f} "
        f"({100 * (hi / lo - 1):.1f}%), so a change between depths smaller than that is not "
        "evidence for or against depth."
    )
    done = depth[depth["finished"].eq(True)]
    if len(done) >= 2:
        best = done.iloc[int(done["best valid ppl"].to_numpy().argmin())]
        line += (
            f" Lowest perplexity of the finished runs: {int(best['layers'])} layers "
            f"({best['best valid ppl']:.2f})."
        )
    running = depth[depth["finished"].eq(False)]["layers"].tolist()
    if running:
        line += f" Still training (best so far shown): {', '.join(map(str, running))} layers."
    return line


def _direction_md(
    df: pd.DataFrame, tests: list[DirectionTest], whole: dict[str, float] | None = None
) -> str:
    """The forward/reversed table and what its whole-corpus differences mean (`whole`: each
    model's whole-test BLEU, for the seed-spread reading)."""
    lines = [
        f"- {t.reversed} against {t.forward}: reversed - forward = {t.bleu_difference:+.2f} BLEU, "
        f"paired bootstrap p = {t.p_value:.4f}"
        for t in tests
    ]
    rev_wins = sum(t.bleu_difference > 0 and t.p_value < 0.05 for t in tests)
    fwd_wins = sum(t.bleu_difference < 0 and t.p_value < 0.05 for t in tests)
    verdict = (
        f"Of {len(tests)} reversed/forward pair(s), reversed is better at p < 0.05 in {rev_wins}, "
        f"forward in {fwd_wins}."
    )
    if len(tests) == 1:
        verdict += (
            " One training seed per direction, so seed-to-seed variation is not part of this test."
        )
    verdict += _seed_spread_md(whole or {})
    return (
        f"{_md(df)}\n\nWhole test set (1000 resamples):\n\n" + "\n".join(lines) + f"\n\n{verdict}"
    )


def _seed_spread_md(whole: dict[str, float]) -> str:
    """How the difference of the directions' seed means compares with each direction's spread
    over seeds; empty unless both directions have two seeds or more."""
    bleu = by_direction(whole)
    if min(len(v) for v in bleu.values()) < 2:
        return ""
    diff = float(np.mean(bleu["reversed"]) - np.mean(bleu["forward"]))
    spread = {d: max(v) - min(v) for d, v in bleu.items()}
    within = abs(diff) < min(spread.values())
    return (
        f" Whole test set, seeds of one direction differ by {spread['reversed']:.2f} BLEU "
        f"(reversed) and {spread['forward']:.2f} (forward); the seed means differ by "
        f"{diff:+.2f} (reversed - forward), "
        + (
            "less than either direction's seed spread: no direction is shown to be better."
            if within
            else "more than the smaller seed spread."
        )
    )


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float) and np.isnan(v):
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.4f}" if v < 1 else f"{v:.2f}")
            else:
                cells.append("" if v is None else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _models_md(cfg: StudyConfig, trained: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| model | what | best valid ppl | epochs | finished | training min | checkpoint sha256 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rec in trained.items():
        b = load_model(checkpoint(cfg, name))
        finished = "yes" if rec["finished"] else "no (best so far)"
        sha = f"`{b.sha256}`"
        if rec.get("shipped"):
            finished += "; shipped fp16 copy used"
            sha += f" (trained: `{rec['training_checkpoint_sha256']}`)"
        rows.append(
            f"| {name} | {cfg.spec(name).describe()}, seed {cfg.spec(name).seed} | "
            f"{rec['best_valid_ppl']:.2f} | {rec['epochs_done']:.1f} | {finished} | "
            f"{cost_cell(rec)} | {sha} |"
        )
    if any(rec.get("shipped") for rec in trained.values()):
        rows.append(
            '\nModels marked "shipped fp16 copy used" have no run directory in the work '
            "directory; the study scores and translates with their files in `data/models/` and "
            "takes their training record from `data/models/training.json`."
        )
    return "\n".join(rows)


def _pending(cfg: StudyConfig, ready: set[str]) -> list[str]:
    everything = {m.name for m in cfg.models}
    t1 = {label for label, *_ in table1_systems(cfg, everything)} - {
        label for label, *_ in table1_systems(cfg, ready)
    }
    t2 = {label for label, _ in table2_systems(everything)} - {
        label for label, _ in table2_systems(ready)
    }
    missing = sorted(everything - ready)
    left_out = ", ".join(f"{n} (left out: --exclude)" if n in cfg.exclude else n for n in missing)
    out = [f"- models not in these tables (not trained yet, or left out): {left_out or 'none'}"]
    out += [f"- Table 1 row pending: {label}" for label in sorted(t1)]
    out += [f"- Table 2 run pending: {label}" for label in sorted(t2)]
    return out


def _rescoring_details(summaries: dict[str, dict[str, Any]]) -> str:
    lines = []
    for label, s in summaries.items():
        tuned = s["weights"].get("tuned", {})
        timing = s["scoring"]["timing"]
        lines.append(
            f"- {label}: tuned weights {json.dumps({k: round(v, 5) for k, v in tuned.items()})}; "
            f"dev BLEU {s['tuning'].get('dev_bleu', float('nan')):.2f} (scale-aware even average "
            f"{s['tuning'].get('dev_bleu_even_average', float('nan')):.2f}); scoring "
            f"{timing.get('hyps_scored', 0):.0f} new hypotheses at "
            f"{timing.get('hyps_per_s', 0):.0f} hyp/s (0: every score came from the cache)"
        )
    return "\n".join(lines)


def _feature_gains(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """What each extra direction adds to the single attention LSTM, tuned, on dev and on test."""
    alone = summaries.get(ATT_ALONE)
    if alone is None:
        return []

    def pair(s: dict[str, Any]) -> tuple[float, float]:
        return s["tuning"].get("dev_bleu", float("nan")), s["systems"]["tuned"]["bleu"]

    d0, t0 = pair(alone)
    gains = [
        f"{name} {d - d0:+.2f} / {t - t0:+.2f}"
        for name, label in FEATURE_ROWS.items()
        if label in summaries
        for d, t in [pair(summaries[label])]
    ]
    if not gains:
        return []
    return [
        "- Extra directions over the attention LSTM alone, weights tuned on val (dev / test BLEU): "
        + ", ".join(gains)
        + "."
    ]


def _reading(t1: pd.DataFrame, summaries: dict[str, dict[str, Any]]) -> str:
    """The headline comparisons, computed from the tables."""
    lines = []
    moses = float(t1["bleu"].iloc[0])
    if len(t1) > 1:
        best = t1.iloc[1:].sort_values("bleu").iloc[-1]
        lines.append(
            f"- Best direct translation: {best['method']}, {best['bleu']:.2f} BLEU against "
            f"{moses:.2f} for Moses' 1-best ({best['bleu'] - moses:+.2f}); "
            f"{int(t1['empty outputs'].sum())} empty outputs in all rows."
        )
    if summaries:
        label = max(summaries, key=lambda k: summaries[k]["systems"]["tuned"]["bleu"])
        s = summaries[label]["systems"]
        lines.append(
            f"- Best rescoring: {label}, tuned on val: {s['tuned']['bleu']:.2f} BLEU, "
            f"{s['tuned']['bleu'] - s['baseline']['bleu']:+.2f} over Moses' 1-best (paired "
            f"bootstrap p = {summaries[label]['significance']['tuned']['p_value']:.3f}); the "
            f"paper gained +2.3 (one LSTM) and +3.2 (five) on WMT'14."
        )
        by_dev = max(summaries, key=lambda k: summaries[k]["tuning"].get("dev_bleu", 0.0))
        lines.append(
            f"- Chosen on the val list instead (as a user must choose): {by_dev}, dev BLEU "
            f"{summaries[by_dev]['tuning']['dev_bleu']:.2f}, test "
            f"{summaries[by_dev]['systems']['tuned']['bleu']:.2f}."
        )
        lines.extend(_feature_gains(summaries))
        raw, scaled, base = (s[k]["bleu"] for k in ("even_average_raw", "even_average", "baseline"))
        verdict = "gains" if raw > base else "loses"
        lines.append(
            f"- The paper's literal even average {verdict} here ({raw:.2f} against {base:.2f}), "
            f"the scale-aware one gives {scaled:.2f}; weights tuned on the dev list do best."
        )
    return "\n".join(lines)


def run_study(cfg: StudyConfig, argv: Sequence[str]) -> Path:
    """Every step, then RESULTS.md."""
    t_start = time.time()
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    bleu = BleuConfig(tokenize="13a", tgt_lang="fr")
    trained = {n: r for n, r in train_models(cfg).items() if n not in cfg.exclude}
    ready = set(trained)
    t1 = table1(cfg, bleu, ready)
    t2, summaries = table2(cfg, bleu, ready)
    depth = depth_table(
        trained,
        {n: parameters(cfg, n) for n in DEPTHS.values() if n in trained},
    )
    src_len = source_lengths(cfg) if ATT in ready else np.zeros(0, dtype=np.int64)
    # a seed still training would be compared at its best-so-far: only finished runs count here
    finished = {n for n, rec in trained.items() if rec["finished"]}
    direction = direction_table(cfg, bleu, finished, src_len)
    curves = plot_curves(
        {n: c for n, rec in trained.items() if (c := curve(cfg, n, rec)) is not None},
        cfg.results.parent / "learning_curves.png",
    )
    figures = ""
    if ATT in ready and summaries:
        best = max(summaries, key=lambda k: summaries[k]["systems"]["tuned"]["bleu"])
        best_dir = rescore_dir(cfg, dict(table2_systems(ready))[best])
        direct = translate_system(cfg, ATT, (ATT,), 12)
        f3 = figure3(cfg, bleu, best_dir, direct, src_len)
        f2 = figure2(cfg)
        figures = f"![BLEU by sentence length]({f3.name})\n\n![PCA of encoder states]({f2.name})"
    oracle_k = next(iter(summaries.values()))["oracle_at_k"] if summaries else {}
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    recipe = {k: v for k, v in TrainConfig.preset_config(
        "multi30k", train_src="", train_tgt="", valid_src="", valid_tgt="", out_dir=""
    ).to_dict().items() if k in ("optimizer", "lr", "batch_size", "dropout", "lr_schedule",
        "lr_decay_factor", "plateau_patience", "min_lr", "patience", "epochs", "attention",
        "vocab_min_count", "clip_norm")}  # fmt: skip
    text = f"""# Multi30k En->Fr: the paper's tables at our scale

Produced by `python -m pipelines.multi30k {" ".join(shlex.quote(a) for a in argv[1:])}` at commit
`{commit}`, on {platform.node()} ({platform.machine()}, {torch.get_num_threads()} torch threads,
device {cfg.device}), {time.strftime("%Y-%m-%d", time.gmtime())}; this invocation took
{(time.time() - t_start) / 60:.1f} min (steps whose outputs existed were skipped). Data:
Multi30k task 1 and the real Moses 1000-best lists (`{cfg.data_dir.name}`; see its README). BLEU:
sacrebleu, detokenized hypotheses against raw references, signature `{signature(bleu)}`. Every
number below was measured by this pipeline; none is copied.

## Models

The `multi30k` recipe (`rescore train --preset multi30k`): 2 x 512 LSTM, 256-d embeddings,
vocabularies of the words seen twice in train (at most 10k), Luong (bilinear) attention on the
decoder's top layer, Adam, dropout 0.3, the learning rate halved after every validation (once an
epoch) without a new best, stopped after {recipe["patience"]} validations without one or once the
learning rate falls below {recipe["min_lr"]}: `{json.dumps(recipe)}`. Rows below override one thing
each (no attention, forward source, right-to-left target, fr->en, depth). One torch thread per
model, two models at a time on a 2-core machine. {COST_FOOTNOTE}

{_models_md(cfg, trained)}

![learning curves]({curves.name})

## Table 1 shape: direct translation of test2016

Beam search with summed log-probs (the paper's), EOS forbidden before the first token (so no
empty output), ensembles average probabilities.

{_md(t1)}

## Table 2 shape: rescoring the Moses test2016 1000-best list

Each run scores every hypothesis{"" if cfg.max_hyps is None else f" of the top {cfg.max_hyps}"} of
every list; "tuned" weights (Moses total, each model's feature, length) were found by MERT on the
val 1000-best list and applied unchanged to test2016. p-values: paired bootstrap (1000 resamples)
against the Moses 1-best. The LSTM-alone and even-average rows use the left-to-right models only;
right-to-left (R2L) and target-to-source (T2S) features enter the tuned weights.

{_md(t2)}

Oracle@k (corpus-level oracle restricted to the top k): {", ".join(f"@{k} {v:.2f}" for k, v in oracle_k.items())}.

{_rescoring_details(summaries)}

## Reading

{_reading(t1, summaries)}

## Forward or reversed source, by sentence length

BLEU of the no-attention models (seeds 1 and 2 of each direction, once trained) at beam 12 on
test2016, by source length in tokens; the paper's claim is that reversing the source helps, most
of all on long sentences.

{"(needs plain-fwd, plain-rev and " + ATT + ")" if direction is None else _direction_md(*direction)}

## Depth

Validation perplexity of the recipe at 1 to 4 layers (same width 512; the paper reports each
extra layer cutting perplexity by nearly 10%). Training minutes as in the models table.

{_md(depth)}

{_depth_reading(depth, seed_spread(trained))}

## Pending

{chr(10).join(_pending(cfg, ready))}

## Figures

{figures}

## How to reproduce

`python -m pipelines.multi30k --threads 1 --models att-rev-1` trains that model (or resumes it)
and rebuilds every table from the models that are ready; `--no-train` only rebuilds the tables.
Each model is exactly `rescore train --preset multi30k` with the overrides in the table above
(`train_config`), on `train.{{en,fr}}.gz` with `val.{{en,fr}}.gz` for validation.
"""
    with atomic_write(cfg.results) as fh:
        fh.write(text + kept_sections(cfg.results))
    return cfg.results


def kept_sections(results: Path) -> str:
    """The sections other scripts write into RESULTS.md between their markers
    (`pipelines.multi30k.translators`, `.beyond` and `.ceiling`), carried over when the study
    rewrites it."""
    from pipelines.multi30k import beyond, ceiling, translators

    old = results.read_text(encoding="utf-8") if results.exists() else ""
    kept = ""
    for begin, end in (
        (translators.BEGIN, translators.END),
        (beyond.BEGIN, beyond.END),
        (ceiling.BEGIN, ceiling.END),
    ):
        if begin in old and end in old:
            kept += "\n" + begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
    return kept


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    argv = list(sys.argv if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m pipelines.multi30k", description=__doc__)
    env = os.environ.get("MULTI30K_DIR")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env) if env else None,
        required=not env,
        help="the Multi30k directory: corpora and Moses 1000-best lists (default: $MULTI30K_DIR)",
    )
    p.add_argument("--work-dir", type=Path, default=HERE / "work")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--models", default=None, help="comma-separated models to train (default all)")
    p.add_argument("--no-train", action="store_true", help="use only models already trained")
    p.add_argument(
        "--train-only", action="store_true", help="train the --models and stop (no tables)"
    )
    p.add_argument(
        "--exclude", default="", help="comma-separated models to leave out of the tables"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-hyps", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv[1:])
    train_only: tuple[str, ...] | None = None
    if a.no_train:
        train_only = ()
    elif a.models:
        train_only = tuple(a.models.split(","))
    cfg = StudyConfig(
        data_dir=a.data_dir,
        work_dir=a.work_dir,
        results=a.results,
        train=train_only,
        threads=a.threads,
        exclude=tuple(n for n in a.exclude.split(",") if n),
        max_hyps=a.max_hyps,
        device=a.device,
        progress=ProgressSettings(enabled=False) if a.quiet else ProgressSettings(),
    )
    torch.set_num_threads(a.threads)
    if a.train_only:
        wanted = train_only if train_only is not None else tuple(m.name for m in MODELS)
        trained = train_models(replace(cfg, models=tuple(cfg.spec(n) for n in wanted)))
        print(json.dumps({n: r.get("best_valid_ppl") for n, r in trained.items()}))
        return
    print(run_study(replace(cfg), argv))
