"""Issue 10, "never silently wrong": every case of the issue's list on the real Moses slice, each
either a clear exit-2 error naming the input or correct handling (never exit 1, never a wrong
answer with exit 0)."""

from __future__ import annotations

import gzip
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.checkpoint import model_payload, read_checkpoint, save_checkpoint
from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.vocab import Vocab

runner = CliRunner()


def cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args), input=stdin)
    assert res.exit_code != 1, (res.stderr, res.exception)  # never an internal error
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def lines(slice_paths: dict[str, Path]) -> list[str]:
    return read_lines(slice_paths["nbest"])


@pytest.fixture()
def plain(slice_paths: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The slice as plain files (a sed-like edit is then a line edit)."""
    out = {}
    for k in ("nbest", "src", "ref"):
        p = tmp_path / f"{k}.txt"
        p.write_text("\n".join(read_lines(slice_paths[k])) + "\n", encoding="utf-8")
        out[k] = p
    return out


def edited(plain: dict[str, Path], tmp_path: Path, line_no: int, old: str, new: str) -> Path:
    """The n-best list with `old` replaced by `new` on 1-based line `line_no`."""
    lines = plain["nbest"].read_text(encoding="utf-8").split("\n")
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    p = tmp_path / f"edited{line_no}.nbest"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


def set_total(plain: dict[str, Path], tmp_path: Path, line_no: int, total: str) -> Path:
    lines = plain["nbest"].read_text(encoding="utf-8").split("\n")
    head, _, _ = lines[line_no - 1].rpartition(" ||| ")
    lines[line_no - 1] = f"{head} ||| {total}"
    p = tmp_path / f"total{line_no}.nbest"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


def run_args(nbest: Path | str, src: Path | str, model: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--nbest", str(nbest), "--src", str(src), "-m", str(model), "--out", str(out),
            "-q", *extra]  # fmt: skip


# ------------------------------------------------------------------------------- stdin


def test_stdin_nbest_gives_the_same_answer_as_the_file_in_rerank_and_oracle(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    data = plain["nbest"].read_bytes()
    code, from_file, _ = cli("rerank", "--nbest", str(plain["nbest"]), "-q")
    assert code == 0
    code, from_stdin, _ = cli("rerank", "--nbest", "-", "-q", stdin=data)
    assert code == 0 and from_stdin == from_file and len(from_file.splitlines()) == 30
    code, gz_stdin, _ = cli("rerank", "--nbest", "-", "-q", stdin=gzip.compress(data))
    assert code == 0 and gz_stdin == from_file
    for name, nbest, stdin in (("file", str(plain["nbest"]), None), ("stdin", "-", data)):
        code, _, err = cli("oracle", "--nbest", nbest, "--ref", str(plain["ref"]), "--out",
                           str(tmp_path / name), "-q", stdin=stdin)  # fmt: skip
        assert code == 0, err
    a = json.loads((tmp_path / "file" / "summary.json").read_text())
    b = json.loads((tmp_path / "stdin" / "summary.json").read_text())
    assert a["systems"] == b["systems"] and b["n_hypotheses"] == 591
    assert (tmp_path / "file/best.tok.txt").read_bytes() == (
        tmp_path / "stdin/best.tok.txt"
    ).read_bytes()


def test_stdin_in_run_gives_the_same_outputs_as_the_file(
    plain: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    code, _, err = cli(*run_args(plain["nbest"], plain["src"], slice_checkpoint, tmp_path / "f"))
    assert code == 0, err
    code, _, err = cli(
        *run_args("-", plain["src"], slice_checkpoint, tmp_path / "s"),
        stdin=plain["nbest"].read_bytes(),
    )
    assert code == 0, err
    for name in ("best.tok.txt", "weights.json", "nbest.with-lstm.gz"):
        assert (tmp_path / "f" / name).read_bytes() == (tmp_path / "s" / name).read_bytes()


def test_two_stdin_inputs_are_refused(plain: dict[str, Path], slice_checkpoint: Path) -> None:
    code, _, err = cli(*run_args("-", "-", slice_checkpoint, plain["nbest"].parent / "o"))
    assert code == 2 and "--nbest, --src" in err


def test_errors_in_a_list_from_stdin_name_stdin_and_the_line(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    bad = set_total(plain, tmp_path, 5, "nan")
    code, _, err = cli("rerank", "--nbest", "-", "-q", stdin=bad.read_bytes())
    assert code == 2 and "<stdin>:5:" in err


def test_stdin_where_it_cannot_work_is_refused(plain: dict[str, Path], tmp_path: Path) -> None:
    s, r = str(plain["src"]), str(plain["ref"])
    code, _, err = cli("train", "--train-src", "-", "--train-tgt", r, "--valid-src", s,
                       "--valid-tgt", r, "--out", str(tmp_path / "t"), stdin=b"x\n")  # fmt: skip
    assert code == 2 and "--train-src -" in err and not (tmp_path / "t").exists()
    code, _, err = cli("translate", "--ref", "-", stdin=b"x\n")
    assert code == 2 and "--input, --ref" in err


def test_invalid_utf8_on_stdin_to_translate_names_the_line(slice_checkpoint: Path) -> None:
    code, _, err = cli("translate", "-m", str(slice_checkpoint), "-q", stdin=b"A man.\n\xff\xfe\n")
    assert code == 2 and "<stdin>:2:" in err and "UTF-8" in err


# --------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize("total", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_total_is_an_error_naming_the_line(
    plain: dict[str, Path], tmp_path: Path, total: str
) -> None:
    bad = set_total(plain, tmp_path, 45, total)
    code, _, err = cli("rerank", "--nbest", str(bad), "--ref", str(plain["ref"]), "-q")
    assert code == 2 and f"{bad}:45:" in err and "non-finite total" in err
    code, _, err = cli("oracle", "--nbest", str(bad), "--ref", str(plain["ref"]), "--out",
                       str(tmp_path / "o"), "-q")  # fmt: skip
    assert code == 2 and f"{bad}:45:" in err


def test_a_non_finite_feature_is_an_error_naming_line_and_feature(
    plain: dict[str, Path], tmp_path: Path, lines: list[str]
) -> None:
    lm = lines[8].split("LM0= ")[1].split()[0]
    bad = edited(plain, tmp_path, 9, f"LM0= {lm}", "LM0= nan")
    code, _, err = cli("rerank", "--nbest", str(bad), "-q")
    assert code == 2 and f"{bad}:9:" in err and "LM0" in err


def test_run_refuses_a_nan_total_before_scoring(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    bad = set_total(plain, tmp_path, 300, "nan")
    out = tmp_path / "o"
    code, _, err = cli(*run_args(bad, plain["src"], slice_checkpoint, out))
    assert code == 2 and f"{bad}:300:" in err
    assert not (out / "cache").exists()  # nothing was scored


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"weights": {"total": NaN}}', "not a finite number"),
        ('{"weights": {"total": "abc"}}', "expected a number"),
        ('{"weights": {"total": [1, true]}}', "expected a number"),
        ("[1, 2]", "no weights found"),
        ('{"weights": [1, 2]}', "JSON object"),
        ("total= nan\n", ":1: weight 'total' is not a finite number"),
        ("LM0= 1\ntotal= 1 x\n", ":2: expected 'Name= value"),
        ("TranslationModel0= 1 2\n", "has 2 value(s) but the feature has 4"),
    ],
)
def test_bad_weights_files_are_errors_naming_the_file(
    plain: dict[str, Path], tmp_path: Path, content: str, message: str
) -> None:
    w = tmp_path / "w.txt"
    w.write_text(content)
    code, _, err = cli("rerank", "--nbest", str(plain["nbest"]), "--weights", str(w), "-q")
    assert code == 2 and str(w) in err and message in err


def test_run_refuses_a_bad_weights_file_before_scoring(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    for content, message in (
        ('{"weights": {"Baseline0": NaN, "LSTM0": 1}}', "not a finite number"),
        ('{"weights": {"TranslationModel0": [1, 2]}}', "has 2 value(s) but the feature has 4"),
        ('{"weights": {"LSTM1": 1}}', "matches no feature"),
    ):
        w = tmp_path / "w.json"
        w.write_text(content)
        out = tmp_path / "o"
        code, _, err = cli(*run_args(plain["nbest"], plain["src"], slice_checkpoint, out,
                                     "--weights", str(w)))  # fmt: skip
        assert code == 2 and str(w) in err and message in err
        assert not (out / "cache").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("TranslationModel0=1,2", "has 2 value(s) but the feature has 4"),
        ("TranslationModel0=1,2,3,4,5", "has 5 value(s) but the feature has 4"),
        ("LM0=1,2", "has 2 value(s) but the feature has 1"),
        ("LM0=nan", "not a finite number"),
        ("LM0=inf", "not a finite number"),
        ("Nope0=1", "matches no feature"),
    ],
)
def test_weight_options_need_exactly_one_value_per_column(
    plain: dict[str, Path], option: str, message: str
) -> None:
    code, _, err = cli("rerank", "--nbest", str(plain["nbest"]), "--weight", option, "-q")
    assert code == 2 and "--weight" in err and message in err


def test_a_full_weight_vector_is_accepted(plain: dict[str, Path]) -> None:
    code, out, _ = cli(
        "rerank", "--nbest", str(plain["nbest"]), "--weight", "TranslationModel0=1,0,0,0", "-q"
    )
    assert code == 0 and len(out.splitlines()) == 30


# -------------------------------------------------------------------- layouts and mismatches


def test_an_inconsistent_feature_set_names_file_and_line_in_rerank_and_before_scoring_in_run(
    plain: dict[str, Path], tmp_path: Path, lines: list[str], slice_checkpoint: Path
) -> None:
    d = lines[411].split("Distortion0= ")[1].split()[0]
    bad = edited(plain, tmp_path, 412, f"Distortion0= {d} ", "")
    code, _, err = cli("rerank", "--nbest", str(bad), "-q")
    assert code == 2 and f"{bad}:412:" in err and "Distortion0" in err
    out = tmp_path / "o"
    code, _, err = cli(*run_args(bad, plain["src"], slice_checkpoint, out))
    assert code == 2 and f"{bad}:412:" in err
    assert not (out / "cache").exists()


def test_a_short_source_is_blamed_not_the_reference(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    short = tmp_path / "short.en"
    short.write_text("\n".join(read_lines(plain["src"])[:12]) + "\n")
    code, _, err = cli(
        *run_args(plain["nbest"], short, slice_checkpoint, tmp_path / "o", "--ref",
                  str(plain["ref"]))
    )  # fmt: skip
    assert code == 2 and str(short) in err and str(plain["ref"]) not in err


def test_an_empty_list_is_an_error_everywhere(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    empty = tmp_path / "empty.nbest"
    empty.write_text("")
    for args in (
        ["rerank", "--nbest", str(empty), "-q"],
        ["oracle", "--nbest", str(empty), "--ref", str(plain["ref"]), "--out", str(tmp_path)],
        run_args(empty, plain["src"], slice_checkpoint, tmp_path / "o"),
    ):
        code, _, err = cli(*args)
        assert code == 2 and str(empty) in err and "no hypotheses" in err


# -------------------------------------------------------------------------- id gaps


def test_a_sentence_without_hypotheses_is_an_empty_line_in_run_rerank_and_oracle(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    kept = [ln for ln in read_lines(plain["nbest"]) if not ln.startswith(("3 |||", "29 |||"))]
    gap = tmp_path / "gap.nbest"
    gap.write_text("\n".join(kept) + "\n")
    ref = ["--ref", str(plain["ref"])]
    code, out, err = cli("rerank", "--nbest", str(gap), *ref, "-q")
    assert code == 0 and "2 sentence(s) without hypotheses (ids 3, 29)" in err
    rerank_lines = out.split("\n")[:-1]
    assert len(rerank_lines) == 30 and rerank_lines[3] == rerank_lines[29] == ""
    code, _, err = cli("oracle", "--nbest", str(gap), *ref, "--out", str(tmp_path / "or"), "-q")
    assert code == 0 and "ids 3, 29" in err
    code, _, err = cli(*run_args(gap, plain["src"], slice_checkpoint, tmp_path / "run", *ref))
    assert code == 0 and "ids 3, 29" in err
    for d in ("or", "run"):  # both write the chosen hypotheses to best.*.txt
        summary = json.loads((tmp_path / d / "summary.json").read_text())
        assert summary["n_missing"] == 2 and summary["n_sentences"] == 30
        assert any("ids 3, 29" in w for w in summary["warnings"])
        chosen = (tmp_path / d / "best.tok.txt").read_text().split("\n")[:-1]
        assert len(chosen) == 30 and chosen[3] == chosen[29] == ""
    assert "ids 3, 29" in (tmp_path / "run" / "report.md").read_text()


# ------------------------------------------------------------------------- checkpoints


def test_run_refuses_a_checkpoint_with_a_cut_vocabulary(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    payload = read_checkpoint(slice_checkpoint)
    payload["tgt_vocab"] = payload["tgt_vocab"][:-5]
    bad = tmp_path / "cut.pt"
    save_checkpoint(bad, payload)
    code, _, err = cli(*run_args(plain["nbest"], plain["src"], bad, tmp_path / "o"))
    assert code == 2 and str(bad) in err and "target vocabulary" in err


def test_a_model_that_does_not_know_the_lists_words_is_warned_about(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    # A "French" vocabulary built from the English side: almost every hypothesis token is unknown.
    words = [ln.split() for ln in read_lines(plain["src"])]
    sv = tv = Vocab.build(words)
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig.preset("tiny", src_vocab_size=len(sv), tgt_vocab_size=len(tv)))
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(
        wrong, model_payload(model.eval(), sv, tv, TokenizerConfig("en"), TokenizerConfig("fr"))
    )
    out = tmp_path / "o"
    code, _, err = cli(*run_args(plain["nbest"], plain["src"], wrong, out))
    assert code == 0 and "outside its vocabulary" in err
    summary = json.loads((out / "summary.json").read_text())
    assert any("LSTM0" in w and "outside its vocabulary" in w for w in summary["warnings"])
    assert "outside its vocabulary" in (out / "report.md").read_text()


def test_a_model_that_knows_the_words_gets_no_coverage_warning(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    out = tmp_path / "o"
    code, _, err = cli(*run_args(plain["nbest"], plain["src"], slice_checkpoint, out))
    assert code == 0 and "vocabulary" not in err
    assert json.loads((out / "summary.json").read_text())["warnings"] == []


# ------------------------------------------------------------------------ bounded memory


def test_a_huge_hypothesis_is_refused_by_max_len_not_an_oom(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    lines = read_lines(plain["nbest"])
    parts = lines[20].split(" ||| ")
    parts[1] = " ".join(["chapeau"] * 1_250_000)
    lines[20] = " ||| ".join(parts)
    huge = tmp_path / "huge.nbest"
    huge.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    code, _, err = cli(*run_args(huge, plain["src"], slice_checkpoint, out))
    assert code == 2 and f"{huge}:21:" in err and "1250000 tokens" in err and "--max-len" in err
    assert not (out / "cache").exists()
    # the bound is an option: a smaller one refuses ordinary lines the same way
    code, _, err = cli(*run_args(plain["nbest"], plain["src"], slice_checkpoint, out,
                                 "--max-len", "5"))  # fmt: skip
    assert code == 2 and "--max-len 5" in err


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["oracle", "--max-hyps", "0"], "--max-hyps must be >= 1"),
        (["run", "--max-hyps", "0"], "--max-hyps must be >= 1"),
        (["run", "--max-tokens", "0"], "--max-tokens must be >= 1"),
        (["run", "--max-len", "0"], "--max-len must be >= 1"),
        (["run", "--restarts", "-1"], "--restarts must be >= 0"),
        (["run", "--device", "tpu"], "--device 'tpu'"),
        (["translate", "--beam", "0"], "--beam must be >= 1"),
        (["translate", "--nbest", "0"], "--nbest must be >= 1"),
        (["translate", "--tokenize", "foo"], "--tokenize 'foo': unknown BLEU tokenizer"),
        (["translate", "--length-penalty", "nan"], "--length-penalty must be a finite number"),
        (["train", "--epochs", "0"], "--epochs must be > 0"),
        (["train", "--lr", "nan"], "--lr must be a finite number"),
        (["train", "--lr", "-1"], "--lr must be > 0"),
        (["train", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["train", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
    ],
)
def test_out_of_range_options_are_errors_naming_the_option(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path, args: list[str], message: str
) -> None:
    cmd, *opts = args
    n, s, r = (str(plain[k]) for k in ("nbest", "src", "ref"))
    base = {
        "oracle": ["--nbest", n, "--ref", r, "--out", str(tmp_path / "o")],
        "run": ["--nbest", n, "--src", s, "-m", str(slice_checkpoint), "--out", str(tmp_path)],
        "translate": ["-m", str(slice_checkpoint)],
        "train": [
            *("--train-src", s, "--train-tgt", r, "--valid-src", s, "--valid-tgt", r),
            *("--out", str(tmp_path / "t")),
        ],
    }[cmd]
    code, _, err = cli(cmd, *base, *opts, "-q", stdin=b"A man.\n")
    assert code == 2 and message in err
    assert not (tmp_path / "t").exists()  # train refused before creating anything


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_device_cuda_on_a_cpu_only_torch_is_a_user_error(slice_checkpoint: Path) -> None:
    code, _, err = cli("translate", "-m", str(slice_checkpoint), "--device", "cuda", stdin=b"x\n")
    assert code == 2 and "--device cuda" in err and "no CUDA" in err


# --------------------------------------------------------------------------- I/O failures


def test_out_naming_a_file_or_an_unwritable_place_is_a_user_error(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    ref = ["--ref", str(plain["ref"])]
    code, _, err = cli("oracle", "--nbest", str(plain["nbest"]), *ref, "--out", str(plain["src"]))
    assert code == 2 and str(plain["src"]) in err and "directory" in err
    code, _, err = cli("oracle", "--nbest", str(plain["nbest"]), *ref, "--out", "/proc/x/y")
    assert code == 2 and "/proc/x/y" in err and "cannot create" in err
    code, _, err = cli("rerank", "--nbest", str(plain["nbest"]), "-q", "-o", "/proc/x.txt")
    assert code == 2 and "/proc/x.txt" in err and "cannot write" in err


def test_a_cache_dir_that_cannot_be_written_is_refused_before_scoring(
    plain: dict[str, Path], tmp_path: Path, slice_checkpoint: Path
) -> None:
    out = tmp_path / "o"
    for cache, message in ((plain["src"], "--cache-dir must name a directory"),
                           (Path("/proc/cache"), "cannot create the --cache-dir")):  # fmt: skip
        code, _, err = cli(*run_args(plain["nbest"], plain["src"], slice_checkpoint, out,
                                     "--cache-dir", str(cache)))  # fmt: skip
        assert code == 2 and str(cache) in err and message in err
    assert not (out / "best.tok.txt").exists()


def test_a_read_only_out_directory_is_a_user_error(plain: dict[str, Path], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if _can_write(ro):
            pytest.skip("running as root: permissions do not stop writes")
        code, _, err = cli("oracle", "--nbest", str(plain["nbest"]), "--ref", str(plain["ref"]),
                           "--out", str(ro), "-q")  # fmt: skip
        assert code == 2 and str(ro) in err and "Permission denied" in err
    finally:
        ro.chmod(0o755)


def _can_write(d: Path) -> bool:
    try:
        (d / "probe").write_text("x")
    except OSError:
        return False
    (d / "probe").unlink()
    return True


def _small_disk(limit: int):  # type: ignore[no-untyped-def]
    """A child process whose files cannot grow past `limit` bytes: writes fail with EFBIG, as
    on a full disk (works for root too, unlike a read-only directory)."""

    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return setup


def test_a_full_disk_is_a_user_error_with_the_path_and_leaves_no_partial_file(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "o"
    res = subprocess.run(
        [sys.executable, "-m", "nbest_rescore", "oracle", "--nbest", str(plain["nbest"]),
         "--ref", str(plain["ref"]), "--out", str(out), "-q"],
        preexec_fn=_small_disk(3000), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert str(out) in res.stderr and "File too large" in res.stderr
    assert "Traceback" not in res.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_chunk_scored_with_another_cpu_thread_count_is_not_reused() -> None:
    """Float sums split over threads round differently (the 7e-6 of a resumed chunk in issue
    10): the thread count is part of a chunk's cache key, so a chunk is only reused by a run
    that computes the same bits."""
    from nbest_rescore.scoring import ScoringConfig

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ScoringConfig().numeric_key()
        torch.set_num_threads(2)
        two = ScoringConfig().numeric_key()
    finally:
        torch.set_num_threads(before)
    assert one != two and "threads=1" in one
