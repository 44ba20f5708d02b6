"""Token-id corpora as flat arrays, and the prepared-data directory that holds them on disk.

A side of a corpus is a `Ragged` array: every sentence's ids end to end in one array, with an
offsets array (sentence i is ids[offsets[i]:offsets[i + 1]]) and a lengths array, the only part
that batching reads in full. `rescore prepare` (`prepare.py`) writes them; `PreparedData.open`
memory-maps them, so a 12M-pair corpus costs its index arrays in RAM and the pages that batches
touch, which `release` hands back. Layout of a prepared directory (format `FORMAT`, version
`VERSION`):

    manifest.json                 settings, inputs (size, sha256), files, filter report, key
    vocab.src.json vocab.tgt.json the vocabularies (JSON lists, ids = positions)
    {train,valid}.{src,tgt}.ids   token ids, uint16 when the vocabulary fits, else int32
    {train,valid}.{src,tgt}.off   int64 offsets, one more than sentences
    {train,valid}.{src,tgt}.len   sentence lengths, the smallest unsigned type that holds them
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class Ragged:
    """Sequences of token ids stored end to end: sequence i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    maps: tuple[mmap.mmap, ...] = field(default=(), repr=False, compare=False)
    """The memory maps behind `ids` and `offsets` (empty in memory), for `release`."""

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[int(self.offsets[i]) : int(self.offsets[i + 1])]

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
        pos = np.where(inside, self.offsets[rows][:, None] + step, 0)
        if not self.ids.size:
            return np.full(pos.shape, PAD, dtype=np.int64)
        return np.where(inside, self.ids[pos], PAD).astype(np.int64)

    def release(self) -> None:
        """Give the mapped pages read so far back to the OS (they stay in the page cache), so
        that this process' resident memory does not grow with the corpus it has visited."""
        for m in self.maps:
            m.madvise(mmap.MADV_DONTNEED)


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

    def release(self) -> None:
        self.src.release()
        self.tgt.release()


def array_name(split: str, side: str, kind: str) -> str:
    return f"{split}.{side}.{kind}"


def _map_array(path: Path, dtype: str, count: int) -> tuple[np.ndarray, mmap.mmap | None]:
    """A read-only memory map of `count` items of `dtype` (an empty array for no items)."""
    dt = np.dtype(dtype)
    if count == 0:
        return np.empty(0, dtype=dt), None
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(m, dtype=dt, count=count), m


@dataclass(frozen=True)
class PreparedData:
    """A prepared-data directory opened for training: memory-mapped corpora and vocabularies."""

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
        splits: dict[str, EncodedCorpus] = {}
        for split in SPLITS:
            sides = []
            for side in SIDES:
                arrays, maps = [], []
                for kind in ARRAYS:
                    name = array_name(split, side, kind)
                    spec = files[name]
                    _check_size(root / name, spec)
                    arr, m = _map_array(root / name, spec["dtype"], spec["count"])
                    arrays.append(arr)
                    if m is not None and kind != "len":
                        maps.append(m)
                ids, off, lengths = arrays
                sides.append(Ragged(ids, off, lengths, maps=tuple(maps)))
            splits[split] = EncodedCorpus(*sides)
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
