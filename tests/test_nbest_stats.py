"""Tests of `nbest_stats` (what `rescore stats` reports) on the real Moses slice."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbest_lines import LABELS, SLICE, lines_of, write_text

from nbest_rescore.nbest_stats import nbest_stats


def test_stats_of_the_real_slice() -> None:
    s = nbest_stats(SLICE)
    assert (s.n_sentences, s.n_hypotheses, s.n_missing, s.missing_ids) == (30, 591, 0, ())
    assert (s.hyps_min, s.hyps_median, s.hyps_max) == (11, 20.0, 20)
    assert s.feature_labels == LABELS
    assert s.distinct_ratio == 1.0  # Moses was run with "distinct"
    assert s.labels_consistent and s.first_label_change_line is None
    assert (s.n_sparse_lines, s.n_empty_surfaces, s.n_with_extra_fields) == (0, 0, 0)


def test_stats_distinct_ratio(tmp_path: Path) -> None:
    lines = [*lines_of(0)[:4], lines_of(0)[0].replace("-1.78174", "-2"), *lines_of(1)[:5]]
    path = write_text(tmp_path / "dup.nbest", lines)
    assert nbest_stats(path).distinct_ratio == pytest.approx(9 / 10)
