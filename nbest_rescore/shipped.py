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
