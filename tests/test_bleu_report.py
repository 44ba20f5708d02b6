"""The BLEU section shared by the oracle and run reports, on the real slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbest_rescore.bleu_report import (
    bleu_section,
    definition,
    depth_limited,
    model_free_selections,
    significance_test,
)
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig, compute_hyp_stats, paired_bootstrap
from nbest_rescore.table import read_table

DATA = Path(__file__).parent / "data"


def test_depth_limited_stops_at_the_list_depth() -> None:
    assert depth_limited((1, 2, 5, 10, 20, 50, 100), 20) == (1, 2, 5, 10, 20)
    assert depth_limited((1, 2, 5, 10), 7) == (1, 2, 5, 7)
    assert depth_limited((1, 5), 1) == (1,)


def test_section_on_the_real_slice() -> None:
    table = read_table(DATA / "test2016.head30.top20.nbest.gz")
    hs = compute_hyp_stats(
        table.sentences(), read_lines(DATA / "test2016.head30.fr.gz"), BleuConfig()
    )
    # a system: every sentence's second hypothesis (where it has one)
    sel = {**model_free_selections(hs), "second": np.minimum(1, hs.counts - 1)}
    section = bleu_section(hs, sel, None)
    rows = section.systems.to_pandas().set_index("system")
    assert rows["p_value"].isna()["baseline"]
    p = paired_bootstrap(hs.rows(sel["baseline"]), hs.rows(sel["second"]))
    assert section.significance["second"]["p_value"] == pytest.approx(p)
    # oracles choose with the reference: bounds, given no p-value
    for bound in ("oracle", "oracle_sentence", "anti_oracle"):
        assert bound not in section.significance and rows["p_value"].isna()[bound]
    assert rows.loc["oracle", "delta_bleu"] > 0 > rows.loc["anti_oracle", "delta_bleu"]
    assert list(section.oracle_at_k) == ["1", "2", "5", "10", "20"]
    assert section.rank_histogram["rank"] == ["1", "2-5", "6-10", "11-20"]
    assert section.rank_histogram["baseline"] == [30, 0, 0, 0]
    assert significance_test()["p_floor"] == pytest.approx(1 / 1001)
    for system in [*sel, "lstm", "tuned", "given", "even_average", "even_average_raw", "LSTM1"]:
        assert definition(system)
