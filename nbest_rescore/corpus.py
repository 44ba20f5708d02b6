"""Token-id corpora as flat arrays, and the prepared-data directory that holds them on disk.

A side of a corpus is a `Ragged` array: every sentence's ids end to end in one array, with an
offsets array (sentence i is ids[offsets[i]:offsets[i + 1]]) and a lengths array, the only part
that batching reads in full. `rescore prepare` (`prepare.py`) writes them; `PreparedData.open`
loads the lengths and reads a batch's ids and offsets from the files with `pread` (`IdFile`), so a
12M-pair corpus costs its lengths in RAM and nothing per sentence read. (Memory maps cost more:
on a kernel with large page-cache folios one touched row maps a megabyte or more into the
process, so 200 random batches made the whole corpus resident.) Layout of a prepared directory
(format `FORMAT`, version `VERSION`):

    manifest.json                 settings, inputs (size, sha256), files, filter report, key
    vocab.src.json vocab.tgt.json the vocabularies (JSON lists, ids = positions)
    {train,valid}.{src,tgt}.ids   token ids, uint16 when the vocabulary fits, else int32
    {train,valid}.{src,tgt}.off   int64 offsets, one more than sentences
    {train,valid}.{src,tgt}.len   sentence lengths, the smallest unsigned type that holds them
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nbest_rescore.errors import InputError
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.validate import option_at_least
from nbest_rescore.vocab import PAD, Vocab

FORMAT = "nbest-rescore-prepared"
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")
SIDES = ("src", "tgt")
ARRAYS = ("ids", "off", "len")


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """Everything besides the input files that decides a prepared corpus' content."""

    src_lang: str = "en"
    tgt_lang: str = "fr"
    tokenized: bool = False
    """Inputs are already tokenised (split on spaces) instead of raw text."""
    escape: bool = False
    lowercase: bool = False
    src_vocab_size: int | None = 160_000
    """Largest vocabulary (the 4 specials included); None: every word. The paper's: 160k, 80k."""
    tgt_vocab_size: int | None = 80_000
    vocab_min_count: int = 1
    max_len: int | None = 80
    """Training pairs with a side longer than this many tokens are dropped (and counted)."""

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "vocab_min_count", "max_len"):
            option_at_least(f"--{name.replace('_', '-')}", getattr(self, name), 1)

    def tokenizers(self) -> tuple[TokenizerConfig | None, TokenizerConfig | None]:
        """The source and target tokenisers; None for both when the inputs are tokenised."""
        if self.tokenized:
            return None, None
        return tuple(  # type: ignore[return-value]
            TokenizerConfig(lang, escape=self.escape, lowercase=self.lowercase)
            for lang in (self.src_lang, self.tgt_lang)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSettings:
        return cls(**d)


def data_key(settings: DataSettings, input_sha256: dict[str, str]) -> str:
    """The identity of a prepared corpus: format, settings and the inputs' hashes (not their
    paths, nor the worker count, which change nothing in the output)."""
    blob = json.dumps(
        {"format": FORMAT, "version": VERSION, "settings": settings.to_dict(),
         "inputs": input_sha256},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def id_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)


def length_dtype(longest: int) -> np.dtype[Any]:
    """The smallest unsigned type holding `longest`."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if longest <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


class IdFile:
    """A flat array of a prepared directory, read with `os.pread`: slices (`f[a:b]`), items at
    given indices (`take`) and rows (`gather`). Nothing is mapped into the process: what it reads
    lives in the OS page cache, not in this process' resident memory."""

    def __init__(self, path: Path, dtype: str, count: int) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), count
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, items: slice) -> np.ndarray:
        start, stop, step = items.indices(self.count)
        if step != 1:
            raise ValueError("IdFile slices take no step")
        return self.gather(np.array([start]), np.array([max(0, stop - start)]))

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The items at `indices` (one read each)."""
        return self.gather(np.asarray(indices, dtype=np.int64), np.ones(len(indices), np.int64))

    def gather(self, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Items starts[k] .. starts[k] + counts[k] - 1 for every k, end to end."""
        size, fd = self.dtype.itemsize, self._open_fd()
        parts = []
        for start, n in zip(starts.tolist(), counts.tolist(), strict=True):
            if n <= 0:
                continue
            if start < 0 or start + n > self.count:
                raise IndexError(f"items {start}..{start + n - 1} outside {self.count}")
            buf = os.pread(fd, n * size, start * size)
            if len(buf) != n * size:
                raise InputError("shorter than its manifest says: damaged (prepare it again)",
                                 str(self.path))  # fmt: skip
            parts.append(buf)
        return np.frombuffer(b"".join(parts), dtype=self.dtype)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class Ragged:
    """Sequences of token ids stored end to end: sequence i is ids[offsets[i]:offsets[i + 1]].
    `ids` and `offsets` are arrays in memory or `IdFile`s of a prepared directory."""

    ids: np.ndarray | IdFile
    offsets: np.ndarray | IdFile
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.offsets.take(np.array([i]))[0])
        return self.ids[start : start + int(self.lengths[i])]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> Ragged:
        """An in-memory `Ragged` of small corpora (tests, synthetic data)."""
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = [t for s in seqs for t in s]
        return cls(np.array(flat, dtype=np.int64), offsets, lengths)

    def n_tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    def padded(self, rows: np.ndarray, *, reverse: bool = False, room: int = 0) -> np.ndarray:
        """The chosen sequences as a right-padded (B, W) int64 matrix, each read backwards when
        `reverse`; W is the longest length plus `room` free columns, and at least 1."""
        lens = self.lengths[rows].astype(np.int64)
        width = max(1, int(lens.max(initial=0)) + room)
        col = np.arange(width, dtype=np.int64)
        inside = col < lens[:, None]
        step = (lens[:, None] - 1 - col) if reverse else col
        starts = self.offsets.take(rows).astype(np.int64)
        if isinstance(self.ids, IdFile):  # read only these rows, end to end
            flat, starts = self.ids.gather(starts, lens), np.cumsum(lens) - lens
        else:
            flat = self.ids
        pos = np.where(inside, starts[:, None] + step, 0)
        if not flat.size:
            return np.full(pos.shape, PAD, dtype=np.int64)
        return np.where(inside, flat[pos], PAD).astype(np.int64)


@dataclass(frozen=True)
class EncodedCorpus:
    """Sentence pairs as token ids (no BOS/EOS; EOS is added when batching)."""

    src: Ragged
    tgt: Ragged

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def from_lists(
        cls, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]
    ) -> EncodedCorpus:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} source and {len(tgt)} target sentences")
        return cls(Ragged.from_lists(src), Ragged.from_lists(tgt))

    def n_tokens(self) -> tuple[int, int]:
        """Source words and target words (without EOS), as the paper counts words."""
        return self.src.n_tokens(), self.tgt.n_tokens()


def array_name(split: str, side: str, kind: str) -> str:
    return f"{split}.{side}.{kind}"


def _open_side(root: Path, files: dict[str, Any], split: str, side: str) -> Ragged:
    """One side of a split: lengths read into memory (batching reads them all), ids and offsets
    left on disk (`IdFile`)."""
    specs = {kind: files[array_name(split, side, kind)] for kind in ARRAYS}
    for kind, spec in specs.items():
        _check_size(root / array_name(split, side, kind), spec)

    def on_disk(kind: str) -> IdFile:
        return IdFile(root / array_name(split, side, kind), specs[kind]["dtype"],
                      specs[kind]["count"])  # fmt: skip

    lengths = np.fromfile(
        root / array_name(split, side, "len"),
        dtype=np.dtype(specs["len"]["dtype"]),
        count=specs["len"]["count"],
    )
    return Ragged(on_disk("ids"), on_disk("off"), lengths)


@dataclass(frozen=True)
class PreparedData:
    """A prepared-data directory opened for training: corpora read by rows, and vocabularies."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    settings: DataSettings
    src_vocab: Vocab
    tgt_vocab: Vocab
    train: EncodedCorpus
    valid: EncodedCorpus

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def report(self) -> dict[str, Any]:
        """The filter report, vocabulary sizes, OOV rates and word counts (training log)."""
        return dict(self.manifest["report"])

    @classmethod
    def open(cls, path: str | Path) -> PreparedData:
        """Open DIR written by `prepare`; a missing, foreign or damaged one is an `InputError`."""
        root = Path(path)
        manifest_path = root / MANIFEST
        manifest, raw = read_manifest(manifest_path)
        if manifest is None:
            raise InputError("not a prepared-data directory (no manifest.json)", str(root))
        files = manifest["files"]
        splits = {
            split: EncodedCorpus(*(_open_side(root, files, split, side) for side in SIDES))
            for split in SPLITS
        }
        vocabs = [
            Vocab.from_list(json.loads((root / f"vocab.{side}.json").read_text(encoding="utf-8")))
            for side in SIDES
        ]
        return cls(
            path=root,
            manifest=manifest,
            manifest_sha256=hashlib.sha256(raw).hexdigest(),
            settings=DataSettings.from_dict(manifest["settings"]),
            src_vocab=vocabs[0],
            tgt_vocab=vocabs[1],
            train=splits["train"],
            valid=splits["valid"],
        )


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, bytes]:
    """The manifest (None where there is no file) and its bytes; one of another format or
    version is an `InputError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, b""
    except NotADirectoryError as exc:
        raise InputError("not a directory", str(path.parent)) from exc
    try:
        manifest = json.loads(raw)
        fmt, version = manifest.get("format"), manifest.get("version")
    except (ValueError, AttributeError) as exc:
        raise InputError(f"unreadable manifest ({exc})", str(path)) from exc
    if fmt != FORMAT or version != VERSION:
        raise InputError(
            f"format {fmt!r} version {version!r}; this nbest_rescore reads {FORMAT!r} version "
            f"{VERSION} (prepare the corpus again)",
            str(path),
        )
    return manifest, raw


def _check_size(path: Path, spec: dict[str, Any]) -> None:
    expected = int(spec["count"]) * np.dtype(spec["dtype"]).itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError("missing from the prepared directory", str(path)) from None
    if size != expected:
        raise InputError(
            f"{size} bytes, the manifest says {expected}: damaged (prepare it again)", str(path)
        )
