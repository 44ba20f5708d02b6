"""Dynamic int8 quantization of a loaded model for CPU inference (`--int8`).

The LSTM and linear layers' weights become int8, activations are quantized on the fly per batch
(`torch.ao.quantization.quantize_dynamic`); embeddings stay fp32. Scores change slightly, so an
int8 bundle carries its own cache identity (`sha256` + `INT8_SUFFIX`).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn

from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.errors import InputError

INT8_SUFFIX = "+int8"


def check_int8_device(device: str | torch.device) -> None:
    """int8 dynamic quantization has CPU kernels only: any other device is an input error."""
    if torch.device(device).type != "cpu":
        raise InputError(f"--int8 runs on the CPU only, not on device {str(device)!r}")


def quantize_int8(bundle: ModelBundle) -> ModelBundle:
    """A copy of `bundle` whose LSTM and linear layers compute in int8 (CPU); the input is kept."""
    check_int8_device(next(bundle.model.parameters()).device)
    with warnings.catch_warnings():  # torch >= 2.10 flags torch.ao as moving to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = torch.ao.quantization.quantize_dynamic(
            bundle.model, {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )
    return dataclasses.replace(bundle, model=model.eval(), sha256=bundle.sha256 + INT8_SUFFIX)


def maybe_int8(bundles: list[ModelBundle], int8: bool) -> list[ModelBundle]:
    """`bundles` quantized to int8 when `int8`, else unchanged."""
    return [quantize_int8(b) for b in bundles] if int8 else bundles
