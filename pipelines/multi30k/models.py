"""The models of the Multi30k study: what each one is (`ModelSpec`: the `multi30k` recipe plus one
override), where the study keeps its work (`StudyConfig`), training them (resumable), and the
record of each ready model: its own run, or the shipped copy where the run directory is gone."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from nbest_rescore.fileio import atomic_write, sha256_file
from nbest_rescore.progress import ProgressSettings
from nbest_rescore.report import to_json
from nbest_rescore.train import TrainConfig, train
from pipelines.multi30k.curves import active_seconds, log_records, validations

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


def is_done(path: Path) -> bool:
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
    """The `multi30k` recipe for one model (`rescore train --preset multi30k` plus its overrides),
    trained from a prepared directory that every model of the same languages and data settings
    shares (WORK/data/SRC-TGT.HASH: prepared by the first model that needs it, then reused)."""
    files = data_files(cfg.data_dir)
    src, tgt = ("train_src", "train_tgt") if not spec.swap else ("train_tgt", "train_src")
    vsrc, vtgt = ("val_src", "val_ref") if not spec.swap else ("val_ref", "val_src")
    tc = TrainConfig.preset_config(
        "multi30k",
        train_src=str(files[src]),
        train_tgt=str(files[tgt]),
        valid_src=str(files[vsrc]),
        valid_tgt=str(files[vtgt]),
        out_dir=str(cfg.work_dir / "models" / spec.name),
        num_threads=cfg.threads,
        device=cfg.device,
        resume=True,
        **{**spec.overrides(), **cfg.train_overrides},
    )
    settings = tc.data_settings()
    digest = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True).encode()).hexdigest()
    name = f"{settings.src_lang}-{settings.tgt_lang}.{digest[:10]}"
    return replace(tc, data_dir=str(cfg.work_dir / "data" / name))


def train_models(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """Train the selected models (resuming interrupted runs); returns the record of every model
    that is ready: finished (`done.json`) or with a best checkpoint so far."""
    out: dict[str, dict[str, Any]] = {}
    for spec in cfg.models:
        run_dir = cfg.work_dir / "models" / spec.name
        marker = run_dir / "done.json"
        tc = train_config(cfg, spec)
        if not is_done(marker) and (cfg.train is None or spec.name in cfg.train):
            t0 = time.time()
            res = train(tc, cfg.progress)
            with atomic_write(marker) as fh:
                fh.write(
                    to_json({**asdict(res), "wall_s": time.time() - t0, "config": tc.to_dict()})
                )
        if is_done(marker):
            out[spec.name] = {**json.loads(marker.read_text()), "finished": True}
        elif (run_dir / "checkpoint_best.pt").is_file():
            out[spec.name] = {**_partial_record(run_dir), "finished": False}
        elif (record := _shipped_record(cfg, spec.name)) is not None:
            out[spec.name] = record
        if spec.name in out:
            out[spec.name]["cost"] = training_cost(out[spec.name], run_dir / "log.jsonl")
    return out


def training_cost(record: dict[str, Any], log: Path) -> tuple[float, str]:
    """Minutes a model took to train and how they were measured (a key of `COST_NOTES`)."""
    if record.get("cpu_s") is not None:
        return record["cpu_s"] / 60, "cpu"
    if log.is_file() and not record.get("shipped"):  # a shipped model's run directory is gone
        return active_seconds(log) / 60, "log"
    return record["elapsed_s"] / 60, "wall"


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


def cost_cell(record: dict[str, Any]) -> str:
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
    records = log_records(run_dir / "log.jsonl")
    progress = [r for r in records if r.get("event") in ("train", "valid")]
    last = progress[-1] if progress else {}
    return {
        "best_valid_ppl": float(valid["valid_ppl"].min()),
        "epochs_done": float(last.get("epoch", valid["epoch"].max())),
        "elapsed_s": float(valid["elapsed_s"].max()),
        "cpu_s": last.get("cpu_s"),
        "config": records[0]["config"],
    }


def curve(cfg: StudyConfig, name: str, record: dict[str, Any]) -> pd.DataFrame | None:
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


def models_key(cfg: StudyConfig, models: Sequence[str]) -> str:
    """Short hash of the checkpoints' bytes: a step's outputs name the exact models they used, so
    a model trained further (or replaced) is never represented by outputs of its earlier state."""
    digest = hashlib.sha256(" ".join(sha256_file(checkpoint(cfg, m)) for m in models).encode())
    return digest.hexdigest()[:10]
