"""Checks at the edges (nbest_rescore.validate): option bounds, and the number and length checks
of a real n-best table, whose errors name the exact line of the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.table import read_table
from nbest_rescore.validate import (
    OptionError,
    check_finite,
    check_lengths,
    check_source_lengths,
    line_of,
    option_above,
    option_at_least,
    option_at_most,
    option_finite,
    option_in_range,
)

VALUES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))


def raises(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except OptionError as exc:
        assert str(exc).startswith("--opt must be")  # names the option
        assert isinstance(exc, ValueError)
        return True
    return False


@settings(max_examples=100, deadline=None)
@given(value=VALUES, bound=st.integers(-3, 3))
def test_option_checks_refuse_exactly_the_values_out_of_range(
    value: float | None, bound: int
) -> None:
    checks = [
        (option_finite, (), lambda v: False),
        (option_at_least, (bound,), lambda v: v < bound),
        (option_above, (bound,), lambda v: v <= bound),
        (option_at_most, (bound,), lambda v: v > bound),
        (option_in_range, (bound, bound + 2), lambda v: not bound <= v < bound + 2),
    ]
    for check, bounds, out_of_range in checks:
        # An option not given is never checked.
        want = value is not None and (not math.isfinite(value) or out_of_range(value))
        assert raises(check, "--opt", value, *bounds) == want, check.__name__


def test_line_of_finds_every_hypothesis_of_the_real_list(slice_paths: dict[str, Path]) -> None:
    lines = read_lines(slice_paths["nbest"])
    seen: dict[int, int] = {}
    for i, line in enumerate(lines, start=1):
        sid = int(line.split(" ||| ")[0])
        assert line_of(slice_paths["nbest"], sid, seen.get(sid, 0)) == i
        seen[sid] = seen.get(sid, 0) + 1
    assert line_of(slice_paths["nbest"], 0, 20) is None  # sentence 0 has 20 hypotheses
    assert line_of(slice_paths["nbest"], 30, 0) is None


def test_real_table_passes_the_checks(slice_paths: dict[str, Path]) -> None:
    t = read_table(slice_paths["nbest"])
    check_finite(t.names, t.values, t.offsets, slice_paths["nbest"])
    n_tokens = np.array([len(s.split()) for s in t.surfaces])
    check_lengths(n_tokens, t.offsets, int(n_tokens.max()), slice_paths["nbest"])
    src = read_lines(slice_paths["src"])
    check_source_lengths(src, max(len(s.split()) for s in src), slice_paths["src"])


@pytest.mark.parametrize(("row", "col"), [(0, 0), (37, 5), (590, -1)])
def test_a_non_finite_number_names_its_line(
    slice_paths: dict[str, Path], row: int, col: int
) -> None:
    t = read_table(slice_paths["nbest"])
    values = t.values.copy()
    values[row, col] = math.nan if row % 2 else -math.inf
    with pytest.raises(InputError) as info:
        check_finite(t.names, values, t.offsets, slice_paths["nbest"])
    err = info.value
    assert err.path == str(slice_paths["nbest"]) and err.line == row + 1  # rows are file lines
    assert t.names[col] in str(err)


def test_the_first_too_long_hypothesis_names_its_line(slice_paths: dict[str, Path]) -> None:
    t = read_table(slice_paths["nbest"])
    n_tokens = np.array([len(s.split()) for s in t.surfaces])
    limit = int(np.sort(n_tokens)[-3])  # a few hypotheses are longer than this
    first = int(np.flatnonzero(n_tokens > limit)[0])
    with pytest.raises(InputError, match=f"of {n_tokens[first]} tokens.*--max-len {limit}") as e:
        check_lengths(n_tokens, t.offsets, limit, slice_paths["nbest"])
    assert e.value.line == first + 1


def test_a_too_long_source_line_names_its_line(slice_paths: dict[str, Path]) -> None:
    src = read_lines(slice_paths["src"])
    longest = max(range(len(src)), key=lambda i: (len(src[i].split()), -i))
    limit = len(src[longest].split()) - 1
    first = next(i for i, s in enumerate(src) if len(s.split()) > limit)
    with pytest.raises(InputError, match=f"source sentence of {limit + 1} words") as e:
        check_source_lengths(src, limit, slice_paths["src"])
    assert (e.value.path, e.value.line) == (str(slice_paths["src"]), first + 1)
