"""The Multi30k study: it finds its models (its own runs first, the shipped copies where a run is
gone), and its tables and readings are right on real outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sacrebleu

from nbest_rescore.checkpoint import load_model
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig
from nbest_rescore.oracle import DEFAULT_LENGTH_EDGES
from nbest_rescore.text import tokenize
from pipelines.multi30k.curves import active_seconds, line_looks
from pipelines.multi30k.models import (
    ENSEMBLE,
    PLAIN,
    SHIPPED,
    StudyConfig,
    checkpoint,
    train_models,
)
from pipelines.multi30k.results import (
    _direction_md,
    _feature_gains,
)
from pipelines.multi30k.study import (
    ATT_ALONE,
    FEATURE_ROWS,
    DirectionTest,
    _test_stats,
    by_length,
    depth_table,
    seed_spread,
    source_lengths,
    table2_systems,
)

REPO = Path(__file__).resolve().parents[1]

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


def test_bleu_by_source_length_on_real_test2016(tmp_path: Path) -> None:
    """Buckets are cut by the model's source tokenizer, and each bucket's BLEU is sacrebleu's on
    exactly that bucket's sentences."""
    cfg = _config(tmp_path)
    cfg.data_dir.mkdir()
    for lang in ("en", "fr"):
        shutil.copy(
            REPO / f"data/multi30k/test2016.{lang}.gz", cfg.data_dir / f"test_2016_flickr.{lang}.gz"
        )
    src = read_lines(cfg.data_dir / "test_2016_flickr.en.gz")
    refs = read_lines(cfg.data_dir / "test_2016_flickr.fr.gz")
    src_len = source_lengths(cfg)
    tok = load_model(SHIPPED / "att-rev-1.pt").src_tok
    assert src_len.tolist() == [len(tokenize(s, tok)) for s in src]
    clipped = [" ".join(r.split()[:-2]) for r in refs]
    systems = {"ref": refs, "clipped": clipped}
    df = by_length(_test_stats(cfg, BleuConfig(tokenize="13a", tgt_lang="fr"), systems), src_len)
    assert df["sentences"].sum() == len(refs)
    assert df["ref"].tolist() == pytest.approx([100.0] * len(df))
    edges = [*DEFAULT_LENGTH_EDGES, 10**6]
    lo = 0
    for (_, row), hi in zip(df.iterrows(), edges, strict=True):
        idx = np.flatnonzero((src_len > lo) & (src_len <= hi))
        assert row["sentences"] == len(idx)
        want = sacrebleu.corpus_bleu([clipped[i] for i in idx], [[refs[i] for i in idx]]).score
        assert row["clipped"] == pytest.approx(want, abs=1e-9)
        lo = hi


def test_feature_gains_are_differences_to_the_attention_model_alone() -> None:
    def summary(dev: float, test: float) -> dict[str, object]:
        return {"tuning": {"dev_bleu": dev}, "systems": {"tuned": {"bleu": test}}}

    summaries = {
        ATT_ALONE: summary(60.0, 61.0),
        FEATURE_ROWS["R2L"]: summary(60.5, 62.25),
        FEATURE_ROWS["T2S"]: summary(59.75, 60.0),
    }
    (line,) = _feature_gains(summaries)
    assert "R2L +0.50 / +1.25" in line and "T2S -0.25 / -1.00" in line
    assert "R2L + T2S" not in line
    assert _feature_gains({FEATURE_ROWS["R2L"]: summary(1.0, 1.0)}) == []


def test_depth_table_reads_unfinished_runs_and_the_shipped_two_layer_model(tmp_path: Path) -> None:
    """Depth 2 is the shipped main model; depth 1 a run still training: the table shows how far
    it got, and the change per extra layer is relative to the row above."""
    cfg = _config(tmp_path)
    run = cfg.work_dir / "models" / "depth-1"
    run.mkdir(parents=True)
    shutil.copy(SHIPPED / "att-rev-1.pt", run / "checkpoint_best.pt")
    valid = {"event": "valid", "lr": 0.002}
    lines = [
        {"event": "start", "config": {"seed": 1, "layers": 1}},
        {**valid, "step": 10, "epoch": 1.0, "valid_ppl": 9.0, "elapsed_s": 300.0, "cpu_s": 290.0},
        {**valid, "step": 20, "epoch": 2.0, "valid_ppl": 6.0, "elapsed_s": 700.0, "cpu_s": 600.0},
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    trained = train_models(cfg)
    two = trained["att-rev-1"]["best_valid_ppl"]
    table = depth_table(trained, {"depth-1": 1_000_000}).set_index("layers")
    assert table.loc[1, "best valid ppl"] == 6.0 and not table.loc[1, "finished"]
    assert table.loc[1, "min / epoch"] == 5.0 and table.loc[1, "training min"] == "10"
    assert table.loc[2, "training min"].endswith("†")  # the shipped record's wall clock
    assert table.loc[1, "parameters (M)"] == 1.0
    assert table.loc[2, "vs one layer fewer"] == f"{100 * (two / 6.0 - 1):+.1f}%"
    assert table.loc[3, "best valid ppl"] is None or np.isnan(table.loc[3, "best valid ppl"])
    # the shipped seeds of the main model are the spread (one seed would be none)
    seeds = [r["best_valid_ppl"] for n, r in trained.items() if n in ENSEMBLE]
    want = (min(seeds), max(seeds), len(seeds)) if len(seeds) > 1 else None
    assert seed_spread(trained) == want


def test_direction_verdict_counts_only_significant_pairs() -> None:
    """Every reversed seed is tested against every forward seed; a pair counts for a direction
    only where its difference is significant."""
    (r1, r2), (f1, f2) = PLAIN["reversed"], PLAIN["forward"]
    tests = [
        DirectionTest(r1, f1, -0.9, 0.039),
        DirectionTest(r1, f2, 0.4, 0.2),
        DirectionTest(r2, f1, 1.1, 0.01),
        DirectionTest(r2, f2, 0.8, 0.03),
    ]
    text = _direction_md(pd.DataFrame({"length": ["0-8"], "sentences": [87]}), tests)
    assert (
        "Of 4 reversed/forward pair(s), reversed is better at p < 0.05 in 2, forward in 1." in text
    )
    assert f"{r2} against {f2}: reversed - forward = +0.80 BLEU" in text
    assert "One training seed" not in text
    assert "One training seed" in _direction_md(pd.DataFrame(), tests[:1])
    assert "seed spread" not in text


def test_direction_reading_weighs_the_difference_against_seed_spread() -> None:
    """With two seeds a direction, the whole-set BLEU tells whether the directions' difference
    is larger than what a change of seed alone does."""
    (r1, r2), (f1, f2) = PLAIN["reversed"], PLAIN["forward"]
    tests = [DirectionTest(r1, f1, -0.9, 0.04)]

    def whole(rev: tuple[float, float], fwd: tuple[float, float]) -> dict[str, float]:
        return {f1: fwd[0], f2: fwd[1], r1: rev[0], r2: rev[1]}

    noisy = _direction_md(pd.DataFrame(), tests, whole((29.16, 27.23), (30.06, 27.87)))
    assert "differ by 1.93 BLEU (reversed) and 2.19 (forward)" in noisy
    assert "seed means differ by -0.77" in noisy
    assert "no direction is shown to be better" in noisy
    clear = _direction_md(pd.DataFrame(), tests, whole((33.0, 32.5), (30.0, 29.8)))
    assert "seed means differ by +2.85" in clear and "more than the smaller seed spread" in clear


def test_active_seconds_leaves_out_pauses_and_discarded_steps(tmp_path: Path) -> None:
    """A log with steady 2 s steps, one stretch stopped for an hour, and a resume that threw
    away the steps after its checkpoint: what is left is the time the kept steps took."""
    recs: list[dict[str, object]] = [{"event": "data"}]
    t = 0.0
    for step in range(10, 110, 10):  # 10 steps of 2 s between records
        t += 20.0 + (3600.0 if step == 50 else 0.0)
        recs.append({"event": "train", "step": step, "elapsed_s": t})
    recs.append({"event": "valid", "step": 100, "elapsed_s": t + 5.0})
    # killed after step 100 had been logged; the checkpoint was at step 80 (clock 160 + 3600 s)
    recs.append({"event": "resume", "step": 80})
    t = 3760.0
    for step in (90, 100, 110):
        t += 20.0
        recs.append({"event": "train", "step": step, "elapsed_s": t})
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    # steps 0..80 at 2 s (pause counted at the median), 80..110 again at 2 s: 110 steps;
    # the pre-kill validation (after the discarded steps) is gone with them
    assert active_seconds(log) == pytest.approx(110 * 2.0)


def test_line_looks_tell_thirteen_runs_apart() -> None:
    """The learning-curve plot holds 13 runs: tab10's colours alone would repeat three of them."""
    looks = line_looks(13)
    assert len(set(looks)) == 13
    assert looks[0] == ("C0", "-") and looks[10] == ("C0", "--")
