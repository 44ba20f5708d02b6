"""The Multi30k En->Fr study: the paper's Tables 1 and 2, a depth table and its Figures 2 and 3,
at our scale, with the `multi30k` recipe (train to convergence; attention as an extra row).

train -> translate -> rescore (+ oracle) -> results. Every step writes its outputs under the work
directory and is skipped when they already exist, so the study resumes after a kill (training runs
resume from their last checkpoint). The models take CPU-hours in all, so `--models` trains a subset
and `--no-train` builds the tables from the models that are ready (a `checkpoint_best.pt`);
rows whose models are missing are listed as pending in RESULTS.md.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.ensemble import EnsembleConfig
from nbest_rescore.fileio import atomic_write, read_lines, sha256_file
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    corpus_bleu,
    corpus_bleu_from_stats,
    corpus_stats,
    paired_bootstrap,
    signature,
)
from nbest_rescore.oracle import bleu_by_length
from nbest_rescore.progress import ProgressSettings
from nbest_rescore.report import plot_bleu_by_length, to_json
from nbest_rescore.rescore import RunJob, run_rescore_job
from nbest_rescore.scoring import ScoringConfig
from nbest_rescore.search import SearchConfig
from nbest_rescore.text import tokenize
from nbest_rescore.train import TrainConfig, train
from nbest_rescore.translate import TranslateConfig, load_ensemble, translate_lines
from nbest_rescore.tune import MertConfig
from pipelines.multi30k.curves import active_seconds, plot_curves, validations

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent.parent / "data" / "models"
"""The package's default models: the study uses one of them when its own run directory is gone."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study: its name, seed and how it differs from the `multi30k` recipe."""

    name: str
    seed: int
    reverse: bool = True
    attention: str = "luong"
    reverse_target: bool = False
    layers: int | None = None
    swap: bool = False
    """Trained fr->en: a target-to-source rescoring feature."""

    def overrides(self) -> dict[str, Any]:
        over: dict[str, Any] = {
            "seed": self.seed,
            "reverse_source": self.reverse,
            "attention": self.attention,
            "reverse_target": self.reverse_target,
        }
        if self.layers is not None:
            over["layers"] = self.layers
        if self.swap:
            over["src_lang"], over["tgt_lang"] = "fr", "en"
        return over

    def describe(self) -> str:
        parts = ["reversed source" if self.reverse else "forward source"]
        parts.append("no attention" if self.attention == "none" else f"{self.attention} attention")
        if self.reverse_target:
            parts.append("right-to-left target")
        if self.swap:
            parts.append("fr->en (target-to-source)")
        if self.layers is not None:
            parts.append(f"{self.layers} layer{'s' if self.layers > 1 else ''}")
        return ", ".join(parts)


ATT = "att-rev-1"
"""The main model: the `multi30k` recipe (2 x 512 LSTM, Luong attention, reversed source)."""
ENSEMBLE = tuple(f"att-rev-{i}" for i in range(1, 6))
DEPTHS = {1: "depth-1", 2: ATT, 3: "depth-3", 4: "depth-4"}
PLAIN = {"reversed": ("plain-rev", "plain-rev-2"), "forward": ("plain-fwd", "plain-fwd-2")}
"""The no-attention models by source direction, one per seed (seeds 1 and 2): the paper's
reversed-source claim is tested across seeds, not only across test sentences."""

MODELS: tuple[ModelSpec, ...] = (
    *(ModelSpec(name, seed=i) for i, name in enumerate(ENSEMBLE, start=1)),
    ModelSpec("att-r2l", seed=2, reverse=False, reverse_target=True),
    ModelSpec("att-t2s", seed=1, swap=True),
    ModelSpec("plain-rev", seed=1, attention="none"),
    ModelSpec("plain-fwd", seed=1, reverse=False, attention="none"),
    ModelSpec("plain-rev-2", seed=2, attention="none"),
    ModelSpec("plain-fwd-2", seed=2, reverse=False, attention="none"),
    *(ModelSpec(DEPTHS[d], seed=1, layers=d) for d in (1, 3, 4)),
)
"""Every model of the study, in the order `train_models` trains them."""


@dataclass(frozen=True)
class StudyConfig:
    """Where the data is, where work goes, and how much of each step to run."""

    data_dir: Path
    work_dir: Path
    results: Path = HERE / "RESULTS.md"
    models: tuple[ModelSpec, ...] = MODELS
    train: tuple[str, ...] | None = None
    """Names of the models to train (None: all); the others are used only if already trained."""
    threads: int = 1
    max_hyps: int | None = None
    beams: tuple[int, ...] = (1, 2, 12)
    device: str = "cpu"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    progress: ProgressSettings = ProgressSettings()
    exclude: tuple[str, ...] = ()
    """Models left out of the tables this time (listed as pending), e.g. one still being scored."""
    shipped: Path = SHIPPED
    """Shipped models (NAME.pt, described in training.json), used where the work directory has no
    run of that name and the study is not asked to train it."""

    def spec(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


def _done(path: Path) -> bool:
    return path.is_file()


def data_files(d: Path) -> dict[str, Path]:
    return {
        "train_src": d / "train.en.gz",
        "train_tgt": d / "train.fr.gz",
        "val_src": d / "val.en.gz",
        "val_ref": d / "val.fr.gz",
        "val_nbest": d / "val.moses.1000best.gz",
        "test_src": d / "test_2016_flickr.en.gz",
        "test_ref": d / "test_2016_flickr.fr.gz",
        "test_nbest": d / "test2016.moses.1000best.gz",
        "test_1best": d / "test2016.moses.1best.detok.gz",
    }


def train_config(cfg: StudyConfig, spec: ModelSpec) -> TrainConfig:
    """The `multi30k` recipe for one model (`rescore train --preset multi30k` plus its overrides)."""
    files = data_files(cfg.data_dir)
    src, tgt = ("train_src", "train_tgt") if not spec.swap else ("train_tgt", "train_src")
    vsrc, vtgt = ("val_src", "val_ref") if not spec.swap else ("val_ref", "val_src")
    return TrainConfig.preset_config(
        "multi30k",
        train_src=str(files[src]),
        train_tgt=str(files[tgt]),
        valid_src=str(files[vsrc]),
        valid_tgt=str(files[vtgt]),
        out_dir=str(cfg.work_dir / "models" / spec.name),
        num_threads=cfg.threads,
        device=cfg.device,
        resume=True,
        cache_dir=str(cfg.work_dir / "cache"),
        **{**spec.overrides(), **cfg.train_overrides},
    )


def train_models(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """Train the selected models (resuming interrupted runs); returns the record of every model
    that is ready: finished (`done.json`) or with a best checkpoint so far."""
    out: dict[str, dict[str, Any]] = {}
    for spec in cfg.models:
        run_dir = cfg.work_dir / "models" / spec.name
        marker = run_dir / "done.json"
        tc = train_config(cfg, spec)
        if not _done(marker) and (cfg.train is None or spec.name in cfg.train):
            t0 = time.time()
            res = train(tc, cfg.progress)
            with atomic_write(marker) as fh:
                fh.write(
                    to_json({**asdict(res), "wall_s": time.time() - t0, "config": tc.to_dict()})
                )
        if _done(marker):
            out[spec.name] = {**json.loads(marker.read_text()), "finished": True}
        elif (run_dir / "checkpoint_best.pt").is_file():
            out[spec.name] = {**_partial_record(run_dir), "finished": False}
        elif (record := _shipped_record(cfg, spec.name)) is not None:
            out[spec.name] = record
        if spec.name in out:
            out[spec.name]["cost"] = training_cost(out[spec.name], run_dir / "log.jsonl")
    return out


COST_NOTES = {
    "cpu": "",
    "log": "*",
    "wall": "†",
}
COST_FOOTNOTE = (
    "Training minutes: CPU time of the training process where its log records it; * un-paused "
    "wall-clock estimated from the run's log (stretches slower than three times the run's median "
    "step, when the process was stopped for a benchmark, count at the median: "
    "`curves.active_seconds`); † wall-clock from the shipped model's record."
)


def training_cost(record: dict[str, Any], log: Path) -> tuple[float, str]:
    """Minutes a model took to train and how they were measured (a key of `COST_NOTES`)."""
    if record.get("cpu_s") is not None:
        return record["cpu_s"] / 60, "cpu"
    if log.is_file():
        return active_seconds(log) / 60, "log"
    return record["elapsed_s"] / 60, "wall"


def _cost_cell(record: dict[str, Any]) -> str:
    minutes, how = record["cost"]
    return f"{minutes:.0f}{COST_NOTES[how]}"


def _shipped_record(cfg: StudyConfig, name: str) -> dict[str, Any] | None:
    """The training record of a shipped model (data/models/training.json), or None."""
    path, runs = cfg.shipped / f"{name}.pt", cfg.shipped / "training.json"
    if not path.is_file() or not runs.is_file():
        return None
    record = json.loads(runs.read_text()).get(name)
    return None if record is None else {**record, "shipped": True}


def _partial_record(run_dir: Path) -> dict[str, Any]:
    """What an unfinished run has reached so far, from its log.jsonl."""
    valid = validations(run_dir / "log.jsonl")
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    progress = [
        r for ln in lines if ln.strip() and (r := json.loads(ln)).get("event") in ("train", "valid")
    ]
    last = progress[-1] if progress else {}
    return {
        "best_valid_ppl": float(valid["valid_ppl"].min()),
        "epochs_done": float(last.get("epoch", valid["epoch"].max())),
        "elapsed_s": float(valid["elapsed_s"].max()),
        "cpu_s": last.get("cpu_s"),
        "config": json.loads(lines[0])["config"],
    }


def _curve(cfg: StudyConfig, name: str, record: dict[str, Any]) -> pd.DataFrame | None:
    """A model's validations: from its run's log, or those a shipped model's record keeps."""
    if not record.get("shipped"):
        return validations(cfg.work_dir / "models" / name / "log.jsonl")
    kept = record.get("validations")
    return None if not kept else pd.DataFrame(kept)


def checkpoint(cfg: StudyConfig, name: str) -> Path:
    """The model's best checkpoint: its run in the work directory, else the shipped copy."""
    own = cfg.work_dir / "models" / name / "checkpoint_best.pt"
    shipped = cfg.shipped / f"{name}.pt"
    return shipped if not own.is_file() and shipped.is_file() else own


def _models_key(cfg: StudyConfig, models: Sequence[str]) -> str:
    """Short hash of the checkpoints' bytes: a step's outputs name the exact models they used, so
    a model trained further (or replaced) is never represented by outputs of its earlier state."""
    digest = hashlib.sha256(" ".join(sha256_file(checkpoint(cfg, m)) for m in models).encode())
    return digest.hexdigest()[:10]


def rescore_dir(cfg: StudyConfig, models: Sequence[str]) -> Path:
    """Where the `rescore run` of these models (in their current state) writes."""
    return cfg.work_dir / "rescore" / f"{'+'.join(models)}.{_models_key(cfg, models)}"


def translate_system(cfg: StudyConfig, name: str, models: Sequence[str], beam: int) -> Path:
    """Beam-search translation of test2016 with one model or an ensemble (detokenized text)."""
    out = cfg.work_dir / "translate" / f"{name}.{_models_key(cfg, models)}.beam{beam}.txt"
    if _done(out):
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
    if not _done(out / "summary.json"):
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
                "training min": _cost_cell(rec) if rec else None,
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
        best = done.loc[done["best valid ppl"].idxmin()]
        line += (
            f" Lowest perplexity of the finished runs: {int(best['layers'])} layers "
            f"({best['best valid ppl']:.2f})."
        )
    running = depth[depth["finished"].eq(False)]["layers"].tolist()
    if running:
        line += f" Still training (best so far shown): {', '.join(map(str, running))} layers."
    return line


def _parameters(cfg: StudyConfig, name: str) -> int:
    return sum(p.numel() for p in load_model(checkpoint(cfg, name)).model.parameters())


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
) -> tuple[pd.DataFrame, list[DirectionTest]] | None:
    """Forward against reversed source (no attention, beam 12) by source length: where reversing
    the source helps, if anywhere (the paper credits it with most of its gain on long sentences).
    With several seeds a direction, the buckets compare the seeds' means, and every reversed model
    is tested against every forward one (paired bootstrap over the test sentences)."""
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
    tests = [
        DirectionTest(r, f, whole[r] - whole[f], paired_bootstrap(stats[f].stats, stats[r].stats))
        for r in runs["reversed"]
        for f in runs["forward"]
    ]
    return df, tests


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


def _direction_md(df: pd.DataFrame, tests: list[DirectionTest]) -> str:
    """The forward/reversed table and what its whole-corpus differences mean."""
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
    return (
        f"{_md(df)}\n\nWhole test set (1000 resamples):\n\n" + "\n".join(lines) + f"\n\n{verdict}"
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
            f"{_cost_cell(rec)} | {sha} |"
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
        {n: _parameters(cfg, n) for n in DEPTHS.values() if n in trained},
    )
    src_len = source_lengths(cfg) if ATT in ready else np.zeros(0, dtype=np.int64)
    direction = direction_table(cfg, bleu, ready, src_len)
    curves = plot_curves(
        {n: c for n, rec in trained.items() if (c := _curve(cfg, n, rec)) is not None},
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

BLEU of the no-attention models (seeds 1 and 2 of each direction, where trained) at beam 12 on
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
        fh.write(text)
    return cfg.results


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    argv = list(sys.argv if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m pipelines.multi30k", description=__doc__)
    p.add_argument(
        "--data-dir", type=Path, default=HERE.parent.parent.parent / "shared" / "data" / "multi30k"
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
