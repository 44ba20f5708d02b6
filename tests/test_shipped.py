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


def test_run_uses_the_models_the_shipped_weights_were_tuned_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped directory may hold a model the weights do not weigh (a translation-only one):
    `rescore run` takes the models `weights.json` names, in its order; all without the record."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    for name in ("a.pt", "b.pt", "c.pt"):
        (tmp_path / name).write_bytes(b"")
    weights = {"system": "tuned", "weights": {"LSTM0": 1.0}, "tuning": {}}
    (tmp_path / "weights.json").write_text(json.dumps(weights))
    assert shipped_models().run_models == shipped_models().models
    weights["tuning"] = {"models": [{"feature": "LSTM0", "name": "c.pt", "sha256": "x"},
                                    {"feature": "R2L0", "name": "a.pt", "sha256": "y"}]}  # fmt: skip
    (tmp_path / "weights.json").write_text(json.dumps(weights))
    assert shipped_models().run_models == (tmp_path / "c.pt", tmp_path / "a.pt")
    (tmp_path / "c.pt").unlink()
    with pytest.raises(InputError, match=r"c\.pt is not in"):
        shipped_models().run_models  # noqa: B018


def test_the_shipped_weights_name_the_shipped_run_models() -> None:
    found = shipped_models()
    names = [p.name for p in found.run_models]
    assert names == ["att-rev-1.pt", "att-r2l.pt"]
