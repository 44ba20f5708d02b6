"""The measurements of the Multi30k study: direct translation (Table 1 shape), rescoring the Moses
1000-best lists (Table 2 shape), depth, forward against reversed source, and Figures 2 and 3.
Each translation or rescoring run writes its outputs under the work directory, named by the hash
of its models' bytes, and is skipped when they already exist."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.ensemble import EnsembleConfig
from nbest_rescore.fileio import atomic_write, read_lines
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    corpus_bleu,
    corpus_bleu_from_stats,
    corpus_stats,
    paired_bootstrap,
)
from nbest_rescore.model import count_parameters
from nbest_rescore.oracle import bleu_by_length
from nbest_rescore.report import plot_bleu_by_length, to_json
from nbest_rescore.run_job import RunJob, run_rescore_job
from nbest_rescore.scoring import ScoringConfig
from nbest_rescore.search import SearchConfig
from nbest_rescore.text import tokenize
from nbest_rescore.translate import TranslateConfig, load_ensemble, translate_lines
from nbest_rescore.tune import MertConfig
from pipelines.multi30k.models import (
    ATT,
    DEPTHS,
    ENSEMBLE,
    PLAIN,
    StudyConfig,
    checkpoint,
    cost_cell,
    data_files,
    is_done,
    models_key,
)


def rescore_dir(cfg: StudyConfig, models: Sequence[str]) -> Path:
    """Where the `rescore run` of these models (in their current state) writes."""
    return cfg.work_dir / "rescore" / f"{'+'.join(models)}.{models_key(cfg, models)}"


def translate_system(cfg: StudyConfig, name: str, models: Sequence[str], beam: int) -> Path:
    """Beam-search translation of test2016 with one model or an ensemble (detokenized text)."""
    out = cfg.work_dir / "translate" / f"{name}.{models_key(cfg, models)}.beam{beam}.txt"
    if is_done(out):
        return out
    files = data_files(cfg.data_dir)
    tcfg = TranslateConfig(
        search=SearchConfig(beam=beam, batch_size=32), ensemble=EnsembleConfig(combine="prob")
    )
    ens = load_ensemble([checkpoint(cfg, m) for m in models], tcfg.ensemble, device=cfg.device)
    lines = read_lines(files["test_src"])
    t0 = time.time()
    results = list(translate_lines(ens, lines, tcfg, cfg.progress, total=len(lines)))
    with atomic_write(out) as fh:
        fh.writelines(r.text + "\n" for r in results)
    with atomic_write(out.with_suffix(".json")) as fh:
        fh.write(to_json({"seconds": time.time() - t0, "models": list(models), "beam": beam}))
    return out


def table1_systems(cfg: StudyConfig, ready: set[str]) -> list[tuple[str, tuple[str, ...], int]]:
    """(label, models, beam) of every direct-translation row whose models are in `ready`."""
    rows: list[tuple[str, tuple[str, ...], int]] = [
        ("single forward LSTM, no attention (plain-fwd), beam 12", ("plain-fwd",), 12),
        *((f"single reversed LSTM, no attention (plain-rev), beam {b}", ("plain-rev",), b)
          for b in cfg.beams),
        *((f"single reversed LSTM with attention ({ATT}), beam {b}", (ATT,), b)
          for b in cfg.beams),
        *((f"ensemble of 2 reversed attention LSTMs, beam {b}", ENSEMBLE[:2], b)
          for b in cfg.beams),
        *((f"ensemble of 5 reversed attention LSTMs, beam {b}", ENSEMBLE, b) for b in cfg.beams),
    ]  # fmt: skip
    return [r for r in rows if set(r[1]) <= ready]


def table1(cfg: StudyConfig, bleu: BleuConfig, ready: set[str]) -> pd.DataFrame:
    """Direct translation BLEU on test2016 (the paper's Table 1 shape) and the Moses 1-best."""
    files = data_files(cfg.data_dir)
    refs = read_lines(files["test_ref"])
    rows = [
        {
            "method": "Moses phrase-based baseline (1-best)",
            "bleu": corpus_bleu(read_lines(files["test_1best"]), refs, bleu).score,
            "empty outputs": 0,
            "seconds": None,
        }
    ]
    for label, models, beam in table1_systems(cfg, ready):
        path = translate_system(cfg, "+".join(models), models, beam)
        hyps = read_lines(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        rows.append(
            {
                "method": label,
                "bleu": corpus_bleu(hyps, refs, bleu).score,
                "empty outputs": sum(1 for h in hyps if not h.strip()),
                "seconds": meta["seconds"],
            }
        )
    return pd.DataFrame(rows)


def rescore_system(cfg: StudyConfig, models: Sequence[str], bleu: BleuConfig) -> dict[str, Any]:
    """`rescore run` on the test 1000-best list with weights tuned on the val 1000-best list."""
    out = rescore_dir(cfg, models)
    if not is_done(out / "summary.json"):
        files = data_files(cfg.data_dir)
        job = RunJob(
            nbest=str(files["test_nbest"]),
            src=str(files["test_src"]),
            ref=str(files["test_ref"]),
            models=tuple(str(checkpoint(cfg, m)) for m in models),
            out=out,
            tune_nbest=str(files["val_nbest"]),
            tune_src=str(files["val_src"]),
            tune_ref=str(files["val_ref"]),
            bleu=bleu,
            scoring=ScoringConfig(device=cfg.device),
            mert=MertConfig(restarts=10),
            max_hyps=cfg.max_hyps,
            cache_dir=cfg.work_dir / "score-cache",
        )
        run_rescore_job(job, cfg.progress)
    return json.loads((out / "summary.json").read_text())


ATT_ALONE = "single reversed LSTM with attention"


FEATURE_ROWS = {
    "R2L": "attention LSTM + right-to-left feature",
    "T2S": "attention LSTM + target-to-source feature",
    "R2L + T2S": "attention LSTM + R2L + T2S features",
}
"""Table 2 runs that add extra-direction features to the single attention LSTM (`ATT_ALONE`)."""


def table2_systems(ready: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(label, models) of every rescoring run whose models are in `ready`."""
    runs: list[tuple[str, tuple[str, ...]]] = [
        ("single forward LSTM, no attention", ("plain-fwd",)),
        ("single reversed LSTM, no attention", ("plain-rev",)),
        (ATT_ALONE, (ATT,)),
        ("ensemble of 2 reversed attention LSTMs", ENSEMBLE[:2]),
        ("ensemble of 5 reversed attention LSTMs", ENSEMBLE),
        (FEATURE_ROWS["R2L"], (ATT, "att-r2l")),
        (FEATURE_ROWS["T2S"], (ATT, "att-t2s")),
        (FEATURE_ROWS["R2L + T2S"], (ATT, "att-r2l", "att-t2s")),
        ("ensemble of 2 + R2L + T2S features", (*ENSEMBLE[:2], "att-r2l", "att-t2s")),
        ("ensemble of 5 + R2L + T2S features", (*ENSEMBLE, "att-r2l", "att-t2s")),
    ]
    return [r for r in runs if set(r[1]) <= ready]


SYSTEM_ROWS = (
    ("lstm", "LSTM log-prob alone"),
    ("even_average_raw", "literal even average (paper)"),
    ("even_average", "scale-aware even average"),
    ("tuned", "weights tuned on val (MERT)"),
)


def table2(
    cfg: StudyConfig, bleu: BleuConfig, ready: set[str]
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Rescoring the Moses test2016 1000-best list (the paper's Table 2 shape)."""
    summaries = {
        label: rescore_system(cfg, models, bleu) for label, models in table2_systems(ready)
    }
    if not summaries:
        return pd.DataFrame(columns=["method", "bleu", "p_value"]), {}
    sys0 = next(iter(summaries.values()))["systems"]
    rows = [{"method": "Moses baseline 1-best", "bleu": sys0["baseline"]["bleu"], "p_value": None}]
    for label, s in summaries.items():
        for key, what in SYSTEM_ROWS:
            if key in s["systems"]:
                rows.append(
                    {
                        "method": f"rescoring, {label}: {what}",
                        "bleu": s["systems"][key]["bleu"],
                        "p_value": s["significance"].get(key, {}).get("p_value"),
                    }
                )
    for key, what in (("oracle", "corpus-level"), ("oracle_sentence", "sentence-level")):
        rows.append({"method": f"oracle ({what})", "bleu": sys0[key]["bleu"], "p_value": None})
    return pd.DataFrame(rows), summaries


def depth_table(trained: dict[str, dict[str, Any]], params: dict[str, int]) -> pd.DataFrame:
    """Validation perplexity by depth (1 to 4 layers, same width and recipe), with each extra
    layer's relative change (the paper: nearly -10% a layer) and what the depth costs."""
    rows = []
    prev: float | None = None
    for depth, name in DEPTHS.items():
        rec = trained.get(name)
        ppl = rec["best_valid_ppl"] if rec else None
        epochs = rec["epochs_done"] if rec else None
        minutes = rec["cost"][0] if rec else None
        rows.append(
            {
                "layers": depth,
                "model": name,
                "parameters (M)": params[name] / 1e6 if name in params else None,
                "best valid ppl": ppl,
                "vs one layer fewer": (
                    f"{100 * (ppl / prev - 1):+.1f}%"
                    if ppl is not None and prev is not None
                    else None
                ),
                "epochs": epochs,
                "finished": rec["finished"] if rec else None,
                "training min": cost_cell(rec) if rec else None,
                "min / epoch": minutes / epochs if minutes and epochs else None,
            }
        )
        prev = ppl
    return pd.DataFrame(rows)


def seed_spread(trained: dict[str, dict[str, Any]]) -> tuple[float, float, int] | None:
    """Lowest and highest best validation perplexity over the seeds of the main model (same
    recipe, same depth): how far apart two runs differing only in their seed land."""
    ppl = [trained[n]["best_valid_ppl"] for n in ENSEMBLE if n in trained]
    return (min(ppl), max(ppl), len(ppl)) if len(ppl) >= 2 else None


def parameters(cfg: StudyConfig, name: str) -> int:
    return count_parameters(load_model(checkpoint(cfg, name)).model)


def source_lengths(cfg: StudyConfig) -> np.ndarray:
    """Length in tokens (the models' source tokenizer) of each test2016 source sentence."""
    src_tok = load_model(checkpoint(cfg, ATT)).src_tok
    return np.asarray(
        [len(tokenize(s, src_tok)) for s in read_lines(data_files(cfg.data_dir)["test_src"])]
    )


def _stats_rows(hyps: Sequence[str], refs: Sequence[str], bleu: BleuConfig) -> HypStats:
    """Per-sentence BLEU statistics of one output, as `HypStats` with one hypothesis a sentence."""
    st = corpus_stats(hyps, refs, bleu)
    return HypStats(
        stats=st, offsets=np.arange(len(st) + 1), missing=np.zeros(len(st), bool), config=bleu
    )


def by_length(stats: dict[str, HypStats], src_len: np.ndarray) -> pd.DataFrame:
    """Corpus BLEU of each system's test2016 output within source-length buckets."""
    cols: dict[str, Any] = {}
    for name, hs in stats.items():
        rows = bleu_by_length(hs, np.zeros(hs.n_sentences, dtype=np.int64), src_len)
        cols.setdefault("length", [r[0] for r in rows])
        cols.setdefault("sentences", [r[1] for r in rows])
        cols[name] = [r[2] for r in rows]
    return pd.DataFrame(cols)


def _test_stats(
    cfg: StudyConfig, bleu: BleuConfig, systems: dict[str, list[str]]
) -> dict[str, HypStats]:
    """Per-sentence statistics of each system's test2016 output against the references."""
    refs = read_lines(data_files(cfg.data_dir)["test_ref"])
    return {name: _stats_rows(hyps, refs, bleu) for name, hyps in systems.items()}


def figure3(
    cfg: StudyConfig, bleu: BleuConfig, best_rescore: Path, direct: Path, src_len: np.ndarray
) -> Path:
    """BLEU by source length: baseline, best rescoring, direct translation (the paper's Figure 3)."""
    files = data_files(cfg.data_dir)
    systems = {
        "Moses baseline": read_lines(files["test_1best"]),
        "best rescoring": read_lines(best_rescore / "best.detok.txt"),
        f"direct ({ATT}, beam 12)": read_lines(direct),
    }
    fig = plot_bleu_by_length(by_length(_test_stats(cfg, bleu, systems), src_len), list(systems))
    path = cfg.results.parent / "figure3_bleu_by_length.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


@dataclass(frozen=True)
class DirectionTest:
    """One reversed-source model against one forward-source model on the whole test set."""

    reversed: str
    forward: str
    bleu_difference: float
    """Reversed minus forward, corpus BLEU."""
    p_value: float


def direction_table(
    cfg: StudyConfig, bleu: BleuConfig, ready: set[str], src_len: np.ndarray
) -> tuple[pd.DataFrame, list[DirectionTest], dict[str, float]] | None:
    """Forward against reversed source (no attention, beam 12) by source length: where reversing
    the source helps, if anywhere (the paper credits it with most of its gain on long sentences).
    With several seeds a direction, the buckets compare the seeds' means, and every reversed model
    is tested against every forward one (paired bootstrap over the test sentences). Also returns
    each model's whole-test BLEU."""
    runs = {d: [n for n in names if n in ready] for d, names in PLAIN.items()}
    if not all(runs.values()) or ATT not in ready:
        return None
    models = [*runs["forward"], *runs["reversed"]]
    stats = _test_stats(
        cfg, bleu, {n: read_lines(translate_system(cfg, n, (n,), 12)) for n in models}
    )
    df = by_length(stats, src_len).rename(columns={n: f"{n} BLEU" for n in models})
    mean = {
        d: df[[f"{n} BLEU" for n in names]].astype(float).mean(axis=1) for d, names in runs.items()
    }
    seeds = "" if max(len(v) for v in runs.values()) == 1 else " (seed means)"
    diff = mean["reversed"] - mean["forward"]
    df[f"reversed - forward{seeds}"] = ["" if pd.isna(d) else f"{d:+.2f}" for d in diff]
    whole = {n: corpus_bleu_from_stats(hs.stats.sum(axis=0)) for n, hs in stats.items()}
    seeds_bleu = by_direction(whole)
    whole_diff = float(np.mean(seeds_bleu["reversed"]) - np.mean(seeds_bleu["forward"]))
    all_row = {
        "length": "all",
        "sentences": len(src_len),
        **{f"{n} BLEU": round(whole[n], 2) for n in models},
        f"reversed - forward{seeds}": f"{whole_diff:+.2f}",
    }
    df = pd.concat([df, pd.DataFrame([all_row])], ignore_index=True)
    tests = [
        DirectionTest(r, f, whole[r] - whole[f], paired_bootstrap(stats[f].stats, stats[r].stats))
        for r in runs["reversed"]
        for f in runs["forward"]
    ]
    return df, tests, whole


def by_direction(whole: dict[str, float]) -> dict[str, list[float]]:
    """The no-attention models' whole-test BLEU grouped by direction (the seeds present)."""
    return {d: [whole[n] for n in names if n in whole] for d, names in PLAIN.items()}


PCA_PHRASES = (
    "A man is riding a bike .",
    "A bike is ridden by a man .",
    "A woman is riding a bike .",
    "A dog is running in the grass .",
    "The grass is where a dog is running .",
    "A child plays in the water .",
    "In the water a child plays .",
    "Two men are playing soccer .",
    "Soccer is played by two men .",
)


def figure2(cfg: StudyConfig) -> Path:
    """2-D PCA of the encoder's final hidden state for related phrases (the paper's Figure 2)."""
    import matplotlib.pyplot as plt

    bundle = load_model(checkpoint(cfg, ATT))
    ids = [bundle.src_vocab.encode(tokenize(p, bundle.src_tok)) for p in PCA_PHRASES]
    with torch.no_grad():
        feats = []
        for x in ids:
            state = bundle.model.encode(torch.tensor([x]), torch.tensor([len(x)]))
            feats.append(state[0][-1, 0].numpy())
    m = np.stack(feats)
    m = m - m.mean(axis=0)
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    xy = m @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(xy[:, 0], xy[:, 1])
    for (x, y), p in zip(xy, PCA_PHRASES, strict=True):
        ax.annotate(p, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"PCA of the encoder's last-layer final state ({ATT})")
    path = cfg.results.parent / "figure2_pca.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
