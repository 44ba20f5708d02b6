"""`rescore run` end to end on the real Moses slice with a tiny trained model."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest_reader import read_nbest

runner = CliRunner()


def run_cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def run_args(p: dict[str, Path], model: Path, out: Path) -> list[str]:
    """The `rescore run` command line of these tests: the slice, tuned on itself."""
    return [
        "run", "--nbest", str(p["nbest"]), "--src", str(p["src"]), "--ref", str(p["ref"]),
        "-m", str(model), "--tune-nbest", str(p["nbest"]), "--tune-src", str(p["src"]),
        "--tune-ref", str(p["ref"]), "--restarts", "2", "--threads", "1", "--out", str(out),
        "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run_out(
    tmp_path_factory: pytest.TempPathFactory, slice_paths: dict[str, Path], slice_checkpoint: Path
) -> Path:
    # One thread, as each torchrun rank uses: float sums (and so MERT's weights) depend on it.
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    code, stdout, stderr = run_cli(*run_args(slice_paths, slice_checkpoint, out))
    assert code == 0, stderr
    assert "baseline" in stdout and "tuned" in stdout
    return out


def test_outputs_and_summary(run_out: Path) -> None:
    for name in ("summary.json", "report.md", "report.html", "best.tok.txt", "best.detok.txt",
                 "nbest.with-lstm.gz", "weights.json", "oracle_at_k.png"):  # fmt: skip
        assert (run_out / name).is_file(), name
    assert (run_out / "scores.parquet").is_file() or (run_out / "scores.csv").is_file()
    s = json.loads((run_out / "summary.json").read_text())
    assert s["n_sentences"] == 30 and s["n_hypotheses"] == 591
    for system in ("baseline", "lstm", "even_average", "tuned", "oracle", "oracle_sentence"):
        assert system in s["systems"], system
    assert s["systems"]["oracle"]["bleu"] >= s["systems"]["tuned"]["bleu"]
    # Scores' last bits depend on the CPU thread count: the report says which produced them.
    assert s["scoring"]["numeric_key"].endswith(";threads=1")
    assert set(s["oracle_at_k"]) >= {"1", "2", "5", "10"}
    assert s["oracle_at_k"]["1"] == pytest.approx(s["systems"]["baseline"]["bleu"])
    assert s["provenance"]["models"][0]["sha256"]
    assert "p_value" in s["significance"]["tuned"]
    assert len(read_lines(run_out / "best.tok.txt")) == 30
    assert list(s["timing"]) == ["read", "load_models", "score", "weigh", "write"]
    assert all(t["seconds"] >= 0 and t["peak_rss_mib"] > 0 for t in s["timing"].values())
    scores = pd.read_parquet(run_out / "scores.parquet")
    assert len(scores) == 591 and scores["chosen.tuned"].sum() == 30


def test_tuning_never_ends_below_even_average(run_out: Path) -> None:
    tuning = json.loads((run_out / "weights.json").read_text())["tuning"]
    assert tuning["dev_bleu"] >= tuning["dev_bleu_even_average"]


def test_final_bleu_matches_sacrebleu_cli(run_out: Path, slice_paths: dict[str, Path]) -> None:
    s = json.loads((run_out / "summary.json").read_text())
    ref = run_out / "ref.txt"
    ref.write_text("\n".join(read_lines(slice_paths["ref"])) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(run_out / "best.detok.txt"), "-b", "-w", "4"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert float(out.stdout) == pytest.approx(s["systems"][s["final_system"]]["bleu"], abs=1e-3)


def test_augmented_nbest_carries_one_column_per_feature_and_the_new_total(
    run_out: Path, slice_paths: dict[str, Path]
) -> None:
    orig = [h for g in read_nbest(slice_paths["nbest"]) for h in g.hyps]
    aug = [h for g in read_nbest(run_out / "nbest.with-lstm.gz") for h in g.hyps]
    weights = json.loads((run_out / "weights.json").read_text())["weights"]
    assert set(weights) == {"Baseline0", "LSTM0", "Length0"}
    assert len(aug) == len(orig)
    for a, o in zip(aug, orig, strict=True):
        assert a.tokens == o.tokens and a.extra == o.extra
        assert [f.name for f in a.features] == [
            *(f.name for f in o.features),
            "LSTM0",
            "Length0",
            "Baseline0",
        ]
        assert a.feature("Baseline0") == (o.total,)
        assert a.feature("Length0") == (len(o.tokens),)
        (lp,) = a.feature("LSTM0")  # one value per model, no duplicated ensemble mean
        assert lp < 0
        # The 4th field is the rescored total: the final weights applied to the features.
        new = sum(w * a.feature(n)[0] for n, w in weights.items())
        assert a.total == pytest.approx(new, rel=1e-6, abs=1e-5)


def test_rerank_with_the_runs_weights_reproduces_its_one_best(
    run_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "best.tok.txt"
    code, _, err = run_cli(
        "rerank", "--nbest", str(run_out / "nbest.with-lstm.gz"), "--weights",
        str(run_out / "weights.json"), "--tokenized-output", "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert out.read_text() == (run_out / "best.tok.txt").read_text()
    detok = tmp_path / "best.detok.txt"
    code, _, err = run_cli(
        "rerank", "--nbest", str(run_out / "nbest.with-lstm.gz"), "--weights",
        str(run_out / "weights.json"), "-o", str(detok), "-q",
    )  # fmt: skip
    assert code == 0, err
    assert detok.read_text() == (run_out / "best.detok.txt").read_text()


def test_weights_file_names_the_final_system_and_how_it_was_tuned(
    run_out: Path, slice_paths: dict[str, Path]
) -> None:
    w = json.loads((run_out / "weights.json").read_text())
    s = json.loads((run_out / "summary.json").read_text())
    assert w["system"] == s["final_system"] == "tuned"
    assert w["weights"] == s["weights"]["tuned"]
    assert s["tuning"]["dev_bleu"] == w["tuning"]["dev_bleu"]
    # A file name and its hash, not a path that only exists on the machine that made it.
    assert w["tuning"]["tune_nbest"]["name"] == slice_paths["nbest"].name
    assert len(w["tuning"]["tune_nbest"]["sha256"]) == 64
    # ...and the models they weigh, by feature, file name and hash.
    (model,) = w["tuning"]["models"]
    assert model["feature"] == "LSTM0" and model["name"] == s["models"][0]["path"].split("/")[-1]
    assert model["sha256"] == s["models"][0]["sha256"]


def test_a_given_weights_file_is_the_given_system_with_its_tuning_record(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "given"
    code, stdout, err = run_cli(
        "run", "--nbest", str(slice_paths["nbest"]), "--src", str(slice_paths["src"]), "--ref",
        str(slice_paths["ref"]), "-m", str(slice_checkpoint), "--weights",
        str(run_out / "weights.json"), "--cache-dir", str(run_out / "cache"), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    tuned = json.loads((run_out / "summary.json").read_text())
    assert s["final_system"] == "given" and "given" in stdout
    assert s["weights"]["given"] == tuned["weights"]["tuned"]
    assert s["systems"]["given"]["bleu"] == tuned["systems"]["tuned"]["bleu"]
    assert s["tuning"]["dev_bleu"] == tuned["tuning"]["dev_bleu"]
    assert s["tuning"]["weights_file"]["name"] == "weights.json"
    assert (out / "best.tok.txt").read_text() == (run_out / "best.tok.txt").read_text()


def test_reports_stand_alone(run_out: Path) -> None:
    s = json.loads((run_out / "summary.json").read_text())
    test = s["significance_test"]
    assert test["resamples"] == 1000 and test["against"] == "baseline"
    assert "two-sided" in test["direction"] and test["p_floor"] == pytest.approx(1 / 1001)
    md = (run_out / "report.md").read_text()
    html = (run_out / "report.html").read_text()
    p = s["significance"]["tuned"]["p_value"]
    for page in (md, html):
        assert "p_value" in page and f"{p:.4f}" in page and "1/1001" in page
        for system in ("baseline", "oracle", "oracle_sentence", "anti_oracle", "even_average",
                       "even_average_raw", "lstm", "tuned"):  # fmt: skip
            assert system in page
        assert "upper bound" in page and "a floor" in page  # the definitions
    # The list is 20 deep: oracle@k and the rank histogram stop there.
    assert max(int(k) for k in s["oracle_at_k"]) == 20
    ranks = (run_out / "tables" / "rank_histogram.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in ranks[1:]] == ["1", "2-5", "6-10", "11-20"]
    # Pictures inside the page; full hashes where sha256 is written.
    assert 'src="data:image/png;base64,' in html and '.png"' not in html
    for inp in s["provenance"]["inputs"].values():
        assert inp["sha256"] is None or len(inp["sha256"]) == 64
    assert all(len(m["sha256"]) == 64 for m in s["models"])


def test_rerun_is_identical_and_uses_the_cache(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    cache = tmp_path / "shared-cache"
    shutil.copytree(run_out / "cache", cache)
    args = [a for a in run_args(slice_paths, slice_checkpoint, again) if a != "--quiet"]
    code, _, err = run_cli(*args, "--cache-dir", str(cache))
    assert code == 0, err
    assert f"every score came from the cache ({cache})" in err
    assert not (again / "cache").exists()
    timing = json.loads((again / "summary.json").read_text())["scoring"]["timing"]
    assert timing["chunk_files_scored"] == 0 and timing["chunk_files"] > 0  # nothing re-scored
    for name in ("best.tok.txt", "weights.json"):
        assert (again / name).read_bytes() == (run_out / name).read_bytes(), name
    a = gzip.decompress((again / "nbest.with-lstm.gz").read_bytes())
    b = gzip.decompress((run_out / "nbest.with-lstm.gz").read_bytes())
    assert a == b


def test_no_prefix_sharing_is_honoured_and_scores_the_same(
    slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    runs = {}
    for flag in ("--prefix-sharing", "--no-prefix-sharing"):
        out = tmp_path / flag
        code, _, err = run_cli(
            "run", "--nbest", str(slice_paths["nbest"]), "--src", str(slice_paths["src"]),
            "-m", str(slice_checkpoint), "--out", str(out), "-q", flag,
        )  # fmt: skip
        assert code == 0, err
        runs[flag] = (json.loads((out / "summary.json").read_text()), out)
    (shared, a_out), (flat, b_out) = runs.values()
    assert flat["scoring"]["config"]["share_prefixes"] is False
    assert flat["provenance"]["scoring"]["share_prefixes"] is False
    # Without the trie every target token is a softmax row; with it, shared prefixes count once.
    assert flat["scoring"]["timing"]["softmax_rows"] > shared["scoring"]["timing"]["softmax_rows"]
    a = [h.feature("LSTM0")[0] for g in read_nbest(a_out / "nbest.with-lstm.gz") for h in g.hyps]
    b = [h.feature("LSTM0")[0] for g in read_nbest(b_out / "nbest.with-lstm.gz") for h in g.hyps]
    assert a == pytest.approx(b, abs=1e-3)


def test_input_mismatches_are_clear_errors(
    slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    def bare(src: Path, model: Path, out: Path, *extra: str) -> tuple[int, str]:
        code, _, err = run_cli("run", "--nbest", str(slice_paths["nbest"]), "--src", str(src),
                               "-m", str(model), "--out", str(out), "-q", *extra)  # fmt: skip
        return code, err

    out = tmp_path / "o"
    short_src = tmp_path / "short.en"
    short_src.write_text("\n".join(read_lines(slice_paths["src"])[:10]) + "\n")
    code, err = bare(short_src, slice_checkpoint, out)
    assert code == 2 and "short.en" in err and "10 lines" in err
    short_ref = tmp_path / "short.fr"
    short_ref.write_text("x\n")
    code, err = bare(slice_paths["src"], slice_checkpoint, out, "--ref", str(short_ref))
    assert code == 2 and "short.fr" in err
    code, err = bare(slice_paths["src"], tmp_path / "missing.pt", out)
    assert code == 2 and "missing.pt" in err
    assert not (out / "best.tok.txt").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = bare(slice_paths["src"], slice_checkpoint, afile)
    assert code == 2 and str(afile) in err and "directory" in err


def test_each_input_is_read_once(
    slice_paths: dict[str, Path],
    slice_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One pass: every input file is opened once (reading, checking, scoring, hashing for the
    report), the test list a second time only by the writer of the augmented list, which needs
    its feature text byte for byte. Opens are counted, nothing is replaced."""
    inputs = {"nbest": slice_paths["nbest"], "src": slice_paths["src"], "ref": slice_paths["ref"]}
    for name in ("nbest", "src", "ref"):  # the dev list: the same files under other names
        inputs[f"tune_{name}"] = tmp_path / f"dev.{name}.gz"
        shutil.copyfile(slice_paths[name], inputs[f"tune_{name}"])
    inputs["weights"] = tmp_path / "weights.txt"
    inputs["weights"].write_text("Baseline0= 1\nLSTM0= 0.05\nLength0= 0.1\n")
    by_path = {os.path.realpath(p): name for name, p in inputs.items()}
    opens: list[tuple[str, bool]] = []  # (input, opened by the augmented list's writer)
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and os.path.realpath(file) in by_path:
            writer = any(f.name == "write_augmented" for f in traceback.extract_stack())
            opens.append((by_path[os.path.realpath(file)], writer))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    args = [f"--{name.replace('_', '-')}={path}" for name, path in inputs.items()]
    code, _, err = run_cli(
        "run", *args, "-m", str(slice_checkpoint), "--restarts", "1", "--threads", "1",
        "--out", str(tmp_path / "out"), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(opens) == sorted([(name, False) for name in inputs] + [("nbest", True)])


@pytest.mark.slow
def test_torchrun_two_processes_give_identical_outputs(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    """`torchrun -m nbest_rescore run` shards the scoring over 2 gloo ranks; outputs are unchanged."""
    import os

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "nbest_rescore", *run_args(slice_paths, slice_checkpoint, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["scoring"]["timing"]["world_size"] == 2
    for name in ("best.tok.txt", "weights.json"):
        assert (out / name).read_bytes() == (run_out / name).read_bytes(), name
    a = gzip.decompress((out / "nbest.with-lstm.gz").read_bytes())
    assert a == gzip.decompress((run_out / "nbest.with-lstm.gz").read_bytes())


def test_right_to_left_and_target_to_source_models_are_features(
    tmp_path: Path, slice_paths: dict[str, Path], slice_checkpoint: Path
) -> None:
    """`-m` takes a right-to-left and a target-to-source model beside the usual one: each is its
    own feature (its kind from the checkpoint), tuned by MERT, outside the `lstm` ensemble; the
    columns equal the library's teacher-forced scores."""
    import numpy as np

    from nbest_rescore.checkpoint import load_model, model_payload, save_checkpoint
    from nbest_rescore.model import ModelConfig, Seq2Seq
    from nbest_rescore.scoring import (
        ScoringConfig,
        score_hypotheses,
        score_source_given_hypotheses,
    )

    base = load_model(slice_checkpoint)
    torch.manual_seed(11)
    r2l_cfg = ModelConfig.preset(
        "tiny",
        src_vocab_size=len(base.src_vocab),
        tgt_vocab_size=len(base.tgt_vocab),
        reverse_target=True,
        attention="luong",
    )
    t2s_cfg = ModelConfig.preset(
        "tiny", src_vocab_size=len(base.tgt_vocab), tgt_vocab_size=len(base.src_vocab)
    )
    r2l, t2s = tmp_path / "r2l.pt", tmp_path / "t2s.pt"
    save_checkpoint(
        r2l,
        model_payload(Seq2Seq(r2l_cfg), base.src_vocab, base.tgt_vocab, base.src_tok, base.tgt_tok),
    )
    save_checkpoint(
        t2s,
        model_payload(Seq2Seq(t2s_cfg), base.tgt_vocab, base.src_vocab, base.tgt_tok, base.src_tok),
    )
    out = tmp_path / "out"
    args = run_args(slice_paths, slice_checkpoint, out)
    code, _, stderr = run_cli(*args, "-m", str(r2l), "-m", str(t2s))
    assert code == 0, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["features"][:3] == ["LSTM0", "R2L0", "T2S0"]
    kinds = [m["kind"] for m in s["models"]]
    assert "r2l" in kinds[1] and "target-to-source" in kinds[2]
    assert set(s["weights"]["lstm"]) == {"LSTM0"}
    assert {"R2L0", "T2S0"} <= set(s["weights"]["tuned"])
    groups = list(read_nbest(out / "nbest.with-lstm.gz"))
    feats = [{f.name: f.values[0] for f in h.features} for g in groups for h in g.hyps]
    hyps = [h.tokens for g in groups for h in g.hyps]
    owner = [g.sent_id for g in groups for _ in g.hyps]
    sources = read_lines(slice_paths["src"])
    cfg = ScoringConfig()
    want_r2l = score_hypotheses(load_model(r2l), sources, hyps, owner, cfg, escaped=False)
    t2s_bundle = load_model(t2s)
    want_t2s = score_source_given_hypotheses(t2s_bundle, sources, hyps, owner, cfg, escaped=False)
    got_r2l = np.array([f["R2L0"] for f in feats])
    got_t2s = np.array([f["T2S0"] for f in feats])
    np.testing.assert_allclose(got_r2l, want_r2l.logprob, atol=1e-4)
    np.testing.assert_allclose(got_t2s, want_t2s.logprob, atol=1e-4)


def test_the_report_opens_with_the_headline_of_summary_json(run_out: Path) -> None:
    """report.html's headline facts (tagged `data-key`) are summary.json's numbers, and they come
    before any table; report.md opens with the same title; the systems table reads baseline,
    output, components, oracles, with the output row marked and no p-value on an oracle row."""
    s = json.loads((run_out / "summary.json").read_text())
    out, systems = s["final_system"], s["systems"]
    page = (run_out / "report.html").read_text()
    head = page[page.index('<section id="headline">') : page.index("</section>")]
    assert page.index("</section>") < page.index("<table")
    facts = dict(re.findall(r'<b data-key="([^"]+)">([^<]*)</b>', head))
    bleu, base = systems[out]["bleu"], systems["baseline"]["bleu"]
    assert facts["output"] == out == "tuned"
    assert float(facts["output_bleu"]) == pytest.approx(bleu, abs=0.005)
    assert float(facts["baseline_bleu"]) == pytest.approx(base, abs=0.005)
    assert float(facts["gain"]) == pytest.approx(bleu - base, abs=0.005)
    assert float(facts["p_value"]) == pytest.approx(s["significance"][out]["p_value"], abs=5e-5)
    assert float(facts["oracle_bleu"]) == pytest.approx(systems["oracle"]["bleu"], abs=0.005)
    assert float(facts["oracle_gap"]) == pytest.approx(systems["oracle"]["bleu"] - bleu, abs=0.005)
    assert f"model.{s['models'][0]['feature']}" in facts
    md = (run_out / "report.md").read_text()
    assert md.splitlines()[0] == f"# {out}: {bleu:.2f} BLEU, {bleu - base:+.2f} over the baseline"
    rows = pd.read_csv(run_out / "tables" / "systems.csv")
    assert rows["system"].tolist()[:2] == ["baseline", out]
    assert rows["system"].tolist()[-3:] == ["oracle", "oracle_sentence", "anti_oracle"]
    assert rows.loc[rows["role"] == "oracle", "p_value"].isna().all()
    assert '<tr class="output"><td class="t">tuned</td>' in page
    # the examples: sentences whose 1-best changed, with their sentence BLEU
    examples = pd.read_csv(run_out / "tables" / "examples.csv")
    changed = s["changed_vs_baseline"]
    assert len(examples) <= 10 and changed["better"] + changed["worse"] <= changed["sentences"]
    assert (examples["baseline"] != examples["chosen"]).all()
    better = examples["change"] == "better"
    assert (
        examples.loc[better, "chosen sentence BLEU"]
        > examples.loc[better, "baseline sentence BLEU"]
    ).all()


def test_console_table_marks_the_output_with_its_gain(run_out: Path) -> None:
    from nbest_rescore.headline import console_table

    s = json.loads((run_out / "summary.json").read_text())
    out = s["final_system"]
    lines = console_table(s).splitlines()
    marked = [line for line in lines if line.startswith("* ") and "(output)" in line]
    gain = s["systems"][out]["bleu"] - s["systems"]["baseline"]["bleu"]
    assert len(marked) == 1 and f"{gain:+.2f}" in marked[0] and out in marked[0]
    oracle = next(line for line in lines if line.split()[:1] == ["oracle"])
    assert len(oracle.split()) == 3  # name, BLEU, gain: no p-value


def test_the_first_screen_shows_the_headline_in_a_browser(run_out: Path, tmp_path: Path) -> None:
    """report.html in headless Chromium at 1280x800: the headline box (its own background colour)
    is drawn at the top of the first screen, the systems table's output row (highlighted) too."""
    from matplotlib.image import imread

    tool = Path(__file__).resolve().parent.parent / "tools" / "report_screenshot.py"
    png = tmp_path / "first.png"
    res = subprocess.run(
        [sys.executable, str(tool), str(run_out / "report.html"), str(png)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if res.returncode == 3:
        pytest.skip("no Chromium-family browser installed")
    assert res.returncode == 0, res.stderr
    img = (imread(png)[:, :, :3] * 255).round().astype(int)
    assert img.shape[:2] == (800, 1280)

    def rows_with(rgb: tuple[int, int, int]) -> list[int]:
        hit = (abs(img - rgb) <= 2).all(axis=2).sum(axis=1)
        return [int(y) for y in (hit > 200).nonzero()[0]]

    headline = rows_with((0xF4, 0xF8, 0xFC))  # #headline's background
    assert headline and headline[0] < 60 and len(headline) > 100
    output_row = rows_with((0xFF, 0xF6, 0xD6))  # tr.output's background
    assert output_row and headline[-1] < output_row[0] < 800


def test_mbr_is_a_tuned_feature_that_round_trips(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    """--mbr adds MBR0 (as `mbr.mbr_feature` computes it from the list's total), tunes it with
    the rest, writes its settings with the weights, and a rerun with them reproduces the 1-best;
    without the settings those weights are refused."""
    from nbest_rescore.features import BASELINE
    from nbest_rescore.mbr import MbrConfig, mbr_feature
    from nbest_rescore.table import as_written, read_table

    out = tmp_path / "mbr"
    args = run_args(slice_paths, slice_checkpoint, out)
    args[args.index("--out") :] = [
        "--cache-dir", str(run_out / "cache"), "--out", str(out), "--quiet", "--mbr",
        "--mbr-top-k", "7", "--mbr-scale", "0.5",
    ]  # fmt: skip
    code, _, err = run_cli(*args)
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    w = json.loads((out / "weights.json").read_text())
    assert "MBR0" in s["features"] and "MBR0" in w["weights"]
    assert w["tuning"]["mbr"] == {"top_k": 7, "scale": 0.5}
    aug = read_table(out / "nbest.with-lstm.gz")
    want = mbr_feature(aug, aug.column(BASELINE), MbrConfig(top_k=7, scale=0.5))
    assert (aug.column("MBR0") == as_written(want)).all()
    assert s["tuning"]["dev_bleu"] >= s["tuning"]["dev_bleu_even_average"]

    given = [
        "run", "--nbest", str(slice_paths["nbest"]), "--src", str(slice_paths["src"]),
        "-m", str(slice_checkpoint), "--weights", str(out / "weights.json"),
        "--cache-dir", str(run_out / "cache"), "--quiet",
    ]  # fmt: skip
    code, _, err = run_cli(*given, "--out", str(tmp_path / "no-mbr"))
    assert code == 2 and "--mbr --mbr-top-k 7 --mbr-scale 0.5" in err
    again = tmp_path / "again"
    code, _, err = run_cli(
        *given, "--out", str(again), "--mbr", "--mbr-top-k", "7", "--mbr-scale", "0.5"
    )
    assert code == 0, err
    assert (again / "best.tok.txt").read_text() == (out / "best.tok.txt").read_text()


def test_tune_bootstrap_tunes_on_resamples_and_records_it(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    """--tune-bootstrap N: the tuned weights are bagged MERT's over the dev list (as
    `tune.bagged_mert` finds them), and weights.json says how they were found."""
    out = tmp_path / "bagged"
    args = run_args(slice_paths, slice_checkpoint, out)
    args[args.index("--out") :] = [
        "--cache-dir", str(run_out / "cache"), "--out", str(out), "--quiet",
        "--tune-bootstrap", "3",
    ]  # fmt: skip
    code, _, err = run_cli(*args)
    assert code == 0, err
    w = json.loads((out / "weights.json").read_text())
    assert w["tuning"]["mert"]["bootstrap"] == 3
    assert w["weights"] != json.loads((run_out / "weights.json").read_text())["weights"]
    assert abs(sum(abs(v) for v in w["weights"].values()) - 1.0) < 1e-9
    code, _, err = run_cli(*args[:-1], "1001")
    assert code == 2 and "--tune-bootstrap" in err
