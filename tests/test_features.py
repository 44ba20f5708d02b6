"""Feature names: one per model, numbered within its kind, readable by Moses' tuners as dense."""

from __future__ import annotations

from nbest_rescore.features import BASELINE, LENGTH, MODEL_PREFIX, model_features
from nbest_rescore.nbest_reader import Feature, Hypothesis, read_nbest
from nbest_rescore.nbest_writer import format_hypothesis


def test_one_name_per_model_without_underscores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    names = model_features(["lstm", "lstm", "lstm"])
    assert names == ["LSTM0", "LSTM1", "LSTM2"]
    assert all("_" not in n for n in [*names, BASELINE, LENGTH, *MODEL_PREFIX.values()])
    feats = tuple(Feature(n, (-1.5,)) for n in [*names, LENGTH, BASELINE])
    path = tmp_path / "x.nbest"
    path.write_text(format_hypothesis(Hypothesis(0, ("a",), feats, (), -2.0)) + "\n")
    (hyp,) = next(iter(read_nbest(path))).hyps
    assert [f.name for f in hyp.features] == [*names, LENGTH, BASELINE] and not hyp.sparse
