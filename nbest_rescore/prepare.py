"""`rescore prepare`: a parallel corpus read once into a prepared-data directory (`corpus.py`).

Pass 1 streams the training pairs in chunks to worker processes (`workers`; 1 runs in-process)
that tokenise, length-filter and number each chunk's words; the main process, in input order,
gives every word type a provisional id, counts it, and appends the provisional ids to a
temporary file. The vocabularies come from the counts (`Vocab.from_counts`: the same as
`Vocab.build` on the kept pairs), and pass 2 maps the provisional ids to vocabulary ids with
one numpy lookup per block. Nothing per sentence or per token stays in Python. The validation
pairs (not filtered) are encoded with the finished vocabularies. Everything is built in a
temporary directory beside the output and renamed into place; the same inputs and settings
again are a no-op (`PrepareResult.up_to_date`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from nbest_rescore.corpus import (
    FORMAT,
    MANIFEST,
    VERSION,
    DataSettings,
    PreparedData,
    array_name,
    data_key,
    id_dtype,
    length_dtype,
    read_manifest,
)
from nbest_rescore.data import (
    FilterStats,
    ParallelChunk,
    check_parallel,
    iter_parallel,
    length_filter,
    tokenize_lines,
)
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.fileio import WRITE_ERRNOS, sha256_file
from nbest_rescore.output_guard import OutDir, check_outputs
from nbest_rescore.progress import QUIET, ProgressSettings, bar
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.validate import option_at_least
from nbest_rescore.vocab import UNK, Vocab

T = TypeVar("T")
R = TypeVar("R")

ROLES = ("train_src", "train_tgt", "valid_src", "valid_tgt")
REMAP_BLOCK = 1 << 22
"""Provisional ids mapped per numpy step in pass 2 (16 MB of int32)."""


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """The inputs, the output directory and how the corpus is prepared."""

    train_src: str
    train_tgt: str
    valid_src: str
    valid_tgt: str
    out: str
    settings: DataSettings = field(default_factory=DataSettings)
    workers: int = 1
    """Tokenising processes; 1 works in this process."""
    chunk_pairs: int = 4096
    """Sentence pairs per task of a worker."""
    replace: bool = False
    """Replace an `out` prepared from other inputs or settings (else that is an error)."""

    def __post_init__(self) -> None:
        option_at_least("--workers", self.workers, 1)
        option_at_least("chunk_pairs", self.chunk_pairs, 1)
        for role in ROLES:
            if getattr(self, role) == "-":
                opt = "--" + role.replace("_", "-")
                raise InputError(f"{opt} -: preparing reads its files twice; give a file")

    def inputs(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in ROLES}


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` did: the directory, its key, and whether it was already up to date."""

    path: str
    key: str
    up_to_date: bool
    report: dict[str, Any]
    seconds: float
    pairs_per_s: float | None = None
    """Training pairs read per second by pass 1 (None when nothing was prepared)."""


def input_hashes(cfg: PrepareConfig) -> dict[str, dict[str, Any]]:
    """Path, size and sha256 of every input file (an `InputError` for a missing one)."""
    out: dict[str, dict[str, Any]] = {}
    for role, path in cfg.inputs().items():
        p = Path(path)
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "is not a regular file (a pipe or device)"
            raise InputError(
                "no such file"
                if not p.exists()
                else f"{what}: a corpus is read twice (its "
                "hash, then its words) and recorded by size; give a file, plain or .gz",
                path,
            )
        out[role] = {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def prepare(
    cfg: PrepareConfig, progress: ProgressSettings = QUIET, *, expect_key: str | None = None
) -> PrepareResult:
    """Prepare `cfg.out` from the inputs, or find it up to date. `expect_key`: the key a run
    being resumed was trained on; other data is a `CheckpointError` before anything is written."""
    started = time.perf_counter()
    check_outputs(
        {"--train-src": cfg.train_src, "--train-tgt": cfg.train_tgt,
         "--valid-src": cfg.valid_src, "--valid-tgt": cfg.valid_tgt},
        dirs=[OutDir("--out", Path(cfg.out), ("*",))],
    )  # fmt: skip
    inputs = input_hashes(cfg)
    key = data_key(cfg.settings, {role: d["sha256"] for role, d in inputs.items()})
    if expect_key is not None and key != expect_key:
        raise CheckpointError(
            "the training data or its preparation settings differ from those the run started "
            "with; resume with the same inputs and settings, or train into a new --out",
            cfg.out,
        )
    out = Path(cfg.out)
    found = _existing_key(out)
    if found == key:
        data = PreparedData.open(out)  # checks that every file is whole
        return PrepareResult(str(out), key, True, data.report, time.perf_counter() - started)
    if found is not None and not cfg.replace:
        raise InputError(
            "holds a corpus prepared from other inputs or settings; remove it or choose "
            "another --out",
            str(out),
        )
    n_train = check_parallel(cfg.train_src, cfg.train_tgt)
    n_valid = check_parallel(cfg.valid_src, cfg.valid_tgt)
    lines = {"train_src": n_train, "train_tgt": n_train, "valid_src": n_valid, "valid_tgt": n_valid}
    for role, n in lines.items():
        inputs[role]["lines"] = n
    with _building(out) as tmp:
        t1 = time.perf_counter()
        report = _write(cfg, tmp, inputs, key, n_train, progress)
        rate = n_train / max(time.perf_counter() - t1, 1e-9)
        if not cfg.replace and _existing_key(out) not in (None, key):
            raise InputError("was prepared from other data meanwhile", str(out))
        _move_into_place(tmp, out, key)
    return PrepareResult(str(out), key, False, report, time.perf_counter() - started, rate)


def _existing_key(out: Path) -> str | None:
    """The key of the prepared corpus at `out`; None where there is nothing. Anything else
    there (a file, a directory of other files) is an `InputError`."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise InputError("exists and is not a directory", str(out))
    manifest, _ = read_manifest(out / MANIFEST)
    if manifest is None:
        if any(out.iterdir()):
            raise InputError("exists and is not a prepared-data directory", str(out))
        return None
    return str(manifest.get("key"))


# --- the two passes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """One chunk for a worker, with everything it needs to tokenise and filter it."""

    chunk: ParallelChunk
    paths: tuple[str, str]
    tokenizers: tuple[TokenizerConfig | None, TokenizerConfig | None]
    max_len: int | None
    drop_empty: bool


@dataclass(frozen=True)
class _SideIds:
    """One side of a chunk's kept pairs: its word types (local ids = positions), their counts,
    the local ids end to end, and the sentence lengths."""

    types: list[str]
    counts: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class _ChunkIds:
    src: _SideIds
    tgt: _SideIds
    stats: FilterStats


def _encode_chunk(task: _Task) -> _ChunkIds:
    """(In a worker) tokenise a chunk, filter it by length and number its words locally."""
    c = task.chunk
    sents = [
        tokenize_lines(lines, tok, path=path, first_line=c.first_line)
        for lines, tok, path in zip((c.src, c.tgt), task.tokenizers, task.paths, strict=True)
    ]
    lens = [np.fromiter(map(len, s), dtype=np.int64, count=len(s)) for s in sents]
    keep, stats = length_filter(lens[0], lens[1], task.max_len, drop_empty=task.drop_empty)
    if not keep.all():
        rows = np.flatnonzero(keep).tolist()
        sents = [[s[i] for i in rows] for s in sents]
        lens = [n[keep] for n in lens]
    src, tgt = (_local_ids(s, n) for s, n in zip(sents, lens, strict=True))
    return _ChunkIds(src, tgt, stats)


def _local_ids(sents: list[list[str]], lengths: np.ndarray) -> _SideIds:
    """Number the chunk's word types in order of first sight (C-level loops only: this is
    the per-token work of the whole preparation)."""
    flat = list(itertools.chain.from_iterable(sents))
    types = list(dict.fromkeys(flat))
    index = dict(zip(types, range(len(types)), strict=True))
    ids = np.fromiter(map(index.__getitem__, flat), dtype=np.int32, count=len(flat))
    counts = np.bincount(ids, minlength=len(types)).astype(np.int64)
    return _SideIds(types, counts, ids, lengths.astype(np.int32))


class _TypeCounts:
    """Every word type seen so far, numbered in order of first sight, with its count."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.counts = np.zeros(1 << 12, dtype=np.int64)

    def add(self, side: _SideIds) -> np.ndarray:
        """Count a chunk's words; returns its ids renumbered to this table's (int32)."""
        idx = self.index
        gids = np.fromiter(
            (idx.setdefault(t, len(idx)) for t in side.types),
            dtype=np.int32,
            count=len(side.types),
        )
        if len(idx) > len(self.counts):
            self.counts = np.concatenate(
                [self.counts, np.zeros(max(len(idx), 2 * len(self.counts)), dtype=np.int64)]
            )
        self.counts[gids] += side.counts  # a chunk's types are distinct
        return gids[side.ids]

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.index, self.counts[: len(self.index)].tolist(), strict=True))


def _ordered_map(
    fn: Callable[[T], R], tasks: Iterable[T], pool: Executor | None, ahead: int
) -> Iterator[R]:
    """`map(fn, tasks)` over the pool's workers, results in input order, at most `ahead`
    tasks in flight (Pool.imap would read the whole input ahead into memory)."""
    if pool is None:
        yield from map(fn, tasks)
        return
    pending: deque[Future[R]] = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _tasks(cfg: PrepareConfig, split: str) -> Iterator[_Task]:
    src, tgt = getattr(cfg, f"{split}_src"), getattr(cfg, f"{split}_tgt")
    train = split == "train"
    for chunk in iter_parallel(src, tgt, cfg.chunk_pairs):
        yield _Task(
            chunk,
            (src, tgt),
            cfg.settings.tokenizers(),
            cfg.settings.max_len if train else None,
            drop_empty=train,
        )


def _write(
    cfg: PrepareConfig,
    tmp: Path,
    inputs: dict[str, dict[str, Any]],
    key: str,
    n_train: int,
    progress: ProgressSettings,
) -> dict[str, Any]:
    """Both passes into `tmp`, then the vocabularies and the manifest; returns the report."""
    s = cfg.settings
    files: dict[str, dict[str, Any]] = {}
    # spawn, not fork: the trainer calls this with torch's and gloo's threads running. A pool
    # that loses a worker fails (BrokenProcessPool) instead of waiting forever.
    pool_cm = (
        ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"))
        if cfg.workers > 1
        else contextlib.nullcontext()
    )
    with pool_cm as pool:
        ahead = 2 * cfg.workers + 2
        tables, lengths, stats = _count_train(cfg, tmp, pool, ahead, n_train, progress)
        if not stats.kept:
            raise InputError(
                f"no training pairs left after length filtering (max_len={s.max_len})",
                cfg.train_src,
            )
        vocabs = (
            Vocab.from_counts(tables[0].as_dict(), s.src_vocab_size, s.vocab_min_count),
            Vocab.from_counts(tables[1].as_dict(), s.tgt_vocab_size, s.vocab_min_count),
        )
        oov: dict[str, dict[str, float]] = {}
        for side, table, vocab, lens in zip(("src", "tgt"), tables, vocabs, lengths, strict=True):
            mapping = np.array([vocab.stoi.get(t, UNK) for t in table.index], dtype=np.int64)
            files.update(_remap(tmp, side, mapping.astype(id_dtype(len(vocab)))))
            files.update(_write_index(tmp, "train", side, lens))
            known = np.fromiter((t in vocab.stoi for t in table.index), bool, len(table.index))
            oov[f"train_{side}"] = _oov(table.counts[: len(table.index)], known)
        oov.update(_encode_valid(cfg, tmp, pool, ahead, vocabs, files))
    for side, vocab in zip(("src", "tgt"), vocabs, strict=True):
        (tmp / f"vocab.{side}.json").write_text(json.dumps(vocab.to_list()), encoding="utf-8")
    report = {
        "train_filter": stats.to_dict(),
        "max_len": s.max_len,
        "valid_pairs": inputs["valid_src"]["lines"],
        "src_vocab": len(vocabs[0]),
        "tgt_vocab": len(vocabs[1]),
        "oov": oov,
        "train_words": {
            side: int(files[array_name("train", side, "ids")]["count"]) for side in ("src", "tgt")
        },
    }
    src_tok, tgt_tok = s.tokenizers()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "key": key,
        "settings": s.to_dict(),
        "tokenizers": {"src": src_tok and src_tok.to_dict(), "tgt": tgt_tok and tgt_tok.to_dict()},
        "inputs": inputs,
        "files": files,
        "report": report,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report


def _count_train(
    cfg: PrepareConfig,
    tmp: Path,
    pool: Executor | None,
    ahead: int,
    n_train: int,
    progress: ProgressSettings,
) -> tuple[tuple[_TypeCounts, _TypeCounts], tuple[np.ndarray, np.ndarray], FilterStats]:
    """Pass 1: provisional ids of the kept pairs to tmp/train.{src,tgt}.prov, word counts,
    sentence lengths and the filter's counts."""
    tables = (_TypeCounts(), _TypeCounts())
    lengths: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    stats = FilterStats(0, 0, 0, 0)
    with contextlib.ExitStack() as stack:
        fhs = [
            stack.enter_context(open(tmp / f"train.{side}.prov", "wb")) for side in ("src", "tgt")
        ]
        pbar = stack.enter_context(bar(progress, desc="prepare", total=n_train, unit="pair"))
        for chunk in _ordered_map(_encode_chunk, _tasks(cfg, "train"), pool, ahead):
            for side, table, fh, lens in zip(
                (chunk.src, chunk.tgt), tables, fhs, lengths, strict=True
            ):
                table.add(side).tofile(fh)
                lens.append(side.lengths)
            stats += chunk.stats
            pbar.update(chunk.stats.total)
    joined = tuple(np.concatenate(parts) for parts in lengths)
    return tables, joined, stats  # type: ignore[return-value]


def _remap(tmp: Path, side: str, mapping: np.ndarray) -> dict[str, dict[str, Any]]:
    """Pass 2: provisional ids -> vocabulary ids, a block at a time; the temporary file goes."""
    prov = tmp / f"train.{side}.prov"
    name = array_name("train", side, "ids")
    count = 0
    with open(prov, "rb") as src, open(tmp / name, "wb") as dst:
        while (block := np.fromfile(src, dtype=np.int32, count=REMAP_BLOCK)).size:
            mapping[block].tofile(dst)
            count += block.size
    prov.unlink()
    return {name: {"dtype": mapping.dtype.name, "count": count}}


def _write_index(tmp: Path, split: str, side: str, lengths: np.ndarray) -> dict[str, Any]:
    """The lengths (smallest type) and int64 offsets of one side of a split."""
    len_dt = length_dtype(int(lengths.max(initial=0)))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    specs = {}
    for kind, arr in (("len", lengths.astype(len_dt)), ("off", offsets)):
        name = array_name(split, side, kind)
        arr.tofile(tmp / name)
        specs[name] = {"dtype": arr.dtype.name, "count": len(arr)}
    return specs


def _oov(counts: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """Running-token and type OOV rates of counted types, `known` marking those in the vocabulary."""
    total = int(counts.sum())
    return {
        "token": int(counts[~known].sum()) / total if total else 0.0,
        "type": float((~known).sum()) / len(known) if len(known) else 0.0,
    }


def _encode_valid(
    cfg: PrepareConfig,
    tmp: Path,
    pool: Executor | None,
    ahead: int,
    vocabs: tuple[Vocab, Vocab],
    files: dict[str, dict[str, Any]],
) -> dict[str, dict[str, float]]:
    """The validation pairs (every one kept) under the finished vocabularies; adds their files
    to `files` and returns their OOV rates."""
    lengths: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    seen: tuple[dict[str, int], dict[str, int]] = ({}, {})
    with contextlib.ExitStack() as stack:
        names = [array_name("valid", side, "ids") for side in ("src", "tgt")]
        fhs = [stack.enter_context(open(tmp / n, "wb")) for n in names]
        for chunk in _ordered_map(_encode_chunk, _tasks(cfg, "valid"), pool, ahead):
            for part, vocab, fh, lens, counts in zip(
                (chunk.src, chunk.tgt), vocabs, fhs, lengths, seen, strict=True
            ):
                ids = np.array([vocab.stoi.get(t, UNK) for t in part.types], dtype=np.int64)
                ids[part.ids].astype(id_dtype(len(vocab))).tofile(fh)
                lens.append(part.lengths)
                for t, c in zip(part.types, part.counts.tolist(), strict=True):
                    counts[t] = counts.get(t, 0) + c
    oov = {}
    for side, name, vocab, lens, counts in zip(
        ("src", "tgt"), names, vocabs, lengths, seen, strict=True
    ):
        joined = np.concatenate(lens)
        files[name] = {"dtype": id_dtype(len(vocab)).name, "count": int(joined.sum())}
        files.update(_write_index(tmp, "valid", side, joined))
        known = np.fromiter((t in vocab.stoi for t in counts), bool, len(counts))
        oov[f"valid_{side}"] = _oov(np.array(list(counts.values()), dtype=np.int64), known)
    return oov


# --- the directory --------------------------------------------------------------------------


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.prepare-"


@contextlib.contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A temporary directory beside `out`, removed unless the block succeeds (and moves it)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(out)
        tmp = _temp_dir(out)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", str(out)) from exc
    try:
        yield tmp
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise InputError(f"cannot write ({exc.strerror or exc})", str(out)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temp_dir(out: Path) -> Path:
    """A new directory beside `out` named for this host and process (see `_remove_stale`)."""
    prefix = f"{_temp_prefix(out)}{socket.gethostname()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=out.parent))


def _remove_stale(out: Path) -> None:
    """Temporary directories that a killed `prepare` of this host left beside `out`."""
    host = socket.gethostname()
    for p in out.parent.glob(f"{_temp_prefix(out)}*.tmp"):
        try:
            owner, pid, _ = p.name[len(_temp_prefix(out)) :].rsplit("-", 2)
            alive = owner != host or _pid_alive(int(pid))
        except ValueError:
            continue
        if not alive:
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(tmp: Path, out: Path, key: str) -> None:
    """Rename the finished directory to `out`. Where `out` appeared meanwhile (another process
    prepared the same data), ours is dropped; a stale `out` (`replace`) is moved aside first."""
    try:
        os.rename(tmp, out)
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if _existing_key(out) == key:
        return
    old = _temp_dir(out)
    os.rename(out, old / out.name)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
