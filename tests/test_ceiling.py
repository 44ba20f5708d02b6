"""`pipelines.multi30k.ceiling`: every row's figures are what its tuned weights give, and its top-k
lists are what `--max-hyps` reads, on the real slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from nbest_rescore.checkpoint import assign_directions, load_model
from nbest_rescore.features import model_features, model_kind
from nbest_rescore.metrics import BleuConfig, corpus_bleu_many
from nbest_rescore.progress import QUIET
from nbest_rescore.rerank import rerank
from nbest_rescore.run_job import RunJob, read_list, score_list
from nbest_rescore.table import read_table
from pipelines.multi30k import ceiling
from pipelines.multi30k.results import kept_sections


def test_top_k_is_what_max_hyps_reads(slice_paths: dict[str, Path]) -> None:
    full = read_table(slice_paths["nbest"])
    stats = np.arange(len(full.values) * 2).reshape(-1, 2)
    got, got_stats = ceiling.top_k(full, stats, 3)
    want = read_table(slice_paths["nbest"], max_hyps=3)
    assert np.array_equal(got.offsets, want.offsets)
    assert np.array_equal(got.values, want.values)
    starts, counts = full.offsets[:-1], np.minimum(full.counts, 3)
    kept = np.concatenate([np.arange(a, a + c) for a, c in zip(starts, counts, strict=True)])
    assert np.array_equal(got_stats, stats[kept])


def test_rows_are_what_their_weights_give(
    slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    p = slice_paths
    models = (str(slice_checkpoint), str(slice_checkpoint))
    job = RunJob(
        nbest=str(p["nbest"]), src=str(p["src"]), ref=str(p["ref"]), models=models,
        out=tmp_path, cache_dir=tmp_path / "cache", bleu=BleuConfig(tokenize="13a"),
    )  # fmt: skip
    bundles = assign_directions([load_model(m) for m in models], None)
    names = model_features([model_kind(b) for b in bundles])
    dev, test = (
        score_list(read_list(job.nbest, job.src, job.ref, job), bundles, names, job, QUIET)
        for _ in range(2)
    )
    assert dev is not None and test is not None and test.stats is not None
    result = ceiling.measure(dev, test, names[:1], names[1:], [1, 2])
    rows = ceiling.variants(dev.table, names[:1], names[1:])
    assert list(result["rows"]) == list(rows)
    assert any("dense features" in name for name in rows)
    for name, (cols, _, k) in rows.items():
        t, st = test.table.select(cols), test.stats.stats
        if k is not None:
            t, st = ceiling.top_k(t, st, k)
        for run in result["rows"][name]:
            choice = t.rows_of(rerank(t, run["weights"]))
            assert run["test_bleu"] == float(corpus_bleu_many(st[choice].sum(axis=0))[0])
            assert run["dev_bleu"] >= run["test_bleu"] - 1e-9  # dev and test are one list here

    result.update(command="c", commit="x", machine="m", date="d", run_models=["a.pt"],
                  extra_models=["b.pt"], extra_features=names[1:], signature="s")  # fmt: skip
    results = tmp_path / "RESULTS.md"
    results.write_text("# study\n\ntext\n")
    ceiling.splice(results, ceiling.section(result), ceiling.BEGIN, ceiling.END)
    text = results.read_text()
    assert "`b.pt` (LSTM1)" in text and text.count("| shipped set |") == 1
    assert kept_sections(results).strip() == text.split("text\n", 1)[1].strip()


def test_main_scores_val_and_test_of_a_data_dir(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    """The script end to end on a data directory laid out as the Multi30k one (the real slice
    under the full lists' names), with the shipped models: the scored lists, the json, the section."""
    d = tmp_path / "data"
    d.mkdir()
    names = {"nbest": ("val.moses.1000best.gz", "test2016.moses.1000best.gz"),
             "src": ("val.en.gz", "test_2016_flickr.en.gz"),
             "ref": ("val.fr.gz", "test_2016_flickr.fr.gz")}  # fmt: skip
    for key, targets in names.items():
        for target in targets:
            (d / target).write_bytes(slice_paths[key].read_bytes())
    results = tmp_path / "RESULTS.md"
    ceiling.main(["--data-dir", str(d), "--work-dir", str(tmp_path / "work"), "--seeds", "1",
                  "--results", str(results)])  # fmt: skip
    record = json.loads((tmp_path / "work" / "ceiling.json").read_text())
    assert record["extra_models"] == ["att-rev-2.pt"] and record["extra_features"] == ["LSTM1"]
    assert all(len(runs) == 1 for runs in record["rows"].values())
    assert ceiling.BEGIN in results.read_text()
