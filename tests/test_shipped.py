"""The shipped default models: found in the package, the checkout, or NBEST_RESCORE_MODELS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbest_rescore.errors import InputError
from nbest_rescore.shipped import ENV_VAR, shipped_models

REPO = Path(__file__).resolve().parent.parent


def test_the_checkout_ships_the_models_of_data_models() -> None:
    found = shipped_models()
    assert found.models == tuple(sorted((REPO / "data" / "models").glob("*.pt")))
    assert found.weights == REPO / "data" / "models" / "weights.json"
    shipped = json.loads(found.weights.read_text())
    assert shipped["system"] == "tuned" and set(shipped["weights"]) == {
        "Baseline0", "LSTM0", "R2L0", "Length0"
    }  # fmt: skip
    assert "/" not in json.dumps(shipped["tuning"])  # no path of the machine that tuned them


def test_any_directory_of_models_in_name_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(InputError, match="no default model"):
        shipped_models()
    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / "a.pt").write_bytes(b"")
    found = shipped_models()
    assert found.models == (tmp_path / "a.pt", tmp_path / "b.pt") and found.weights is None
