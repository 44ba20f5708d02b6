"""Error types (nbest_rescore.errors): how an `InputError` names its place, that it survives a
worker process (pickling), and that the CLI turns each kind into exit 2 with that place."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbest_rescore.cli import app
from nbest_rescore.errors import CheckpointError, InputError, NBestFormatError
from nbest_rescore.fileio import read_lines
from nbest_rescore.validate import OptionError

runner = CliRunner()
KINDS = [InputError, NBestFormatError, CheckpointError, OptionError]


@pytest.mark.parametrize("kind", KINDS)
def test_message_names_file_and_line(kind: type[InputError]) -> None:
    assert str(kind("bad total", "list.nbest", 7)) == "list.nbest:7: bad total"
    assert str(kind("no such file", "model.pt")) == "model.pt: no such file"
    assert str(kind("expected a number")) == "expected a number"
    assert issubclass(kind, InputError)


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_errors_keep_their_kind_and_place(kind: type[InputError]) -> None:
    err = kind("bad total", "list.nbest", 7)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is kind
    assert (back.message, back.path, back.line, str(back)) == (
        "bad total", "list.nbest", 7, "list.nbest:7: bad total"
    )  # fmt: skip


def exit_2(args: list[str]) -> str:
    """Run the CLI; it must exit 2 with one `rescore: error:` line; returns that message."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    assert res.stderr.startswith("rescore: error: ")
    return res.stderr.removeprefix("rescore: error: ").strip()


def test_cli_maps_a_bad_nbest_line_to_exit_2_with_file_and_line(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    lines = read_lines(slice_paths["nbest"])
    lines[4] = lines[4].replace(" ||| ", " ||| oops ||| ", 1).rsplit(" ||| ", 2)[0]
    bad = tmp_path / "bad.nbest"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert exit_2(["stats", str(bad)]).startswith(f"{bad}:5: ")


def test_cli_maps_a_corrupt_checkpoint_to_exit_2_with_the_file(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    msg = exit_2(["translate", "-m", str(broken), "-i", str(slice_paths["src"]), "-o", "-"])
    assert msg.startswith(f"{broken}: cannot read checkpoint")


def test_cli_maps_a_bad_weights_line_to_exit_2_with_file_and_line(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "weights.txt"
    weights.write_text("[weight]\nLM0= 0.5\nWordPenalty0 -1\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    msg = exit_2(["rerank", "--nbest", str(slice_paths["nbest"]), "--weights", str(weights),
                  "--output", str(out)])  # fmt: skip
    assert msg.startswith(f"{weights}:3: ")
    assert not out.exists()


def test_cli_maps_an_option_out_of_range_to_exit_2_naming_it(
    slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    msg = exit_2(["oracle", "--nbest", str(slice_paths["nbest"]), "--ref",
                  str(slice_paths["ref"]), "--out", str(tmp_path / "r"), "--max-hyps", "0"])  # fmt: skip
    assert msg == "--max-hyps must be >= 1, got 0"
