"""Frame, the report tables' type: written as pandas writes and reads them back."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from nbest_rescore.frame import Frame


def test_csv_and_json_read_back_by_pandas_as_the_same_table() -> None:
    rows = [
        {"system": "baseline", "bleu": np.float64(57.53), "p_value": None, "n": np.int64(3)},
        {"system": "lstm, tuned", "bleu": 1 / 3, "p_value": 0.000999, "n": 4, "ok": True},
    ]
    f = Frame.from_records(rows)
    assert f.columns == ["system", "bleu", "p_value", "n", "ok"] and len(f) == 2
    expected = pd.DataFrame(rows)
    got = pd.read_csv(io.StringIO(f.to_csv()))
    pd.testing.assert_frame_equal(got.drop(columns="ok"), expected.drop(columns="ok"))
    assert got["ok"].isna()[0] and bool(got["ok"][1])
    records = json.loads(f.to_json())
    assert records[0] == {"system": "baseline", "bleu": 57.53, "p_value": None, "n": 3, "ok": None}
    assert records[1]["bleu"] == 1 / 3  # full precision, not pandas' 10 digits
    assert Frame.of(expected).records()[0]["p_value"] is None  # NaN comes in as missing
    assert Frame.of(f.to_pandas()) == Frame.of(expected)


def test_text_columns_selection_and_errors() -> None:
    f = Frame({"rank": ["1", "2-5"], "a": [3, 0], "flag": [True, False], "none": [None, None]})
    assert [f.is_text(c) for c in f.columns] == [True, False, True, True]
    assert f[["a", "rank"]].columns == ["a", "rank"] and f["a"] == [3, 0]
    assert list(f.rows()) == [("1", 3, True, None), ("2-5", 0, False, None)]
    with pytest.raises(ValueError, match="one length"):
        Frame({"a": [1, 2], "b": [1]})
    assert len(Frame({})) == 0 and Frame({}).to_csv() == "\n"
