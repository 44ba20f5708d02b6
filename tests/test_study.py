"""The Multi30k study finds its models: its own runs first, the shipped copies where a run is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nbest_rescore.checkpoint import load_model
from pipelines.multi30k.study import (
    SHIPPED,
    StudyConfig,
    checkpoint,
    table2_systems,
    train_models,
)

pytestmark = pytest.mark.skipif(
    not (SHIPPED / "training.json").is_file(), reason="no shipped models in this checkout"
)


def _config(tmp_path: Path, shipped: Path = SHIPPED) -> StudyConfig:
    return StudyConfig(
        data_dir=tmp_path / "data", work_dir=tmp_path / "work", train=(), shipped=shipped
    )


def test_shipped_models_stand_in_for_missing_runs(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    trained = train_models(cfg)
    shipped = {p.stem for p in SHIPPED.glob("*.pt")}
    assert set(trained) == shipped
    for name in shipped:
        assert checkpoint(cfg, name) == SHIPPED / f"{name}.pt"
        rec = trained[name]
        assert rec["shipped"] and rec["best_valid_ppl"] > 1.0
        # the record describes the model that is actually there
        bundle = load_model(checkpoint(cfg, name))
        assert bundle.config.reverse_target == rec["config"]["reverse_target"]
        assert bundle.config.attention == rec["config"]["attention"]
    labels = [label for label, _ in table2_systems(set(trained))]
    assert "attention LSTM + right-to-left feature" in labels


def test_own_run_wins_over_shipped_copy(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = cfg.work_dir / "models" / "att-rev-1"
    run.mkdir(parents=True)
    shutil.copy(SHIPPED / "att-rev-1.pt", run / "checkpoint_best.pt")
    config = {"seed": 1, "reverse_source": True}
    valid = {"event": "valid", "epoch": 1.0, "step": 10, "lr": 0.002, "valid_ppl": 7.5}
    lines = [{"event": "start", "config": config}, {**valid, "elapsed_s": 60.0}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    trained = train_models(cfg)
    assert checkpoint(cfg, "att-rev-1") == run / "checkpoint_best.pt"
    assert trained["att-rev-1"]["best_valid_ppl"] == 7.5
    assert not trained["att-rev-1"].get("shipped")


def test_no_record_no_model(tmp_path: Path) -> None:
    """A shipped file without a training record is not used: the study could not describe it."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(SHIPPED / "att-rev-1.pt", shipped / "att-rev-1.pt")
    (shipped / "training.json").write_text("{}")
    assert train_models(_config(tmp_path, shipped)) == {}
