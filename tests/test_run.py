"""`rescore run` end to end on the real Moses slice with a tiny trained model."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest import read_nbest

runner = CliRunner()


def run_cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def run_args(p: dict[str, Path], model: Path, out: Path) -> list[str]:
    """The `rescore run` command line of these tests: the slice, tuned on itself."""
    return [
        "run", "--nbest", str(p["nbest"]), "--src", str(p["src"]), "--ref", str(p["ref"]),
        "-m", str(model), "--tune-nbest", str(p["nbest"]), "--tune-src", str(p["src"]),
        "--tune-ref", str(p["ref"]), "--restarts", "2", "--out", str(out), "--quiet",
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
    assert set(s["oracle_at_k"]) >= {"1", "2", "5", "10"}
    assert s["oracle_at_k"]["1"] == pytest.approx(s["systems"]["baseline"]["bleu"])
    assert s["provenance"]["models"][0]["sha256"]
    assert "p_value" in s["significance"]["tuned"]
    assert len(read_lines(run_out / "best.tok.txt")) == 30


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


def test_augmented_nbest_round_trips_with_lstm_feature(
    run_out: Path, slice_paths: dict[str, Path]
) -> None:
    orig = [h for g in read_nbest(slice_paths["nbest"]) for h in g.hyps]
    aug = [h for g in read_nbest(run_out / "nbest.with-lstm.gz") for h in g.hyps]
    assert len(aug) == len(orig)
    for a, o in zip(aug, orig, strict=True):
        assert a.tokens == o.tokens and a.total == o.total
        assert [f.name for f in a.features] == [*(f.name for f in o.features), "LSTM0"]
        lp = a.feature("LSTM0")
        assert len(lp) == 2 and lp[0] < 0 and lp[1] == pytest.approx(lp[0], abs=1e-4)


def test_rerun_is_identical_and_uses_the_cache(
    run_out: Path, slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    shutil.copytree(run_out / "cache", again / "cache")
    code, _, err = run_cli(*run_args(slice_paths, slice_checkpoint, again))
    assert code == 0, err
    for name in ("best.tok.txt", "weights.json"):
        assert (again / name).read_bytes() == (run_out / name).read_bytes(), name
    a = gzip.decompress((again / "nbest.with-lstm.gz").read_bytes())
    b = gzip.decompress((run_out / "nbest.with-lstm.gz").read_bytes())
    assert a == b


def test_input_mismatches_are_clear_errors(
    slice_paths: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    short_src = tmp_path / "short.en"
    short_src.write_text("\n".join(read_lines(slice_paths["src"])[:10]) + "\n")
    code, _, err = run_cli(
        "run",
        "--nbest",
        str(slice_paths["nbest"]),
        "--src",
        str(short_src),
        "-m",
        str(slice_checkpoint),
        "--out",
        str(tmp_path / "o"),
        "-q",
    )
    assert code == 2 and "short.en" in err and "10 lines" in err
    short_ref = tmp_path / "short.fr"
    short_ref.write_text("x\n")
    code, _, err = run_cli(
        "run",
        "--nbest",
        str(slice_paths["nbest"]),
        "--src",
        str(slice_paths["src"]),
        "--ref",
        str(short_ref),
        "-m",
        str(slice_checkpoint),
        "--out",
        str(tmp_path / "o"),
        "-q",
    )
    assert code == 2 and "short.fr" in err
    code, _, err = run_cli(
        "run",
        "--nbest",
        str(slice_paths["nbest"]),
        "--src",
        str(slice_paths["src"]),
        "-m",
        str(tmp_path / "missing.pt"),
        "--out",
        str(tmp_path / "o"),
        "-q",
    )
    assert code == 2 and "missing.pt" in err
    assert not (tmp_path / "o" / "best.tok.txt").exists()


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
