"""Output files the jobs share (nbest_rescore.outputs): the `--out` directory check, the note on
sentences without hypotheses, the chosen 1-best as tokens and text, and the scores table, on the
real Moses slice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sacremoses import MosesDetokenizer

from nbest_rescore import outputs
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.outputs import (
    check_out_dir,
    missing_note,
    selection_files,
    write_scores_table,
    write_selection,
)
from nbest_rescore.rerank import rerank
from nbest_rescore.table import NBestTable, read_table


def test_out_dir_is_created_and_must_be_a_writable_directory(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    check_out_dir(out)
    assert out.is_dir() and list(out.iterdir()) == []  # the write probe leaves nothing
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(InputError, match="--report must name a directory") as info:
        check_out_dir(afile, "--report")
    assert info.value.path == str(afile)
    with pytest.raises(InputError, match="cannot create the --out directory") as info:
        check_out_dir(afile / "sub")
    assert info.value.path == str(afile / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InputError, match="cannot write in the --out directory"):
        check_out_dir(locked)


def test_missing_note_names_the_sentences() -> None:
    assert missing_note(np.zeros(30, dtype=bool)) is None
    few = np.zeros(30, dtype=bool)
    few[[2, 7]] = True
    assert missing_note(few) == (
        "2 sentence(s) without hypotheses (ids 2, 7): their output lines are empty"
    )
    many = np.ones(30, dtype=bool)
    note = missing_note(many)
    assert note is not None and note.startswith("30 sentence(s) without hypotheses (ids 0, 1,")
    assert "9, ...)" in note and "10" not in note.split("ids")[1]


@pytest.fixture(scope="module")
def table(slice_paths: dict[str, Path]) -> NBestTable:
    return read_table(slice_paths["nbest"])


def test_selection_is_written_as_tokens_and_as_detokenized_text(
    tmp_path: Path, table: NBestTable
) -> None:
    choice = rerank(table, {"LM0": 1.0})
    surfaces = table.chosen_surfaces(choice)
    write_selection(tmp_path, "lm", surfaces, BleuConfig(tgt_lang="fr"))
    tok, detok = selection_files("lm")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tok, detok])
    assert read_lines(tmp_path / tok) == surfaces
    moses = MosesDetokenizer(lang="fr")
    assert read_lines(tmp_path / detok) == [moses.detokenize(s.split()) for s in surfaces]


def _read_scores(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize("rows_per_piece", [outputs.SCORES_ROWS, 100])
def test_scores_table_holds_every_hypothesis_and_each_systems_choice(
    tmp_path: Path,
    table: NBestTable,
    slice_paths: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    rows_per_piece: int,
) -> None:
    monkeypatch.setattr(outputs, "SCORES_ROWS", rows_per_piece)  # written piece by piece
    choices = {"moses": rerank(table, {"total": 1.0}), "lm": rerank(table, {"LM0": 1.0})}
    extra = {"lstm": np.arange(len(table.values), dtype=np.float64) / 7}
    path = write_scores_table(tmp_path / "scores", table, choices, extra)
    assert path == tmp_path / "scores.parquet"
    df = _read_scores(path)
    hyps = [
        (g.sent_id, r, h) for g in read_nbest(slice_paths["nbest"]) for r, h in enumerate(g.hyps)
    ]
    assert len(df) == len(hyps) == 591
    assert list(zip(df["sent_id"], df["rank"], strict=True)) == [(s, r) for s, r, _ in hyps]
    assert df["total"].tolist() == [h.total for _, _, h in hyps]
    assert df["LM0"].tolist() == [h.feature("LM0")[0] for _, _, h in hyps]
    np.testing.assert_array_equal(df["lstm"], extra["lstm"])
    for name, choice in choices.items():
        chosen = df[df[f"chosen.{name}"]]
        assert chosen["sent_id"].tolist() == list(range(30))
        assert chosen["rank"].tolist() == choice.tolist()
    assert (df[df["chosen.moses"]]["rank"] == 0).all()  # Moses lists are sorted by total


def test_scores_table_falls_back_to_csv_without_pyarrow(
    tmp_path: Path, table: NBestTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    choices = {"moses": rerank(table, {"total": 1.0})}
    parquet = _read_scores(write_scores_table(tmp_path / "p", table, choices))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    monkeypatch.setattr(outputs, "SCORES_ROWS", 64)
    path = write_scores_table(tmp_path / "c", table, choices)
    assert path.suffix == ".csv"
    csv = _read_scores(path)
    assert list(csv.columns) == list(parquet.columns)
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_sentences_without_hypotheses_have_no_rows(
    tmp_path: Path, slice_paths: dict[str, Path]
) -> None:
    lines = [line for line in read_lines(slice_paths["nbest"]) if not line.startswith("3 ||| ")]
    gappy = tmp_path / "gappy.nbest"
    gappy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = read_table(gappy).padded(32)
    assert missing_note(t.missing) == (
        "3 sentence(s) without hypotheses (ids 3, 30, 31): their output lines are empty"
    )
    df = _read_scores(write_scores_table(tmp_path / "s", t, {"total": rerank(t, {"total": 1.0})}))
    assert len(df) == len(lines) and 3 not in set(df["sent_id"]) and df["sent_id"].max() == 29
