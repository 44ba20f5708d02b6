"""Where the shipped default models are: `rescore translate` and `rescore run` use them when no
`-m` is given.

The models live in the repository's `data/models/` (every `*.pt` there, in name order, with the
`weights.json` tuned for them). A wheel or a non-editable `pip install .` copies that directory
into the package as `nbest_rescore/models/` (see `pyproject.toml`), so the lookup tries the
installed copy first and the source checkout second. `NBEST_RESCORE_MODELS` names another
directory of the same shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nbest_rescore.errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent
ENV_VAR = "NBEST_RESCORE_MODELS"


@dataclass(frozen=True)
class ShippedModels:
    directory: Path
    models: tuple[Path, ...]
    weights: Path | None
    """`weights.json` of the directory: interpolation weights tuned for these models."""

    @property
    def run_models(self) -> tuple[Path, ...]:
        """The models `rescore run` scores with: those the shipped `weights.json` was tuned for
        (its `tuning.models`, by file name), else every model of the directory."""
        import json

        if self.weights is None:
            return self.models
        tuning = json.loads(self.weights.read_text(encoding="utf-8")).get("tuning") or {}
        named = [m["name"] for m in tuning.get("models") or []]
        if not named:
            return self.models
        missing = [n for n in named if not (self.directory / n).is_file()]
        if missing:
            raise InputError(
                f"the shipped weights were tuned for {', '.join(named)}, but "
                f"{', '.join(missing)} is not in {self.directory}"
            )
        return tuple(self.directory / n for n in named)


def model_dirs() -> list[Path]:
    """The directories searched, in order."""
    dirs = [PACKAGE_DIR / "models", PACKAGE_DIR.parent / "data" / "models"]
    env = os.environ.get(ENV_VAR)
    return [Path(env)] if env else dirs


def shipped_models() -> ShippedModels:
    """The first searched directory that holds `*.pt` files; InputError when none does."""
    for d in model_dirs():
        models = tuple(sorted(d.glob("*.pt")))
        if models:
            weights = d / "weights.json"
            return ShippedModels(d, models, weights if weights.is_file() else None)
    searched = ", ".join(str(d) for d in model_dirs())
    raise InputError(f"no default model found (searched {searched}); pass one with -m CKPT")
