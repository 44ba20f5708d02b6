"""Training of the LSTM encoder-decoder: the paper's SGD recipe by default, exact resume, DDP.

One entry point, `train(cfg, progress)`. It trains from a prepared-data directory (`corpus.py`,
read by rows, never loaded whole: `cfg.data_dir`); given text files (`cfg.train_src`, ...) it first prepares them
into `data_dir` or OUT_DIR/data (`prepare.py`; a no-op when up to date), so there is one training
path. The loss is summed over target tokens and divided by the number of sentences in the
(global) batch, so one process and N torchrun processes take the same step. Checkpoints hold the
usable model and, under "train_state", everything needed to resume exactly: optimiser state, RNG
states, step, data position (epoch, next batch index), batch order version and the prepared
data's key.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nbest_rescore import distributed as dist
from nbest_rescore.checkpoint import model_payload, read_checkpoint, save_checkpoint
from nbest_rescore.corpus import DataSettings, EncodedCorpus, PreparedData
from nbest_rescore.data import (
    BATCH_ORDER,
    BatchingConfig,
    EpochBatches,
    collate,
    legacy_batches,
    make_batches,
    shard,
)
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.fileio import atomic_write
from nbest_rescore.model import ATTENTION, Attention, ModelConfig, Seq2Seq, shift_right
from nbest_rescore.model import PRESETS as MODEL_PRESETS
from nbest_rescore.output_guard import OutDir, check_outputs
from nbest_rescore.prepare import PrepareConfig, prepare
from nbest_rescore.progress import QUIET, ProgressSettings, bar
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.validate import (
    MAX_THREADS,
    option_above,
    option_at_least,
    option_at_most,
    option_in_range,
)
from nbest_rescore.vocab import PAD

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
LOG = "log.jsonl"

# Training presets; `TrainConfig.preset(name)` pairs each with the model preset of the same name.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Sutskever et al. 2014: SGD 0.7, batch 128, halve lr every half epoch after 5, 7.5 epochs.
    "paper": dict(
        optimizer="sgd",
        lr=0.7,
        batch_size=128,
        epochs=7.5,
        lr_decay_start=5.0,
        lr_decay_every=0.5,
        lr_decay_factor=0.5,
        clip_norm=5.0,
        dropout=0.0,
        vocab_min_count=1,
    ),
    # Multi30k on two CPU cores in well under an hour (Adam and dropout: not in the paper).
    "small": dict(
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        epochs=7.0,
        lr_decay_start=5.0,
        lr_decay_every=0.5,
        lr_decay_factor=0.5,
        clip_norm=5.0,
        dropout=0.3,
        vocab_min_count=2,
        valid_every=200,
    ),
    # Small data (Multi30k, 29k pairs): train to convergence instead of a fixed schedule. The lr
    # halves whenever a validation brings no new best, and training stops after `patience`
    # validations without one (or at `epochs`). Attention, dropout, Adam: not in the paper.
    "multi30k": dict(
        optimizer="adam",
        lr=2e-3,
        batch_size=64,
        epochs=40.0,
        lr_schedule="plateau",
        lr_decay_factor=0.5,
        plateau_patience=1,
        min_lr=6e-5,
        patience=4,
        clip_norm=5.0,
        dropout=0.3,
        vocab_min_count=2,
        valid_every=0,
        attention="luong",
    ),
    # Unit tests.
    "tiny": dict(
        optimizer="adam",
        lr=3e-3,
        batch_size=32,
        epochs=1.0,
        lr_decay_start=None,
        clip_norm=5.0,
        dropout=0.0,
        vocab_min_count=1,
        max_len=50,
    ),
}

# Fields that may differ between a run and its `--resume` without changing the trajectory.
_RESUMABLE_CHANGES = frozenset(
    {
        "train_src",
        "train_tgt",
        "valid_src",
        "valid_tgt",
        "out_dir",
        "epochs",
        "resume",
        "log_every",
        "valid_every",
        "checkpoint_every",
        "patience",
        "device",
        "num_threads",
        "data_dir",
        "prepare_workers",
    }
)


_OPTION_NAMES = {"num_threads": "--threads", "prepare_workers": "--workers"}


def _option_name(field: str) -> str:
    """The `rescore train` option of a `TrainConfig` field, for error messages."""
    return _OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def _threads(option: str, value: int | None) -> None:
    option_at_least(option, value, 1)
    option_at_most(option, value, MAX_THREADS)


def _at_least(minimum: float) -> Callable[[str, float | None], None]:
    return lambda option, value: option_at_least(option, value, minimum)


_FIELD_CHECKS: dict[str, Callable[[str, Any], None]] = {
    **{name: _at_least(1) for name in (
        "batch_size", "batch_tokens", "emb_dim", "hidden", "layers", "src_vocab_size",
        "tgt_vocab_size", "vocab_min_count", "checkpoint_every", "log_every", "max_len",
        "prepare_workers", "plateau_patience")},
    **{name: _at_least(0) for name in (
        "patience", "valid_every", "lr", "lr_decay_start", "momentum", "weight_decay", "min_lr")},
    **{name: (lambda option, value: option_above(option, value, 0)) for name in (
        "epochs", "clip_norm", "lr_decay_every", "lr_decay_factor")},
    "num_threads": _threads,
    "dropout": lambda option, value: option_in_range(option, value, 0, 1),
    "label_smoothing": lambda option, value: option_in_range(option, value, 0, 1),
}  # fmt: skip
"""Each numeric field's range, checked by `TrainConfig.__post_init__` (OptionError, exit 2)."""
Optimizer = Literal["sgd", "adam"]
LrSchedule = Literal["epochs", "plateau"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": get_args(Optimizer),
    "lr_schedule": get_args(LrSchedule),
    "attention": ATTENTION,
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run depends on, checked on construction (`__post_init__`). Most
    fields are `rescore train` options (`--field-name`; `num_threads` is `--threads`,
    `prepare_workers` `--workers`); `momentum`, `weight_decay`, `lr_decay_factor`,
    `plateau_patience`, `min_lr`, `escape` and `lowercase` are set by presets and the library.

    The data: `data_dir` (a prepared directory) alone, or the four text files, prepared into
    `data_dir` or OUT_DIR/data. The fields of `DataSettings` (languages, tokenisation,
    vocabularies, `max_len`) say how text is prepared; training from a directory takes them from
    it (`with_data`), so a checkpoint's config always says what its data were.
    """

    train_src: str | None = None
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    out_dir: str
    data_dir: str | None = None
    """Prepared-data directory (`rescore prepare`), or where to prepare the text files."""
    prepare_workers: int = 1
    """Tokenising processes when preparing text files."""
    src_lang: str = "en"
    tgt_lang: str = "fr"
    preset: str = "paper"
    """Model preset (`paper`, `small`, `tiny`); `TrainConfig.preset()` also sets training fields."""
    reverse_source: bool = True
    reverse_target: bool = False
    """Train a right-to-left model (targets reversed), a rescoring feature beside the usual one."""
    attention: Attention = "none"
    """`none` (the paper), `luong` or `bahdanau` (see `model.ModelConfig`)."""
    emb_dim: int | None = None
    hidden: int | None = None
    layers: int | None = None
    src_vocab_size: int | None = None
    """Maximum vocabulary sizes (specials included); None takes the model preset's."""
    tgt_vocab_size: int | None = None
    vocab_min_count: int = 1
    tokenized: bool = False
    """Inputs are already tokenised (split on spaces) instead of raw text."""
    escape: bool = False
    lowercase: bool = False
    max_len: int | None = 80
    """Training pairs with a side longer than this many tokens are dropped (and counted)."""
    batch_size: int = 128
    batch_tokens: int | None = None
    epochs: float = 7.5
    optimizer: Optimizer = "sgd"
    lr: float = 0.7
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_decay_start: float | None = 5.0
    """Epoch at which the lr is first multiplied by `lr_decay_factor`; None: constant lr."""
    lr_decay_every: float = 0.5
    lr_decay_factor: float = 0.5
    lr_schedule: LrSchedule = "epochs"
    """`epochs`: the paper's fixed schedule (`lr_decay_start`, `lr_decay_every`); `plateau`: multiply
    by `lr_decay_factor` after `plateau_patience` validations without a new best."""
    plateau_patience: int = 1
    min_lr: float = 0.0
    """With `plateau`: stop once the lr has decayed below this."""
    clip_norm: float | None = 5.0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 1
    device: str = "cpu"
    bf16: bool = False
    num_threads: int | None = None
    log_every: int = 50
    valid_every: int = 0
    """Validate every N steps (0: only at the end of each epoch, which always validates)."""
    checkpoint_every: int = 200
    """Write checkpoint_last.pt every N steps (and always at epoch end)."""
    patience: int | None = None
    """Stop after this many validations without a new best perplexity; None: never."""
    resume: bool = False

    def __post_init__(self) -> None:
        texts = [getattr(self, f) for f in ("train_src", "train_tgt", "valid_src", "valid_tgt")]
        if any(t is None for t in texts) and (
            any(t is not None for t in texts) or not self.data_dir
        ):
            raise InputError(
                "training data: give a prepared directory (--data), or all of --train-src, "
                "--train-tgt, --valid-src and --valid-tgt"
            )
        for name, check in _FIELD_CHECKS.items():
            check(_option_name(name), getattr(self, name))
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(
                    f"{_option_name(name)} {getattr(self, name)!r}: choose from {', '.join(choices)}"
                )

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> TrainConfig:
        """The named preset's training settings (and model preset), with explicit overrides."""
        if name not in TRAIN_PRESETS:
            raise InputError(f"unknown preset {name!r}; choose from {sorted(TRAIN_PRESETS)}")
        return cls(**{"preset": name, **TRAIN_PRESETS[name], **overrides})

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int) -> ModelConfig:
        over: dict[str, Any] = {
            "reverse_source": self.reverse_source,
            "reverse_target": self.reverse_target,
            "attention": self.attention,
            "dropout": self.dropout,
        }
        for name in ("emb_dim", "hidden", "layers"):
            if getattr(self, name) is not None:
                over[name] = getattr(self, name)
        return ModelConfig.preset(self.preset, **over).with_vocab_sizes(
            src_vocab_size, tgt_vocab_size
        )

    def vocab_limits(self) -> tuple[int, int]:
        p = MODEL_PRESETS[self.preset]
        return (
            self.src_vocab_size or int(p["src_vocab_size"]),
            self.tgt_vocab_size or int(p["tgt_vocab_size"]),
        )

    def data_settings(self) -> DataSettings:
        """How this run's text files are prepared (the preset's vocabulary sizes by default)."""
        src_max, tgt_max = self.vocab_limits()
        names = {f.name for f in fields(DataSettings)} - {"src_vocab_size", "tgt_vocab_size"}
        return DataSettings(
            src_vocab_size=src_max,
            tgt_vocab_size=tgt_max,
            **{name: getattr(self, name) for name in names},
        )

    def with_data(self, settings: DataSettings) -> TrainConfig:
        """This config with a prepared directory's settings (the fields share their names)."""
        return replace(self, **settings.to_dict())

    def prepare_config(self) -> PrepareConfig | None:
        """How to prepare the text files (None when training from `data_dir` alone): into
        `data_dir`, or OUT_DIR/data, which a later preparation of other data may replace."""
        if self.train_src is None:
            return None
        return PrepareConfig(
            train_src=self.train_src,
            train_tgt=str(self.train_tgt),
            valid_src=str(self.valid_src),
            valid_tgt=str(self.valid_tgt),
            out=self.data_dir or str(Path(self.out_dir) / "data"),
            settings=self.data_settings(),
            workers=self.prepare_workers,
            replace=self.data_dir is None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From `to_dict`; unknown keys (fields of older versions, e.g. cache_dir) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at fractional epoch `progress`: constant, then multiplied by the factor at
    `lr_decay_start` and every `lr_decay_every` epochs after it (the paper: 0.7, halved at 5, 5.5, ...)."""
    if cfg.lr_decay_start is None or progress < cfg.lr_decay_start - 1e-9:
        return cfg.lr
    n = math.floor((progress - cfg.lr_decay_start) / cfg.lr_decay_every + 1e-9) + 1
    return cfg.lr * cfg.lr_decay_factor**n


def current_lr(cfg: TrainConfig, progress: float, plateau_scale: float) -> float:
    """The lr of the configured schedule: `lr_at` by epochs, or the lr times the plateau decays."""
    if cfg.lr_schedule == "plateau":
        return cfg.lr * plateau_scale
    if cfg.lr_schedule != "epochs":
        raise InputError(f"unknown lr schedule {cfg.lr_schedule!r}; choose epochs or plateau")
    return lr_at(cfg, progress)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    out_dir: str
    last_checkpoint: str
    best_checkpoint: str
    log: str
    best_valid_ppl: float
    final_valid_ppl: float
    steps: int
    epochs_done: float
    elapsed_s: float
    stopped_early: bool
    resumed_from_step: int | None
    cpu_s: float | None = None
    """CPU seconds of the main process (all its threads), summed over resumes; unlike `elapsed_s`
    it excludes time the process was paused or waiting for a core. None: resumed from a checkpoint
    that did not record it."""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    """Mutable loop state; everything in it goes into checkpoints."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    best_valid_ppl: float = math.inf
    last_valid_ppl: float = math.inf
    bad_validations: int = 0
    lr_scale: float = 1.0
    """Product of the plateau decays so far (`lr_schedule="plateau"`)."""
    plateau_bad: int = 0
    elapsed_s: float = 0.0
    cpu_s: float | None = 0.0
    stopped_early: bool = False


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s.get("cuda"):
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate(_as_tuple(s["python"]))


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def _make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise InputError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adam")


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig, path: str) -> None:
    old = _comparable(TrainConfig.from_dict(saved)).to_dict()
    new = _comparable(cfg).to_dict()
    diff = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
        raise CheckpointError(f"cannot resume with different settings ({details})", path)


def _comparable(cfg: TrainConfig) -> TrainConfig:
    """A run prepared from text, with its data settings spelled out (checkpoints from before
    the prepared corpus left the preset's vocabulary sizes as None)."""
    return cfg.with_data(cfg.data_settings()) if cfg.train_src is not None else cfg


def _open_data(
    cfg: TrainConfig,
    info: dist.DistInfo,
    saved: dict[str, Any] | None,
    progress: ProgressSettings,
) -> tuple[TrainConfig, PreparedData]:
    """Prepare the text files if the run has them (rank 0; the others wait), open the prepared
    directory, and return the config with its settings. A resumed run must find the data it
    was trained on."""
    pcfg = cfg.prepare_config()
    saved_data = (saved or {}).get("train_state", {}).get("data") or {}
    if pcfg is not None:
        if info.is_main:
            prepare(pcfg, progress, expect_key=saved_data.get("key"))
        dist.barrier()
    data = PreparedData.open(pcfg.out if pcfg is not None else str(cfg.data_dir))
    if saved is not None:
        where = str(Path(cfg.out_dir) / LAST)
        if saved_data.get("key", data.key) != data.key:
            raise CheckpointError(
                f"the run was trained on other data than {data.path} (its manifest key "
                "differs); resume from the directory the run started with",
                where,
            )
        if (saved["src_vocab"], saved["tgt_vocab"]) != (
            data.src_vocab.to_list(),
            data.tgt_vocab.to_list(),
        ):
            raise CheckpointError(
                f"the vocabularies of {data.path} differ from the checkpoint's", where
            )
    return cfg.with_data(data.settings), data


def _tok_config(cfg: TrainConfig, lang: str) -> TokenizerConfig:
    return TokenizerConfig(lang=lang, escape=cfg.escape, lowercase=cfg.lowercase)


def _batch_loss(
    model: nn.Module,
    corpus: EncodedCorpus,
    indices: np.ndarray,
    device: torch.device,
    label_smoothing: float,
    autocast: bool,
    reverse_target: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(training loss summed over tokens, NLL summed over tokens, target tokens) for `indices`."""
    b = collate(corpus, indices, reverse_target=reverse_target).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logp = model(b.src, b.src_len, shift_right(b.tgt_out))
    logp = logp.float()
    mask = b.tgt_out != PAD
    nll = -logp.gather(-1, b.tgt_out.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0).sum()
    loss = nll
    if label_smoothing > 0.0:
        smooth = -logp.mean(-1).masked_fill(~mask, 0.0).sum()
        loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return loss, nll.detach(), int(mask.sum())


@torch.no_grad()
def evaluate_perplexity(
    model: Seq2Seq,
    corpus: EncodedCorpus,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast: bool = False,
    reverse_target: bool = False,
) -> tuple[float, float, int]:
    """(perplexity, NLL sum, target tokens incl. EOS) of `corpus`; ranks split the work."""
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    order = np.lexsort((corpus.tgt.lengths, corpus.src.lengths))  # stable: ties by index
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rank, world = dist.get_rank(), dist.get_world_size()
    nll_sum, tokens = 0.0, 0
    for chunk in chunks[rank::world]:
        _, nll, n = _batch_loss(model, corpus, chunk, dev, 0.0, autocast, reverse_target)
        nll_sum += float(nll)
        tokens += n
    model.train(was_training)
    nll_sum, tok = dist.sum_floats([nll_sum, float(tokens)])
    return math.exp(nll_sum / tok) if tok else math.inf, nll_sum, int(tok)


class _Log:
    """log.jsonl writer (rank 0 only); on resume, records after the checkpoint's step are dropped."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.fh: TextIO | None = None
        if not enabled:
            return
        kept: list[str] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a record cut by the kill
                if int(rec.get("step", rec.get("steps", 0))) <= resume_step:
                    kept.append(line)
        with atomic_write(path) as fh:
            fh.writelines(line + "\n" for line in kept)
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record, sort_keys=True) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def train(
    cfg: TrainConfig,
    progress: ProgressSettings = QUIET,
    *,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train (or `cfg.resume` a run) and write OUT_DIR/checkpoint_{last,best}.pt and log.jsonl.

    Under torchrun every rank calls this; rank 0 alone writes files. `on_step(step)` is called
    after every completed step (after any checkpoint of that step).
    """
    with dist.process_group(cfg.device) as info:
        return _train(cfg, progress, info, on_step)


def _train(
    cfg: TrainConfig,
    progress: ProgressSettings,
    info: dist.DistInfo,
    on_step: Callable[[int], None] | None,
) -> TrainResult:
    """Check the settings, load the data (and the run to resume), then the epoch loop."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _device(cfg, info)
    _check_paths(cfg)
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    saved = _resume_payload(cfg, out / LAST)
    if saved is not None and cfg.train_src is not None:  # name a changed setting before preparing
        _check_resume_config(saved["train_state"]["config"], cfg, str(out / LAST))
    dist.barrier()
    cfg, data = _open_data(cfg, info, saved, progress if info.is_main else QUIET)
    if saved is not None:
        _check_resume_config(saved["train_state"]["config"], cfg, str(out / LAST))
    trainer = _Trainer(cfg, info, device, data, saved)
    trainer.loop(progress, on_step)
    dist.barrier()
    return trainer.result()


def _device(cfg: TrainConfig, info: dist.DistInfo) -> torch.device:
    if not cfg.device.startswith("cuda"):
        if cfg.bf16 and not cpu_bf16_supported():
            raise InputError(
                "--bf16 on this CPU: it has no bf16 support (oneDNN), so bf16 autocast cannot "
                "run the LSTMs; train on CUDA or without --bf16"
            )
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    return torch.device("cuda", info.local_rank) if info.distributed else torch.device(cfg.device)


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 kernels (oneDNN): without them CPU autocast fails in the LSTM."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _check_paths(cfg: TrainConfig) -> None:
    """No file the run writes may be one of its corpora (`output_guard`): the out directory's
    checkpoints and log, and the prepared directory (`prepare.py`), which is replaced whole."""
    out = Path(cfg.out_dir)
    if cfg.data_dir is None:
        dirs = [OutDir("--out", out, (LAST, BEST, LOG, "data", "data/*"))]
    else:
        dirs = [OutDir("--out", out, (LAST, BEST, LOG))]
        if cfg.train_src is not None:
            dirs.append(OutDir("--data", Path(cfg.data_dir), ("*",)))
    check_outputs(
        {"--train-src": cfg.train_src, "--train-tgt": cfg.train_tgt,
         "--valid-src": cfg.valid_src, "--valid-tgt": cfg.valid_tgt},
        dirs=dirs,
    )  # fmt: skip


def _resume_payload(cfg: TrainConfig, last_path: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run without
    `resume` (`_check_resume_config` then refuses settings that would change the trajectory)."""
    if not last_path.is_file():
        return None
    if not cfg.resume:
        raise InputError(
            f"{last_path.parent} already holds a training run; pass --resume to continue it or "
            "choose another --out",
            str(last_path),
        )
    saved = read_checkpoint(last_path)
    try:
        TrainConfig.from_dict(saved["train_state"]["config"])
    except (KeyError, TypeError, InputError) as exc:
        raise CheckpointError(
            f"checkpoint has no usable train_state ({exc}); cannot resume", str(last_path)
        ) from exc
    return saved


class _Trainer:
    """One run's model, optimiser, loop state and log; the steps of `_train`'s loop.

    The order of the seeding and restoring in `__init__` is what makes a resumed run bit-identical
    to an uninterrupted one: keep it.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        info: dist.DistInfo,
        device: torch.device,
        data: PreparedData,
        saved: dict[str, Any] | None,
    ) -> None:
        self.cfg, self.info, self.device, self.data = cfg, info, device, data
        out = Path(cfg.out_dir)
        self.last_path, self.best_path, self.log_path = out / LAST, out / BEST, out / LOG
        self.src_tok, self.tgt_tok = _tok_config(cfg, cfg.src_lang), _tok_config(cfg, cfg.tgt_lang)
        torch.manual_seed(cfg.seed)
        self.mcfg = cfg.model_config(len(data.src_vocab), len(data.tgt_vocab))
        self.raw_model = Seq2Seq(self.mcfg)
        self.st = _State()
        if saved is not None:
            try:
                self.raw_model.load_state_dict(saved["model"])
                loop = saved["train_state"]["loop"]
                self.st = _State(**{k: loop.get(k, v) for k, v in asdict(_State()).items()})
                self.st.cpu_s = loop.get("cpu_s")  # unknown in checkpoints from before it was kept
            except (KeyError, RuntimeError, TypeError) as exc:
                raise CheckpointError(
                    f"checkpoint does not fit this run: {exc}", str(self.last_path)
                ) from exc
        self.raw_model.to(device)
        self.model: nn.Module = self.raw_model
        if info.distributed:
            self.model = DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = _make_optimizer(cfg, self.raw_model.parameters())
        # Each rank its own dropout stream; a resumed run restores the exact states.
        torch.manual_seed(cfg.seed + 7919 * info.rank + 1)
        random.seed(cfg.seed + info.rank)
        if saved is not None:
            self.optimizer.load_state_dict(saved["train_state"]["optimizer"])
            rngs = saved["train_state"]["rng"]
            if len(rngs) == info.world_size:
                _set_rng_state(rngs[info.rank])
        self.resumed_from = self.st.step if saved is not None else None
        self.log = _Log(self.log_path, info.is_main, self.resumed_from)
        self.bcfg = BatchingConfig(
            batch_size=cfg.batch_size, batch_tokens=cfg.batch_tokens, seed=cfg.seed
        )
        # A run keeps the batch order it started with (checkpoints from before the prepared
        # corpus have none recorded: `legacy_batches`), so that its resume stays exact.
        self.batch_order = (
            int(saved["train_state"].get("batch_order", 1)) if saved is not None else BATCH_ORDER
        )
        self._epoch_batches: tuple[int, EpochBatches | list[np.ndarray]] | None = None
        self.n_batches0 = (
            math.ceil(len(data.train) / cfg.batch_size)
            if cfg.batch_tokens is None
            else len(self.batches(0))
        )
        self._log_start(resumed=saved is not None)
        self.elapsed0, self.cpu0 = self.st.elapsed_s, self.st.cpu_s
        self.run_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.acc = dict.fromkeys(("loss", "nll", "tgt", "words", "sents", "time"), 0.0)

    def _log_start(self, *, resumed: bool) -> None:
        """The log's first record of this process: the data and settings, or the resume."""
        data, info = self.data, self.info
        prepared = {"dir": str(data.path), "manifest_sha256": data.manifest_sha256,
                    "key": data.key}  # fmt: skip
        if not resumed:
            self.log.write(
                {
                    "event": "data",
                    "step": 0,
                    **data.report,
                    "prepared": prepared,
                    "batches_per_epoch": self.n_batches0,
                    "model": self.mcfg.to_dict(),
                    "config": self.cfg.to_dict(),
                    "world_size": info.world_size,
                }
            )
        else:
            self.log.write(
                {"event": "resume", "step": self.st.step, "epoch": self.st.epoch,
                 "world_size": info.world_size, "prepared": prepared,
                 "batch_order": self.batch_order}
            )  # fmt: skip

    def batches(self, epoch: int) -> EpochBatches | list[np.ndarray]:
        """The epoch's batches (the last epoch's are kept: an epoch's are made once)."""
        if self.batch_order not in (1, BATCH_ORDER):
            raise CheckpointError(
                f"batch order {self.batch_order} is unknown to this version", str(self.last_path)
            )
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            make = legacy_batches if self.batch_order == 1 else make_batches
            lengths = self.data.train.src.lengths, self.data.train.tgt.lengths
            self._epoch_batches = (epoch, make(*lengths, self.bcfg, epoch))
        return self._epoch_batches[1]

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.run_start

    def cpu(self) -> float | None:
        if self.cpu0 is None:
            return None
        return round(self.cpu0 + time.process_time() - self.cpu_start, 2)

    def tick(self) -> None:
        """Bring the loop state's clocks up to now."""
        self.st.elapsed_s = self.elapsed()
        self.st.cpu_s = self.cpu()

    def payload(self) -> dict[str, Any]:
        d = self.data
        return model_payload(self.raw_model, d.src_vocab, d.tgt_vocab, self.src_tok, self.tgt_tok)

    def save_last(self) -> None:
        """checkpoint_last.pt: the model and everything needed to resume exactly (rank 0)."""
        st, cfg = self.st, self.cfg
        rngs = dist.all_gather_object(_rng_state())
        if not self.info.is_main:
            return
        payload = self.payload()
        payload["train_state"] = {
            "config": cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loop": asdict(st),
            "rng": rngs,
            "lr": current_lr(cfg, st.epoch + st.batch_index / self.n_batches0, st.lr_scale),
            "data_position": {"epoch": st.epoch, "next_batch": st.batch_index},
            "batch_order": self.batch_order,
            "data": {"key": self.data.key, "manifest_sha256": self.data.manifest_sha256},
            "world_size": self.info.world_size,
        }
        save_checkpoint(self.last_path, payload)

    def validate(self, epoch_progress: float, lr: float) -> None:
        """Validation perplexity; a new best is saved, a stall decays the lr (plateau schedule)
        and counts towards early stopping."""
        st, cfg = self.st, self.cfg
        ppl, nll, tok = evaluate_perplexity(
            self.raw_model,
            self.data.valid,
            batch_size=max(64, cfg.batch_size),
            device=self.device,
            autocast=cfg.bf16,
            reverse_target=cfg.reverse_target,
        )
        st.last_valid_ppl = ppl
        improved = ppl < st.best_valid_ppl
        if improved:
            st.best_valid_ppl = ppl
            st.bad_validations = st.plateau_bad = 0
            if self.info.is_main:
                payload = self.payload()
                payload["train_info"] = {
                    "step": st.step, "epoch": epoch_progress, "valid_ppl": ppl,
                    "config": cfg.to_dict(),
                }  # fmt: skip
                save_checkpoint(self.best_path, payload)
        else:
            st.bad_validations += 1
            st.plateau_bad += 1
            if cfg.lr_schedule == "plateau" and st.plateau_bad >= cfg.plateau_patience:
                st.lr_scale *= cfg.lr_decay_factor
                st.plateau_bad = 0
                if cfg.lr * st.lr_scale < cfg.min_lr:
                    st.stopped_early = True
        self.log.write(
            {
                "event": "valid",
                "step": st.step,
                "epoch": round(epoch_progress, 4),
                "lr": lr,
                "valid_ppl": ppl,
                "valid_nll_per_token": nll / max(tok, 1),
                "best_valid_ppl": st.best_valid_ppl,
                "improved": improved,
                "elapsed_s": round(self.elapsed(), 2),
                "cpu_s": self.cpu(),
            }
        )
        if cfg.patience is not None and st.bad_validations >= cfg.patience:
            st.stopped_early = True

    def step(self, global_idx: np.ndarray, lr: float) -> float:
        """One optimiser step on this rank's share of a global batch; returns the grad norm."""
        cfg, info, acc = self.cfg, self.info, self.acc
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_global = len(global_idx)
        local = shard(global_idx, info.rank, info.world_size)
        weight = float(info.world_size) / n_global
        if not len(local):  # an idle rank still joins DDP's gradient all-reduce
            local, weight = global_idx[:1], 0.0
        train = self.data.train
        loss_sum, nll, _ = _batch_loss(
            self.model, train, local, self.device, cfg.label_smoothing, cfg.bf16,
            cfg.reverse_target,
        )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum * weight).backward()
        grad_norm = (
            float(nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip_norm))
            if cfg.clip_norm is not None
            else math.nan
        )
        self.optimizer.step()
        if weight > 0:
            acc["loss"] += float(loss_sum.detach())
            acc["nll"] += float(nll)
        src_words = int(train.src.lengths[global_idx].sum(dtype=np.int64))
        tgt_words = int(train.tgt.lengths[global_idx].sum(dtype=np.int64))
        acc["tgt"] += tgt_words + n_global
        acc["words"] += src_words + tgt_words
        acc["sents"] += n_global
        acc["time"] += time.perf_counter() - t0
        return grad_norm

    def log_train(self, epoch: float, lr: float, grad_norm: float, pbar: Any) -> None:
        """The `train` record of the steps since the last one (summed over ranks)."""
        acc = self.acc
        loss_tot, nll_tot = dist.sum_floats([acc["loss"], acc["nll"]])
        rec = {
            "event": "train",
            "step": self.st.step,
            "epoch": round(epoch, 4),
            "lr": lr,
            "train_loss": loss_tot / max(acc["sents"], 1),
            "train_nll_per_token": nll_tot / max(acc["tgt"], 1),
            "train_ppl": math.exp(min(nll_tot / max(acc["tgt"], 1), 50.0)),
            "tokens_per_s": acc["tgt"] / max(acc["time"], 1e-9),
            "words_per_s": acc["words"] / max(acc["time"], 1e-9),
            "grad_norm": grad_norm,
            "elapsed_s": round(self.st.elapsed_s, 2),
            "cpu_s": self.st.cpu_s,
        }
        self.log.write(rec)
        pbar.set_postfix(
            tok_s=f"{rec['tokens_per_s']:.0f}", loss=f"{rec['train_loss']:.2f}",
            ppl=f"{rec['train_ppl']:.1f}", lr=f"{lr:.3g}", refresh=False,
        )  # fmt: skip
        self.acc = dict.fromkeys(acc, 0.0)

    def loop(self, progress: ProgressSettings, on_step: Callable[[int], None] | None) -> None:
        """Epochs until `epochs` or early stopping: steps, logs, validations, checkpoints."""
        st, cfg = self.st, self.cfg
        # At least one step, however small `epochs` is (each epoch also takes at least one).
        n_epochs = max(1, math.ceil(cfg.epochs - 1e-9))
        total_est = max(1, round(cfg.epochs * self.n_batches0))
        shown = progress if self.info.is_main else QUIET
        pbar = bar(shown, desc="train", total=total_est, unit="step")
        pbar.update(min(st.step, total_est))
        self.raw_model.train()
        try:
            while st.epoch < n_epochs and not st.stopped_early:
                batches = self.batches(st.epoch)
                frac = cfg.epochs - st.epoch
                limit = len(batches) if frac >= 1 else max(1, round(frac * len(batches)))
                while st.batch_index < limit and not st.stopped_early:
                    lr = current_lr(cfg, st.epoch + st.batch_index / len(batches), st.lr_scale)
                    grad_norm = self.step(batches[st.batch_index], lr)
                    st.step += 1
                    st.batch_index += 1
                    self.tick()
                    pbar.update(1)
                    epoch_end = st.batch_index >= limit
                    progress_now = st.epoch + st.batch_index / len(batches)
                    if st.step % max(cfg.log_every, 1) == 0 or epoch_end:
                        self.log_train(progress_now, lr, grad_norm, pbar)
                    if epoch_end or (cfg.valid_every > 0 and st.step % cfg.valid_every == 0):
                        self.validate(progress_now, lr)
                    if epoch_end:
                        st.epoch += 1
                        st.batch_index = 0
                    if (
                        epoch_end
                        or st.stopped_early
                        or (cfg.checkpoint_every > 0 and st.step % cfg.checkpoint_every == 0)
                    ):
                        self.tick()
                        self.save_last()
                    if on_step is not None:
                        on_step(st.step)
                    if epoch_end:
                        break
        finally:
            pbar.close()
            self.log.close()

    def result(self) -> TrainResult:
        """What the run produced; rank 0 appends it to the log as the `end` record."""
        st = self.st
        epochs_done = st.epoch + (st.batch_index / self.n_batches0 if st.batch_index else 0.0)
        result = TrainResult(
            out_dir=str(Path(self.cfg.out_dir)),
            last_checkpoint=str(self.last_path),
            best_checkpoint=str(self.best_path),
            log=str(self.log_path),
            best_valid_ppl=st.best_valid_ppl,
            final_valid_ppl=st.last_valid_ppl,
            steps=st.step,
            epochs_done=epochs_done,
            elapsed_s=st.elapsed_s,
            stopped_early=st.stopped_early,
            resumed_from_step=self.resumed_from,
            cpu_s=st.cpu_s,
            data=self.data.report,
        )
        if self.info.is_main:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"event": "end", **asdict(result)}, sort_keys=True) + "\n")
        return result
