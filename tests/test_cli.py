"""The CLI on real data: stats, oracle, rerank; exit codes and messages for bad input."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def sacrebleu_cli(ref: Path, hyp: Path, *extra: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-b", "-w", "6", *extra],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout)


def plain(path: Path, tmp: Path) -> Path:
    out = tmp / path.name.removesuffix(".gz")
    out.write_text("\n".join(read_lines(path)) + "\n", encoding="utf-8")
    return out


def test_stats_reports_the_real_slice(slice_paths: dict[str, Path]) -> None:
    code, out, _ = cli("stats", str(slice_paths["nbest"]), "--json")
    assert code == 0
    s = json.loads(out)
    assert s["n_sentences"] == 30 and s["n_hypotheses"] == 591 and s["hyps_max"] == 20
    assert s["feature_labels"][:3] == ["LexicalReordering0", "Distortion0", "LM0"]


def test_oracle_report_matches_sacrebleu(slice_paths: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code, _, err = cli("oracle", "--nbest", str(slice_paths["nbest"]), "--ref",
                            str(slice_paths["ref"]), "--src", str(slice_paths["src"]),
                            "--out", str(out), "-q")  # fmt: skip
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    sys_ = s["systems"]
    assert sys_["oracle"]["bleu"] >= sys_["oracle_sentence"]["bleu"] >= sys_["baseline"]["bleu"]
    assert sys_["anti_oracle"]["bleu"] <= sys_["baseline"]["bleu"]
    assert s["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    ks = [s["oracle_at_k"][k] for k in ("1", "2", "5", "10", "20")]
    assert ks == sorted(ks)
    ref = plain(slice_paths["ref"], tmp_path)
    assert sacrebleu_cli(ref, out / "best.detok.txt") == pytest.approx(
        sys_["oracle"]["bleu"], abs=1e-4
    )
    for name in (
        "report.md",
        "report.html",
        "oracle_at_k.png",
        "chosen_ranks.png",
        "bleu_by_length.png",
    ):
        assert (out / name).stat().st_size > 0
    assert "sha256" in json.dumps(s["provenance"])
    # the --out layout of CLI.md/README: every hypothesis' features and which system chose it
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == s["n_hypotheses"] and scores["chosen.oracle"].sum() == 30
    assert (scores.loc[scores["chosen.baseline"], "rank"] == 0).all()


def test_rerank_by_total_is_the_moses_one_best(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    best = tmp_path / "best.txt"
    code, _, err = cli(
        "rerank", "--nbest", str(slice_paths["nbest"]), "--tokenized-output", "-o", str(best)
    )
    assert code == 0, err
    moses = [
        line.rstrip()
        for line in read_lines(Path(slice_paths["nbest"]).parent / "test2016.head30.moses.1best.gz")
    ]
    assert read_lines(best) == moses
    code, _, err = cli("rerank", "--nbest", str(slice_paths["nbest"]), "--weight", "LM0=1",
                       "--ref", str(slice_paths["tok_ref"]), "--tokenize", "none",
                       "--tokenized-output", "--output", str(best))  # fmt: skip
    assert code == 0 and "BLEU" in err
    ref = plain(slice_paths["tok_ref"], tmp_path)
    assert float(err.splitlines()[-1].split()[2]) == pytest.approx(
        sacrebleu_cli(ref, best, "-tok", "none"), abs=0.01
    )


def _mutated(src: Path, dst: Path, line_no: int, new: bytes) -> Path:
    lines = gzip.decompress(src.read_bytes()).split(b"\n")
    lines[line_no - 1] = new
    dst.write_bytes(b"\n".join(lines))
    return dst


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"0 ||| Un homme . ||| LM0= -3.2", "field"),
        (b"0 ||| Un homme . ||| LM0= abc ||| -1.0", "abc"),
        (b"0 ||| Un homme \xff . ||| LM0= -3.2 ||| -1.0", "UTF-8"),
    ],
)
def test_malformed_nbest_exits_2_naming_file_and_line(
    slice_paths: dict[str, Path], tmp_path: Path, line: bytes, problem: str
) -> None:
    bad = _mutated(slice_paths["nbest"], tmp_path / "bad.nbest", 5, line)
    for args in (("stats", str(bad)), ("rerank", "--nbest", str(bad), "--output", str(tmp_path / "o")),
                 ("oracle", "--nbest", str(bad), "--ref", str(slice_paths["ref"]), "--out", str(tmp_path / "r"))):  # fmt: skip
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert "bad.nbest:5" in err and problem in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r" / "summary.json").exists()


def test_reference_too_short_is_an_error(slice_paths: dict[str, Path], tmp_path: Path) -> None:
    short = tmp_path / "short.fr"
    short.write_text("une ligne\n")
    code, _, err = cli(
        "oracle",
        "--nbest",
        str(slice_paths["nbest"]),
        "--ref",
        str(short),
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "short.fr" in err


def test_missing_file_and_help() -> None:
    code, _, err = cli("stats", "/nonexistent/list.gz")
    assert code == 2 and "/nonexistent/list.gz" in err
    for cmd in ("stats", "oracle", "rerank", "train", "translate", "run"):
        code, out, _ = cli(cmd, "--help")
        assert code == 0 and "Example" in out


def test_rerank_writes_text_and_weight_options_adjust_one_weight(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    from nbest_rescore.metrics import detokenize_moses

    nbest = str(slice_paths["nbest"])
    text = tmp_path / "text.txt"
    code, _, err = cli("rerank", "--nbest", nbest, "-o", str(text))
    assert code == 0 and "weights: total=1" in err
    moses = read_lines(Path(nbest).parent / "test2016.head30.moses.1best.gz")
    assert read_lines(text) == [detokenize_moses(line.split(), "fr") for line in moses]
    # --weight sets one weight on top of the default total=1 (or of --weights)...
    both = tmp_path / "both.txt"
    code, _, err = cli("rerank", "--nbest", nbest, "--weight", "LM0=0.5", "-o", str(both))
    assert code == 0 and "weights: total=1 LM0=0.5" in err
    weights = tmp_path / "w.json"
    weights.write_text('{"LM0": 0.5}')
    alone = tmp_path / "alone.txt"
    code, _, err = cli("rerank", "--nbest", nbest, "--weights", str(weights), "-o", str(alone))
    assert code == 0 and "weights: LM0=0.5" in err
    # ...so the two models differ: LM0 alone is not total + 0.5 LM0.
    assert read_lines(both) != read_lines(alone)
    code, _, err = cli("rerank", "--nbest", nbest, "--weights", str(weights), "--weight",
                       "total=2", "-o", str(alone))  # fmt: skip
    assert code == 0 and "weights: LM0=0.5 total=2" in err


def test_stats_prints_plain_text_and_its_help_example_exists(
    slice_paths: dict[str, Path],
) -> None:
    code, out, _ = cli("stats", str(slice_paths["nbest"]))
    assert code == 0
    assert "(" not in out and "'" not in out
    assert "LexicalReordering0, Distortion0, LM0" in out
    code, out, _ = cli("stats", "--help")
    example = out.split("Example: rescore stats ")[1].split()[0]
    assert (Path(__file__).resolve().parent.parent / example).is_file()


def test_defaults_follow_the_library_and_the_hardware() -> None:
    import typer.main

    from nbest_rescore.distributed import resolve_device
    from nbest_rescore.scoring import ScoringConfig

    group = typer.main.get_command(app)
    params = {
        name: {p.name: p for p in cmd.params}
        for name, cmd in group.commands.items()  # type: ignore[attr-defined]
    }
    for cmd in ("run", "translate", "train"):
        assert params[cmd]["device"].default == "auto"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert params["train"]["preset"].default == "multi30k"
    code, out, _ = cli("run", "--help")
    assert code == 0
    assert f"[default: {ScoringConfig().max_tokens}]" in " ".join(out.split())


def test_out_naming_a_file_is_a_clear_error(slice_paths: dict[str, Path], tmp_path: Path) -> None:
    afile = tmp_path / "taken"
    afile.write_text("x")
    code, _, err = cli("oracle", "--nbest", str(slice_paths["nbest"]), "--ref",
                       str(slice_paths["ref"]), "--out", str(afile), "-q")  # fmt: skip
    assert code == 2 and str(afile) in err and "directory" in err


def test_version_and_help_use_plain_placeholders() -> None:
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert code == 0 and out.split()[-1] == version("nbest_rescore")
    for cmd in ("stats", "oracle", "rerank", "train", "translate", "run"):
        code, out, _ = cli(cmd, "--help")
        # placeholders read as words (FILE, DIR, N), not typer's {file}, <str> or <list[Path]>
        assert code == 0 and not re.search(r"<[a-z]|\{[a-z]", out, re.IGNORECASE), out
    code, out, _ = cli("stats", "--help")
    assert "stats [OPTIONS] FILE" in out
    code, out, _ = cli("run", "--help")
    assert "--threads N|auto" in out and "-m, --model CKPT" in out and "--out DIR" in out


def test_stats_prints_whole_numbers_as_integers(slice_paths: dict[str, Path]) -> None:
    code, out, _ = cli("stats", str(slice_paths["nbest"]))
    fields = dict(line.strip().split(": ", 1) for line in out.splitlines())
    assert code == 0 and fields["hyps_median"] == "20" and fields["unlabelled_features"] == "False"


def test_threads_takes_a_count_or_auto(slice_paths: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = cli("translate", "--threads", "many", "-q", "--input", str(slice_paths["src"]))
    assert code == 2 and "--threads" in err and "auto" in err
    code, _, err = cli("translate", "--threads", "0", "-q", "--input", str(slice_paths["src"]))
    assert code == 2 and "--threads" in err
