"""Tests of the Moses n-best writer: real Multi30k lines round-trip byte for byte, appended
features, number formatting, atomic writes, and format-then-parse properties."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbest_lines import LABELS, SLICE, all_hyps, lines_of, moses_to_ours, real_lines, write_text

from nbest_rescore.fileio import CONTROL_CHARS
from nbest_rescore.nbest_reader import Feature, Hypothesis, read_nbest
from nbest_rescore.nbest_stats import nbest_stats
from nbest_rescore.nbest_writer import format_hypothesis, format_number, write_nbest

# --- round trips ------------------------------------------------------------------------------


def test_round_trip_real_lines_plain_and_gz(tmp_path: Path) -> None:
    expected = moses_to_ours("".join(line + "\n" for line in real_lines()))
    assert expected.count("\n") == 591 and "  |||" not in expected
    for name in ("out.nbest", "out.nbest.gz"):
        out = tmp_path / name
        write_nbest(out, read_nbest(SLICE))
        data = gzip.decompress(out.read_bytes()) if name.endswith(".gz") else out.read_bytes()
        assert data.decode() == expected
        assert list(read_nbest(out)) == list(read_nbest(SLICE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nbest", "out.nbest.gz"]


def test_writer_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out.nbest"
    out.write_text("old\n")

    def failing() -> object:
        yield from list(read_nbest(SLICE))[:3]
        raise RuntimeError("scorer crashed")

    with pytest.raises(RuntimeError):
        write_nbest(out, failing())  # type: ignore[arg-type]
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nbest"]


def test_appending_a_feature_to_every_line(tmp_path: Path) -> None:
    out = tmp_path / "with-lstm.nbest.gz"
    write_nbest(out, read_nbest(SLICE), extra=lambda h: [Feature("LSTM0", (-9.83, -10.1))])
    before = all_hyps(SLICE)
    after = all_hyps(out)
    assert len(after) == len(before) == 591
    for h, ref in zip(after, before, strict=True):
        assert h.features[-1] == Feature("LSTM0", (-9.83, -10.1), "=")
        assert h.features[:-1] == ref.features and h.total == ref.total
        assert h.dense_vector() == (*ref.dense_vector(), -9.83, -10.1)
        assert h.raw_features == ref.raw_features + " LSTM0= -9.83 -10.1"
    stats = nbest_stats(out)
    assert stats.feature_labels == (*LABELS, "LSTM0") and stats.labels_consistent


def test_appended_feature_names_are_checked() -> None:
    h = all_hyps(SLICE)[0]
    for bad in ("LSTM_0", "LSTM 0", "LSTM0=", ""):
        with pytest.raises(ValueError):
            format_hypothesis(h, [Feature(bad, (1.0,))])
    assert format_hypothesis(h, [Feature("d", (1.0, 2.0), ":")]).endswith(" d: 1 2 ||| -1.78174")


def test_writer_formats_replaced_fields() -> None:
    h = all_hyps(SLICE)[0]
    assert format_hypothesis(h) == moses_to_ours(real_lines()[0])
    lm = Feature("LM0", (-123.456789012,))
    changed = dataclasses.replace(
        h, features=(*h.features[:2], lm, *h.features[3:]), total=-100.123456789
    )
    line = format_hypothesis(changed)
    assert " LM0= -123.4568 " in line and line.endswith(" ||| -100.1235")
    assert " LexicalReordering0= -1.07705 0 0 -1.05277 0 0 Distortion0= 0 " in line
    built = Hypothesis(7, ("a", "b"), (Feature("A", (1e-5, 2.0)),), (("s_t", 0.5),), -1.0)
    assert format_hypothesis(built) == "7 ||| a b ||| A= 1e-05 2 s_t= 0.5 ||| -1"


def test_format_number() -> None:
    assert format_number(-100.12345678) == "-100.1235"
    assert format_number(-13.0) == "-13"
    assert format_number(0.0) == "0"
    assert format_number(1e-7) == "1e-07"
    assert format_number(-9.83) == "-9.83"
    assert format_number(float("-inf")) == "-inf"


def test_write_to_stdout(tmp_path: Path) -> None:
    code = (
        "from nbest_rescore.nbest_reader import read_nbest\n"
        "from nbest_rescore.nbest_writer import write_nbest\n"
        f"write_nbest('-', read_nbest({str(SLICE)!r}, max_hyps=1))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, text=True
    ).stdout
    assert out.splitlines() == [moses_to_ours(lines_of(i)[0]) for i in range(30)]


# --- property tests ---------------------------------------------------------------------------


def no_control(text: str) -> bool:
    """Text the reader takes: no control, format or separator character (`fileio.CONTROL_CHARS`;
    tests/test_fuzz.py checks that such characters are refused)."""
    return CONTROL_CHARS.search(text) is None


TOKEN = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="|"
    ),
    min_size=1,
    max_size=6,
).filter(no_control)
NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True)
NUMBER = st.floats(allow_nan=False, width=64)
FEATURES = st.lists(
    st.builds(
        Feature,
        NAME,
        st.lists(NUMBER, max_size=5).map(tuple),
        st.sampled_from(["=", ":"]),
    ),
    max_size=6,
)
SPARSE = st.lists(
    st.tuples(st.from_regex(r"[A-Za-z]+_[A-Za-z0-9]+", fullmatch=True), NUMBER), max_size=3
)
EXTRA = st.lists(  # no surrogates: a file holds UTF-8
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="|\n\r"),
        max_size=10,
    ).filter(no_control),
    max_size=2,
)


def read_one_line(line: str) -> Hypothesis:
    """Parse one line through a real file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_text(Path(tmp) / "one.nbest", [line])
        *gaps, group = read_nbest(path)
        assert all(not g.hyps for g in gaps)
        (h,) = group.hyps
        return h


@settings(max_examples=100, deadline=None)
@given(
    sent_id=st.integers(0, 40),
    tokens=st.lists(TOKEN, max_size=8),
    features=FEATURES,
    sparse=SPARSE,
    total=NUMBER,
    extra=EXTRA,
)
def test_format_then_parse(
    sent_id: int,
    tokens: list[str],
    features: list[Feature],
    sparse: list[tuple[str, float]],
    total: float,
    extra: list[str],
) -> None:
    h = Hypothesis(sent_id, tuple(tokens), tuple(features), tuple(sparse), total, tuple(extra))
    line = format_hypothesis(h)
    got = read_one_line(line)

    def rounded(v: float) -> float:
        return float(format_number(v))

    assert got.sent_id == sent_id and got.tokens == tuple(tokens) and got.extra == tuple(extra)
    assert [(f.name, f.style) for f in got.features] == [(f.name, f.style) for f in features]
    assert [f.values for f in got.features] == [tuple(map(rounded, f.values)) for f in features]
    assert got.sparse == tuple((n, rounded(v)) for n, v in sparse)
    assert got.total == rounded(total)
    assert format_hypothesis(got) == line  # idempotent


NUMBER_TEXT = st.one_of(
    NUMBER.map(repr), NUMBER.map("{:.6g}".format), st.integers(-(10**6), 10**6).map(str)
)


@settings(max_examples=100, deadline=None)
@given(
    tokens=st.lists(TOKEN, max_size=8),
    groups=st.lists(
        st.tuples(NAME, st.sampled_from("=:"), st.lists(NUMBER_TEXT, min_size=1, max_size=4)),
        max_size=5,
    ),
    total=NUMBER_TEXT,
)
def test_raw_text_round_trips(
    tokens: list[str], groups: list[tuple[str, str, list[str]]], total: str
) -> None:
    feats = " ".join(f"{name}{style} {' '.join(vals)}" for name, style, vals in groups)
    line = f"3 ||| {' '.join(tokens)} ||| {feats} ||| {total}"
    h = read_one_line(line)
    assert format_hypothesis(h) == line
