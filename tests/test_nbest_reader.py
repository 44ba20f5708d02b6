"""Tests of the Moses n-best reader on real Multi30k lines (tests/data); the writer and stats
have their own files (`test_nbest_writer`, `test_nbest_stats`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import math
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbest_lines import (
    DATA,
    LABELS,
    SLICE,
    all_hyps,
    lines_of,
    moses_to_ours,
    real_lines,
    write_text,
)

from nbest_rescore import nbest_reader
from nbest_rescore.errors import InputError, NBestFormatError
from nbest_rescore.nbest_reader import Feature, Hypothesis, NBestGroup, iter_lines, read_nbest
from nbest_rescore.nbest_stats import nbest_stats
from nbest_rescore.nbest_writer import write_nbest

ONE_BEST = DATA / "test2016.head30.moses.1best.gz"


def first_index(sent_id: int) -> int:
    """0-based index in the slice of the first line of a sentence."""
    return next(i for i, line in enumerate(real_lines()) if line.startswith(f"{sent_id} ||| "))


def add_to_features(line: str, text: str) -> str:
    """A line with `text` appended to its FEATURES field (and Moses' trailing space removed)."""
    parts = moses_to_ours(line).split(" ||| ")
    parts[2] = f"{parts[2]} {text}" if parts[2] else text
    return " ||| ".join(parts)


def assert_error(path: Path, line_no: int, fragment: str, **kwargs: object) -> NBestFormatError:
    """Reading `path` fails at `line_no` with a message naming the file, line and problem."""
    with pytest.raises(NBestFormatError) as info:
        for _ in read_nbest(path, **kwargs):  # type: ignore[arg-type]
            pass
    err = info.value
    assert err.path == str(path)
    assert err.line == line_no
    assert str(err).startswith(f"{path}:{line_no}: ")
    assert fragment in str(err)
    return err


# --- reading the real slice -------------------------------------------------------------------


def test_reads_real_slice() -> None:
    groups = list(read_nbest(SLICE))
    assert [g.sent_id for g in groups] == list(range(30))
    sizes = [len(g.hyps) for g in groups]
    assert sum(sizes) == len(real_lines()) == 591
    assert sizes[23] == 11 and all(s == 20 for i, s in enumerate(sizes) if i != 23)
    first = groups[0].hyps[0]
    assert first.sent_id == 0
    assert first.surface == "Un homme avec un chapeau orange en train de regarder quelque chose ."
    assert tuple(f.name for f in first.features) == LABELS
    assert first.feature("LexicalReordering0") == (-1.07705, 0.0, 0.0, -1.05277, 0.0, 0.0)
    assert first.feature("LM0") == (-21.9682,)
    assert first.feature("TranslationModel0") == (-4.67917, -10.9899, -3.43653, -15.9175)
    assert len(first.dense_vector()) == 14 and first.dense_vector()[7] == -21.9682
    assert first.total == -1.78174 and first.raw_total == "-1.78174"
    assert first.sparse == () and first.extra == ()
    assert all(f.style == "=" for f in first.features)
    with pytest.raises(KeyError):
        first.feature("LSTM0")
    for g in groups:
        assert all(h.sent_id == g.sent_id for h in g.hyps)


def test_first_hypothesis_is_the_moses_1best() -> None:
    with gzip.open(ONE_BEST, "rt", encoding="utf-8") as fh:
        one_best = [line.rstrip("\n") for line in fh]
    tops = [g.hyps[0] for g in read_nbest(SLICE)]
    assert [h.surface for h in tops] == [line.rstrip(" ") for line in one_best]


def test_hypotheses_equal_a_plain_reference_parse() -> None:
    """Every line equals an independent, naive parse of it (guards the compiled fast path)."""
    hyps = all_hyps(SLICE)
    for line, h in zip(real_lines(), hyps, strict=True):
        sid, surface, feats, total = line.split(" ||| ")
        toks = feats.split()
        values = [float(t) for t in toks if not t.endswith("=")]
        assert h.sent_id == int(sid)
        assert h.tokens == tuple(surface.split())
        assert list(h.dense_vector()) == values
        assert h.total == float(total)
        assert h.raw_features == feats
        assert [f.name + "=" for f in h.features] == [t for t in toks if t.endswith("=")]
        assert type(h) is Hypothesis and all(type(f) is Feature for f in h.features)


def test_objects_are_frozen_and_hashable() -> None:
    h = all_hyps(SLICE)[5]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.total = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.features[0].name = "x"  # type: ignore[misc]
    assert hash(h) == hash(dataclasses.replace(h))
    assert h == dataclasses.replace(h)
    assert "LM0" in repr(h)


def test_pickle_and_copy() -> None:
    """Objects built by the fast path pickle (e.g. to worker processes) and copy normally."""
    group = list(read_nbest(SLICE))[3]
    for clone in (pickle.loads(pickle.dumps(group)), copy.deepcopy(group)):
        assert clone == group and type(clone.hyps[0]) is Hypothesis
        assert type(clone.hyps[0].features[0]) is Feature


def test_very_long_layout(tmp_path: Path) -> None:
    """Thousands of unlabelled values: parsed by the generic loop instead of generated code."""
    values = " ".join(str(i % 7 - 3) + ".5" for i in range(3000))
    path = write_text(tmp_path / "long.nbest", [f"0 ||| a ||| {values} ||| -1"] * 3)
    hyps = all_hyps(path, labeled=False)
    assert len(hyps) == 3 and hyps[2].dense_vector()[:3] == (-3.5, -2.5, -1.5)
    assert hyps[2].features[2999] == Feature("F2999", (0.5,), "")


def test_max_hyps_keeps_the_top_k(tmp_path: Path) -> None:
    full = list(read_nbest(SLICE))
    top = list(read_nbest(SLICE, max_hyps=3))
    assert [g.hyps for g in top] == [g.hyps[:3] for g in full]
    with pytest.raises(ValueError):
        read_nbest(SLICE, max_hyps=0)
    # lines beyond the top k are still checked for their id order
    lines = [*lines_of(0), *lines_of(1), lines_of(0)[0]]
    assert_error(write_text(tmp_path / "x", lines), len(lines), "after 1", max_hyps=2)


def test_gz_plain_and_stdin_read_the_same(tmp_path: Path) -> None:
    plain = write_text(tmp_path / "slice.nbest", real_lines())
    expected = list(read_nbest(SLICE))
    assert list(read_nbest(plain)) == expected
    assert list(read_nbest(str(plain))) == expected
    code = (
        "from nbest_rescore.nbest_reader import read_nbest\n"
        "gs = list(read_nbest('-'))\n"
        "print(len(gs), sum(len(g.hyps) for g in gs), gs[29].hyps[-1].total)\n"
    )
    for source in (plain, SLICE):  # plain text and gzip bytes on stdin
        with open(source, "rb") as fh:
            out = subprocess.run(
                [sys.executable, "-c", code], stdin=fh, capture_output=True, check=True, text=True
            ).stdout
        assert out.split() == ["30", "591", repr(expected[29].hyps[-1].total)]


def test_iter_lines_numbers_and_text(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes("\ufeffa b\r\nc é\nlast".encode())
    assert list(iter_lines(path)) == [(1, "a b"), (2, "c é"), (3, "last")]
    assert list(iter_lines(SLICE))[-1] == (591, real_lines()[-1])


def test_block_boundaries_do_not_split_lines_or_characters(tmp_path: Path) -> None:
    lines = list(real_lines()[:60])
    path = write_text(tmp_path / "x", lines)
    for size in (1, 7, 64, 4096):
        got = [line for _, block in nbest_reader._iter_blocks(path, "x", size) for line in block]
        assert got == lines


def test_multi_block_file_and_error_line_number(tmp_path: Path) -> None:
    """A file over the 1 MiB read size: same groups, and an error deep inside names its line."""
    lines = [
        f"{int(line.split(' ||| ', 1)[0]) + 30 * k} ||| {line.split(' ||| ', 1)[1]}"
        for k in range(8)
        for line in real_lines()
    ]
    path = write_text(tmp_path / "big.nbest", lines)
    assert path.stat().st_size > 1 << 20
    groups = list(read_nbest(path))
    assert len(groups) == 240 and sum(len(g.hyps) for g in groups) == 8 * 591
    assert groups[200].hyps == tuple(
        dataclasses.replace(h, sent_id=200) for h in list(read_nbest(SLICE))[20].hyps
    )
    bad = len(lines) - 10
    data = path.read_bytes().split(b"\n")
    data[bad - 1] = data[bad - 1].replace(b" ||| ", b" ||| \xff", 1)
    path.write_bytes(b"\n".join(data))
    assert_error(path, bad, "invalid UTF-8")


# --- errors, each made from a real line ---------------------------------------------------------


@pytest.fixture
def real(tmp_path: Path) -> tuple[Path, list[str]]:
    """A writable copy of sentences 0-2 of the slice (60 lines)."""
    lines = [*lines_of(0), *lines_of(1), *lines_of(2)]
    return tmp_path / "mutated.nbest", lines


def mutate(real: tuple[Path, list[str]], index: int, new_line: str) -> Path:
    path, lines = real
    lines = list(lines)
    lines[index] = new_line
    return write_text(path, lines)


def test_error_too_few_fields(real: tuple[Path, list[str]]) -> None:
    line = real[1][24]
    path = mutate(real, 24, line.rsplit(" ||| ", 1)[0])  # the total is gone
    assert_error(path, 25, "expected at least 4 fields")
    assert_error(mutate(real, 3, ""), 4, "found 1")


def test_error_bad_ids(real: tuple[Path, list[str]]) -> None:
    line = real[1][30]
    rest = line.split(" ||| ", 1)[1]
    assert_error(mutate(real, 30, "x ||| " + rest), 31, "not a non-negative integer")
    assert_error(mutate(real, 30, "1.5 ||| " + rest), 31, "'1.5' is not a non-negative integer")
    assert_error(mutate(real, 0, "-1 ||| " + rest), 1, "negative sentence id -1")
    assert_error(mutate(real, 0, " 0 ||| " + rest), 1, "not a non-negative integer")


def test_error_decreasing_and_noncontiguous_ids(real: tuple[Path, list[str]]) -> None:
    path, lines = real
    # a line of sentence 0 among the lines of sentence 1: the sentence comes back after another
    back = write_text(path, [*lines[:25], lines[0], *lines[25:]])
    assert_error(back, 26, "sentence id 0 after 1")
    # sentence 2 before sentence 1
    swapped = write_text(path, [*lines[:20], *lines[40:], *lines[20:40]])
    assert_error(swapped, 41, "sentence id 1 after 2: ids must increase")


def test_error_non_numeric_feature_value(real: tuple[Path, list[str]]) -> None:
    line = real[1][7]
    bad = line.replace("LM0= ", "LM0= x", 1)
    err = assert_error(mutate(real, 7, bad), 8, "non-numeric feature value")
    assert "for feature LM0" in str(err)
    # an extra token changes the layout: the slow path names the value too
    bad = line.replace("LM0= -", "LM0= abc -", 1)
    assert_error(mutate(real, 7, bad), 8, "non-numeric feature value 'abc' for feature LM0")
    # a value of a cached count feature (WordPenalty0) that is not a number
    bad = re.sub(r"WordPenalty0= (\S+)", r"WordPenalty0= \g<1>x", line)
    assert_error(mutate(real, 7, bad), 8, "x' for feature WordPenalty0")


def test_error_value_before_any_label(real: tuple[Path, list[str]]) -> None:
    line = real[1][50]
    bad = line.replace("LexicalReordering0= ", "", 1)
    assert_error(mutate(real, 50, bad), 51, "before any label")


def test_error_non_numeric_total(real: tuple[Path, list[str]]) -> None:
    line = real[1][12]
    head, total = line.rsplit(" ||| ", 1)
    assert_error(mutate(real, 12, f"{head} ||| {total}x"), 13, "non-numeric total")
    assert_error(mutate(real, 0, f"{head} ||| "), 1, "non-numeric total")


def test_error_invalid_utf8(real: tuple[Path, list[str]]) -> None:
    path, lines = real
    data = [line.encode() for line in lines]
    data[33] = data[33].replace(b" ||| ", b" ||| \xff", 1)  # a stray byte
    path.write_bytes(b"\n".join(data) + b"\n")
    err = assert_error(path, 34, "invalid UTF-8")
    assert "\ufffd" in str(err)  # the excerpt shows the bad byte replaced
    k = next(i for i, line in enumerate(lines) if i > 10 and "é" in line)
    data[33] = lines[33].encode()
    data[k] = data[k].replace("é".encode(), b"\xc3", 1)  # a truncated two-byte character
    path.write_bytes(b"\n".join(data) + b"\n")
    assert_error(path, k + 1, "invalid UTF-8")


def test_first_error_in_file_order(real: tuple[Path, list[str]]) -> None:
    """A format error before an encoding error of the same block is the one reported."""
    path, lines = real
    data = [line.encode() for line in lines]
    data[5] = data[5].rsplit(b" ||| ", 1)[0]
    data[40] = b"\xff" + data[40]
    path.write_bytes(b"\n".join(data) + b"\n")
    assert_error(path, 6, "expected at least 4 fields")
    data[5] = lines[5].encode()
    path.write_bytes(b"\n".join(data) + b"\n")
    assert_error(path, 41, "invalid UTF-8")


def test_error_id_beyond_n_sentences(real: tuple[Path, list[str]]) -> None:
    path, lines = real
    write_text(path, lines)
    assert len(list(read_nbest(path, n_sentences=3))) == 3
    assert_error(path, 41, "sentence id 2, but there are only 2 sentences", n_sentences=2)


def test_error_labelled_or_not_as_requested(real: tuple[Path, list[str]]) -> None:
    path, lines = real
    write_text(path, lines)
    assert_error(path, 1, "in an unlabelled feature list", labeled=False)


def test_error_message_shortens_the_line(real: tuple[Path, list[str]]) -> None:
    line = real[1][2]
    err = assert_error(mutate(real, 2, line.rsplit(" ||| ", 1)[0]), 3, "found 3")
    assert line[:40] in str(err) and "..." in str(err) and len(str(err)) < 300


def test_missing_file_and_corrupt_gzip(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_nbest(tmp_path / "absent.nbest"))
    with pytest.raises(InputError, match="is a directory, expected a file"):
        list(read_nbest(tmp_path))
    broken = tmp_path / "broken.nbest.gz"
    broken.write_bytes(SLICE.read_bytes()[:5000])
    with pytest.raises(InputError, match="corrupt gzip"):
        list(read_nbest(broken))


# --- gaps ---------------------------------------------------------------------------------------


def test_gaps_give_empty_groups_in_place(tmp_path: Path) -> None:
    full = list(read_nbest(SLICE))
    kept = [line for line in real_lines() if line.split(" ||| ", 1)[0] not in ("0", "2", "5")]
    path = write_text(tmp_path / "gaps.nbest", kept)
    groups = list(read_nbest(path))
    assert [g.sent_id for g in groups] == list(range(30))
    for g, f in zip(groups, full, strict=True):
        assert g.hyps == (() if g.sent_id in (0, 2, 5) else f.hyps)
    trailing = list(read_nbest(path, n_sentences=33))
    assert trailing[30:] == [NBestGroup(30, ()), NBestGroup(31, ()), NBestGroup(32, ())]
    assert trailing[:30] == groups
    stats = nbest_stats(path)
    assert (stats.n_sentences, stats.n_missing, stats.missing_ids) == (30, 3, (0, 2, 5))
    assert stats.hyps_min == 0


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nbest"
    path.write_bytes(b"")
    assert list(read_nbest(path)) == []
    assert list(read_nbest(path, n_sentences=2)) == [NBestGroup(0, ()), NBestGroup(1, ())]
    assert nbest_stats(path).n_hypotheses == 0


# --- round trips ------------------------------------------------------------------------------


def test_crlf_lines_are_read(tmp_path: Path) -> None:
    path = write_text(tmp_path / "crlf.nbest", real_lines()[:20], newline="\r\n")
    assert all_hyps(path) == all_hyps(SLICE)[:20]


def test_old_style_labels(tmp_path: Path) -> None:
    lines = [
        "0 ||| das ist ein kleines haus ||| d: 0 lm: -12.3 tm: -1 -2.5 -3 -4 1 w: -5 ||| -4.42",
        "0 ||| das ist ein haus ||| d: -1 lm: -10.25 tm: -1 -2 -3 -4.75 1 w: -4 ||| -4.8",
        "1 ||| gut ||| d: 0 lm: -3 tm: -0.5 -0.5 -1 -1 1 w: -1 ||| -1",
    ]
    path = write_text(tmp_path / "old.nbest", lines)
    h = all_hyps(path)[0]
    assert [(f.name, f.style) for f in h.features] == [
        ("d", ":"),
        ("lm", ":"),
        ("tm", ":"),
        ("w", ":"),
    ]
    assert h.feature("tm") == (-1.0, -2.5, -3.0, -4.0, 1.0) and h.feature("w") == (-5.0,)
    out = tmp_path / "old.out"
    write_nbest(out, read_nbest(path))
    assert out.read_text().splitlines() == lines
    assert nbest_stats(path).feature_labels == ("d", "lm", "tm", "w")


def unlabel(line: str) -> str:
    """A real line as Moses writes it with -labeled-n-best-list false."""
    sid, surface, feats, total = line.split(" ||| ")
    values = " ".join(t for t in feats.split() if not t.endswith("="))
    return f"{sid} ||| {surface} ||| {values} ||| {total}"


def test_unlabelled_lists(tmp_path: Path) -> None:
    lines = [unlabel(line) for line in real_lines()[:45]]
    path = write_text(tmp_path / "unlabelled.nbest", lines)
    hyps = all_hyps(path)
    labelled = all_hyps(SLICE)[:45]
    for h, ref in zip(hyps, labelled, strict=True):
        assert [f.name for f in h.features] == [f"F{i}" for i in range(14)]
        assert all(f.style == "" for f in h.features)
        assert h.dense_vector() == ref.dense_vector() and h.total == ref.total
    out = tmp_path / "out.nbest"
    write_nbest(out, read_nbest(path), extra=lambda h: [Feature("LSTM0", (-9.83,))])
    assert out.read_text().splitlines() == [add_to_features(line, "-9.83") for line in lines]
    stats = nbest_stats(path)
    assert stats.unlabelled_features and stats.feature_labels[-1] == "F13"
    assert_error(path, 1, "before any label", labeled=True)
    assert not nbest_stats(SLICE).unlabelled_features


def test_extra_fields_survive(tmp_path: Path) -> None:
    seg = " ||| 0-1=0-2 2-4=3-5 5-11=6-12 ||| 0-0 1-1 2-3 3-2"
    lines = [line + seg for line in real_lines()[:30]]
    path = write_text(tmp_path / "extra.nbest", lines)
    hyps = all_hyps(path)
    assert all(h.extra == ("0-1=0-2 2-4=3-5 5-11=6-12", "0-0 1-1 2-3 3-2") for h in hyps)
    assert [h.total for h in hyps] == [h.total for h in all_hyps(SLICE)[:30]]
    out = tmp_path / "out.nbest"
    write_nbest(out, read_nbest(path), extra=lambda h: [Feature("LSTM0", (-1.5,))])
    got = out.read_text().splitlines()
    assert got == [add_to_features(line, "LSTM0= -1.5") for line in lines]
    assert nbest_stats(path).n_with_extra_fields == 30


def test_empty_surface(tmp_path: Path) -> None:
    line = real_lines()[3]
    sid, _, rest = line.split(" ||| ", 2)
    moses_empty = f"{sid} |||  ||| {rest}"  # surface "" plus Moses' trailing space
    squeezed = f"{sid} ||| ||| {rest}"  # written without the second space
    path = write_text(tmp_path / "empty.nbest", [line, moses_empty, squeezed])
    hyps = all_hyps(path)
    assert [len(h.tokens) > 0 for h in hyps] == [True, False, False]
    assert hyps[1].surface == "" and hyps[1].features == hyps[0].features
    assert hyps[2] == hyps[1]
    out = tmp_path / "out.nbest"
    write_nbest(out, read_nbest(path))
    assert out.read_text().splitlines() == [moses_to_ours(line), moses_empty, moses_empty]
    assert nbest_stats(path).n_empty_surfaces == 2


def test_surface_keeps_other_whitespace(tmp_path: Path) -> None:
    """Tokens split at ASCII spaces only: other (printable) spaces stay inside a token; a tab
    is a control character and is refused with its line and column."""
    line = real_lines()[0].replace("chapeau orange", "chapeau\u00a0orange\u2009vif", 1)
    line = line.replace("Un homme", " Un  homme", 1)
    path = write_text(tmp_path / "ws.nbest", [line])
    (h,) = all_hyps(path)
    assert h.tokens[:4] == ("Un", "homme", "avec", "un")
    assert "chapeau\u00a0orange\u2009vif" in h.tokens
    write_text(path, [line.replace("\u2009", "\t")])
    with pytest.raises(NBestFormatError, match=r"ws\.nbest:1: .*U\+0009 at column"):
        all_hyps(path)


def test_sparse_features(tmp_path: Path) -> None:
    lines = [
        add_to_features(line, "tgtWord_maison= 1 srcWord_house= 2") for line in real_lines()[:25]
    ]
    path = write_text(tmp_path / "sparse.nbest", lines)
    hyps = all_hyps(path)
    for h, ref in zip(hyps, all_hyps(SLICE), strict=False):
        assert h.sparse == (("tgtWord_maison", 1.0), ("srcWord_house", 2.0))
        assert h.features == ref.features and h.feature("srcWord_house") == (2.0,)
    # a label with '_' and several values stays a dense group; labels may vary line to line
    varied = [*lines[:20], lines[20].replace("srcWord_house= 2", "srcWord_house= 2 3")]
    write_text(path, varied)
    last = all_hyps(path)[-1]
    assert last.features[-1] == Feature("srcWord_house", (2.0, 3.0))
    stats = nbest_stats(path)
    assert not stats.labels_consistent and stats.first_label_change_line == 21
    assert stats.n_sparse_lines == 21
    out = tmp_path / "out.nbest"
    write_nbest(out, read_nbest(path))
    assert out.read_text().splitlines() == varied


# --- the column block reader ------------------------------------------------------------------


def concat_blocks(path: Path, **kwargs: object) -> dict[str, list[object]]:
    """The columns of all blocks of a file, concatenated (rows as plain Python values)."""
    out: dict[str, list[object]] = {
        k: [] for k in ("sent_ids", "lines", "surfaces", "dense", "totals", "raw", "extra")
    }
    for b in nbest_reader.read_nbest_blocks(path, **kwargs):  # type: ignore[arg-type]
        assert b.sent_ids.dtype == np.int64 and b.lines.dtype == np.int64
        assert b.dense.dtype == np.float64 and b.totals.dtype == np.float64
        assert b.dense.shape == (len(b), b.layout.width) and b.totals.shape == (len(b),)
        assert len(b.surfaces) == len(b.raw_features) == len(b.extra) == len(b.sparse) == len(b)
        out["sent_ids"] += b.sent_ids.tolist()
        out["lines"] += b.lines.tolist()
        out["surfaces"] += b.surfaces
        out["dense"] += [tuple(r) for r in b.dense.tolist()]
        out["totals"] += b.totals.tolist()
        out["raw"] += list(zip(b.raw_features, b.raw_totals, strict=True))
        out["extra"] += b.extra
    return out


def test_blocks_hold_the_hypotheses_as_columns() -> None:
    blocks = list(nbest_reader.read_nbest_blocks(SLICE))
    assert [b.layout.names for b in blocks] == [LABELS]
    assert blocks[0].layout.sizes == (6, 1, 1, 1, 1, 4) and blocks[0].layout.width == 14
    cols = concat_blocks(SLICE)
    hyps = all_hyps(SLICE)
    assert cols["sent_ids"] == [h.sent_id for h in hyps]
    assert cols["lines"] == list(range(1, 592))
    assert cols["surfaces"] == [h.surface for h in hyps]
    assert cols["dense"] == [h.dense_vector() for h in hyps]
    assert cols["totals"] == [h.total for h in hyps]
    assert cols["raw"] == [(h.raw_features, h.raw_total) for h in hyps]
    first = real_lines()[0].split(" ||| ")
    assert cols["dense"][0] == tuple(float(t) for t in first[2].split() if not t.endswith("="))


def test_block_size_does_not_change_the_columns(tmp_path: Path) -> None:
    """Chunks of any size (sentences split across them) give the same rows; so does max_hyps,
    whose count goes on across chunks."""
    lines = [
        f"{int(line.split(' ||| ', 1)[0]) + 30 * k} ||| {line.split(' ||| ', 1)[1]}"
        for k in range(3)
        for line in real_lines()
    ]
    path = write_text(tmp_path / "x3.nbest.gz", lines)
    whole = concat_blocks(path)
    assert len(whole["surfaces"]) == 3 * 591
    for size in (300, 4096, 50_000):
        assert concat_blocks(path, block_bytes=size) == whole
        top = concat_blocks(path, block_bytes=size, max_hyps=3)
        expected = [
            i for i, sid in enumerate(whole["sent_ids"]) if whole["sent_ids"][:i].count(sid) < 3
        ]
        assert top["lines"] == [whole["lines"][i] for i in expected]
        assert top["dense"] == [whole["dense"][i] for i in expected]


def test_mixed_lines_give_what_each_line_says(tmp_path: Path) -> None:
    """Lines the whole-chunk parser cannot take (other field counts, spacing, a label order or
    numbers it does not read) sit among ordinary ones; every line reads as a naive parse says."""
    lines = list(real_lines()[:40])
    lines[3] = lines[3] + " ||| 0-1=0-2 ||| 0-0 1-1"  # extra fields on one line
    lines[5] = lines[5].replace(" ||| ", " |||  ", 1)  # a leading space in the surface
    lines[7] = lines[7].replace("Distortion0= 0", "Distortion0= -0")  # negative zero
    lines[9] = re.sub(r"LM0= \S+", "LM0= 1_0", lines[9])  # a value only float() reads
    lines[11] = re.sub(r"(LM0= \S+) (WordPenalty0= \S+)", r"\2 \1", lines[11])  # labels swapped
    lines[13] = lines[13].replace("TranslationModel0= ", "TranslationModel0=   ", 1)
    lines[15] = re.sub(r" \|\|\| -(\S+)$", r" ||| +\1", lines[15])  # total written with a +
    path = write_text(tmp_path / "mixed.nbest", lines)
    hyps = all_hyps(path)
    for line, h in zip(lines, hyps, strict=True):
        sid, surface, feats, total, *extra = line.split(" ||| ")
        toks = feats.split()
        assert h.sent_id == int(sid) and h.tokens == tuple(surface.split())
        assert [math.copysign(1, v) for v in h.dense_vector()] == [
            math.copysign(1, float(t)) for t in toks if not t.endswith("=")
        ]
        assert list(h.dense_vector()) == [float(t) for t in toks if not t.endswith("=")]
        assert [f.name + "=" for f in h.features] == [t for t in toks if t.endswith("=")]
        assert h.total == float(total) and h.extra == tuple(extra) and h.raw_features == feats
    assert hyps[9].feature("LM0") == (10.0,)
    assert math.copysign(1, hyps[7].feature("Distortion0")[0]) == -1
    later_zero = next(i for i in range(8, 40) if " Distortion0= 0 " in lines[i])
    assert math.copysign(1, hyps[later_zero].feature("Distortion0")[0]) == 1  # not shared
    assert nbest_stats(path).first_label_change_line == 12
    cols = concat_blocks(path)
    assert cols["surfaces"] == [h.surface for h in hyps]
    assert cols["extra"][3] == ("0-1=0-2", "0-0 1-1")
    # one line per chunk: the whole-chunk parser takes the lines it can, with the same result
    assert concat_blocks(path, block_bytes=100) == cols
    by_line = [
        h
        for g in nbest_reader._groups(nbest_reader.read_nbest_blocks(path, block_bytes=100), None)
        for h in g.hyps
    ]
    assert by_line == hyps and math.copysign(1, by_line[7].feature("Distortion0")[0]) == -1


def test_ids_written_differently_name_one_sentence(tmp_path: Path) -> None:
    lines = [*lines_of(0)[:2], *lines_of(1)[:3]]
    lines[1] = "00" + lines[1][1:]  # "00" after "0": still sentence 0
    groups = list(read_nbest(write_text(tmp_path / "ids.nbest", lines)))
    assert [len(g.hyps) for g in groups] == [2, 3]


def test_stopping_early_ends_the_gzip_reader_thread(tmp_path: Path) -> None:
    path = write_text(tmp_path / "x.nbest.gz", real_lines())
    before = {t.ident for t in threading.enumerate()}
    blocks = nbest_reader.read_nbest_blocks(path, block_bytes=2048)
    next(blocks)
    blocks.close()  # type: ignore[attr-defined]
    assert {t.ident for t in threading.enumerate()} == before  # no decompression thread left
    assert sum(len(b) for b in nbest_reader.read_nbest_blocks(path, block_bytes=2048)) == 591
    assert {t.ident for t in threading.enumerate()} == before


def test_gzip_members_padding_and_damage(tmp_path: Path) -> None:
    """Concatenated gzip members (as `cat a.gz b.gz` makes) with zero padding read as one file; a
    damaged checksum or a cut file is reported as corrupt gzip data."""
    data = "".join(line + "\n" for line in real_lines()).encode()
    cut = data.index(b"\n", len(data) // 2) + 1
    path = tmp_path / "members.nbest.gz"
    path.write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:]) + bytes(16))
    assert list(read_nbest(path)) == list(read_nbest(SLICE))
    damaged = bytearray(gzip.compress(data))
    damaged[-6] ^= 0xFF  # inside the CRC-32 of the trailer
    path.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="corrupt gzip"):
        list(read_nbest(path))
    path.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(InputError, match="corrupt gzip"):
        list(read_nbest(path))


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.7g}"),
    st.from_regex(r"[+-]?[0-9]{0,25}(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.text(alphabet="0123456789.eE+-_xnaifINF", min_size=1, max_size=12),
)


def _float_or_none(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


@pytest.mark.parametrize("arrow", [True, False], ids=["pyarrow", "pandas"])
@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(NUMBER_TEXT, min_size=3, max_size=3), min_size=1, max_size=6))
def test_number_reader_reads_like_float(arrow: bool, rows: list[list[str]]) -> None:
    """The fast column reader (pyarrow, or pandas without it) returns exactly what float()
    returns, or None (the line parser decides) when a token is not a number float() reads the
    same way; it never returns a value float() would not."""
    text = "\n".join(f"L= {a} M= {b} {c}" for a, b, c in rows)
    with contextlib.ExitStack() as stack:
        if not arrow:  # as on an install without pyarrow
            stack.enter_context(mock.patch.object(nbest_reader, "_arrow_csv", None))
        got = nbest_reader.read_floats(text.encode(), len(rows), [1, 3, 4])
    want = [[_float_or_none(t) for t in row] for row in rows]
    if got is None:
        return
    for got_row, want_row in zip(got.tolist(), want, strict=True):
        for g, w in zip(got_row, want_row, strict=True):
            assert w is not None
            assert g == w or (math.isnan(g) and math.isnan(w))


def test_number_reader_on_the_real_list_equals_float() -> None:
    """Every feature value and total of the real slice as float() reads it (fast path taken)."""
    blocks = list(nbest_reader.read_nbest_blocks(SLICE))
    for b in blocks:
        for row, raw in zip(b.dense.tolist(), b.raw_features, strict=True):
            values = [float(t) for t in raw.split() if not t.endswith("=")]
            assert row == values
        assert [float(t) for t in b.raw_totals] == b.totals.tolist()
