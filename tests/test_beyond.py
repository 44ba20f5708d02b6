"""`pipelines.multi30k.beyond`: the MBR0 and tuner measurements on the real slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nbest_rescore.checkpoint import assign_directions, load_model
from nbest_rescore.features import model_features, model_kind
from nbest_rescore.mbr import MbrConfig
from nbest_rescore.metrics import BleuConfig, corpus_bleu_many
from nbest_rescore.progress import QUIET
from nbest_rescore.rerank import rerank
from nbest_rescore.run_job import RunJob, read_list, score_list
from nbest_rescore.tune import MertConfig
from pipelines.multi30k import beyond
from pipelines.multi30k.results import kept_sections


def test_measure_on_the_real_slice_and_the_section_survives_the_study(
    slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    p = slice_paths
    job = RunJob(
        nbest=str(p["nbest"]), src=str(p["src"]), ref=str(p["ref"]),
        models=(str(slice_checkpoint),), out=tmp_path, cache_dir=tmp_path / "cache",
        bleu=BleuConfig(tokenize="13a"), mbr=MbrConfig(),
    )  # fmt: skip
    bundles = assign_directions([load_model(slice_checkpoint)], None)
    names = model_features([model_kind(b) for b in bundles])
    lists = [
        score_list(read_list(job.nbest, job.src, job.ref, job), bundles, names, job, QUIET)
        for _ in range(2)
    ]
    dev, test = lists
    assert dev is not None and test is not None and test.stats is not None
    tuners = {"mert": MertConfig(restarts=1), "bagged": MertConfig(restarts=1, bootstrap=2)}
    result = beyond.measure(dev, test, names, tuners)

    # The figures are what the weights give: the reported test BLEU of MERT's weights.
    mert = result["tuners"]["mert"]
    cols = beyond._columns(names, False)
    choice = rerank(test.table.select(cols), mert["weights"])
    rows = test.table.rows_of(choice)
    assert mert["test_bleu"] == float(corpus_bleu_many(test.stats.stats[rows].sum(axis=0))[0])
    assert len(mert["held_out_gains"]) == 2 * beyond.HALVINGS
    assert np.isfinite(mert["held_out_sd"])
    # Dev and test are the same list here: the tuned-on BLEU is the test BLEU.
    assert abs(result["mbr"]["without"]["dev_bleu"] - result["mbr"]["without"]["test_bleu"]) < 1e-9
    assert [r["scale"] for r in result["mbr"]["grid"]] == list(beyond.SCALES)
    assert result["mbr"]["chosen_scale"] in beyond.SCALES

    result.update(command="c", commit="x", machine="m", date="d", models=["a"], signature="s")
    results = tmp_path / "RESULTS.md"
    results.write_text("# study\n\ntext\n")
    beyond.splice(results, beyond.section(result))
    beyond.splice(results, beyond.section(result))  # replaced, not appended twice
    text = results.read_text()
    assert text.startswith("# study\n\ntext\n") and text.count(beyond.BEGIN) == 1
    assert "| mert |" in text and "| bagged |" in text
    assert kept_sections(results).strip() == text.split("text\n", 1)[1].strip()


def test_translator_specs_and_kept_sections(tmp_path: Path) -> None:
    from pipelines.multi30k import translators

    s = translators.System.parse("ens=a.pt+b.pt@int8:rerank=r.pt")
    assert s == translators.System("ens", (Path("a.pt"), Path("b.pt")), True, Path("r.pt"))
    assert translators.System.parse("one=a.pt") == translators.System("one", (Path("a.pt"),))
    results = tmp_path / "RESULTS.md"
    results.write_text("# study\n")
    beyond.splice(results, f"{beyond.BEGIN}\nB\n{beyond.END}\n")
    beyond.splice(results, f"{translators.BEGIN}\nT\n{translators.END}\n",
                  translators.BEGIN, translators.END)  # fmt: skip
    kept = kept_sections(results)
    assert "\nT\n" in kept and "\nB\n" in kept and "# study" not in kept
