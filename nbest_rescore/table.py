"""An n-best list in memory as arrays: the one table that `rescore run`, `rerank`, MERT and the
BLEU reports share, read from the file in one pass.

CSR layout, the same as `metrics.HypStats`: rows ``offsets[i]:offsets[i+1]`` are sentence i's
hypotheses in file order. A sentence the decoder produced nothing for (an id missing from the file)
gets one synthetic row, the empty hypothesis with all features 0, flagged in ``missing``: every
sentence has at least one row, so a *choice* (one 0-based rank per sentence) always exists and a
failed sentence yields an empty output line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, overload

import numpy as np

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike
from nbest_rescore.memory import release_memory
from nbest_rescore.nbest_reader import NBestBlock, NBestReader
from nbest_rescore.nbest_writer import format_number
from nbest_rescore.validate import check_finite, check_lengths

TOTAL = "total"
"""Column name of the decoder's total, the 4th field of an n-best line."""


class Sentence(NamedTuple):
    """One sentence's hypotheses as text, what BLEU statistics need (`metrics.compute_hyp_stats`)."""

    sent_id: int
    surfaces: list[str]
    """Tokens joined by single spaces, best first."""


class Surfaces(Sequence[str]):
    """The hypotheses' texts, one per table row, stored compactly: one UTF-8 buffer with a newline
    after each row (a surface holds none) and int64 row offsets, about 70 bytes a hypothesis less
    than a tuple of Python strings. Indexing decodes one row; iteration decodes a block at once."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray) -> None:
        self.buffer = buffer
        self.offsets = offsets

    @classmethod
    def of(cls, texts: Iterable[str]) -> Surfaces:
        encoded = [t.encode() + b"\n" for t in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(buffer, np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(lo, hi, step)]
            return self.rows(lo, hi)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.buffer[a : b - 1].tobytes().decode()

    def rows(self, lo: int, hi: int) -> list[str]:
        """Rows lo..hi-1, decoded at once."""
        if hi <= lo:
            return []
        a, b = int(self.offsets[lo]), int(self.offsets[hi])
        return self.buffer[a : b - 1].tobytes().decode().split("\n")

    def __iter__(self) -> Iterator[str]:
        step = 1 << 16
        for lo in range(0, len(self), step):
            yield from self.rows(lo, min(lo + step, len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Surfaces | tuple | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def n_tokens(self) -> np.ndarray:
        """(rows,) tokens per row (single-space separated; 0 for an empty row)."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        out = np.zeros(len(self), dtype=np.int64)
        step = 1 << 16  # rows at a time: reduceat casts its input to the output type
        for lo in range(0, len(self), step):
            hi = min(lo + step, len(self))
            a, b = int(self.offsets[lo]), int(self.offsets[hi])
            spaces = self.buffer[a:b] == 32
            counts = np.add.reduceat(spaces, self.offsets[lo:hi] - a, dtype=np.int64)
            out[lo:hi] = np.where(np.diff(self.offsets[lo : hi + 1]) == 1, 0, counts + 1)
        return out

    def padded(self, extra: int) -> Surfaces:
        """These rows and `extra` empty ones."""
        buffer = np.concatenate([self.buffer, np.full(extra, 10, dtype=np.uint8)])
        ends = self.offsets[-1] + np.arange(1, extra + 1)
        return Surfaces(buffer, np.concatenate([self.offsets, ends]))


@dataclass(frozen=True, eq=False)
class NBestTable:
    """Per-hypothesis feature values (n_rows, d) with column names, surfaces and the CSR offsets."""

    names: tuple[str, ...]
    values: np.ndarray
    offsets: np.ndarray
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(n_sentences,) True where the sentence's only row is the synthetic empty hypothesis."""
    surfaces: Surfaces = field(default_factory=lambda: Surfaces.of(()))
    """Tokens joined by single spaces, one per row ("" for synthetic rows); may be left empty."""
    labeled: bool = True
    """False when the list's features carry no labels: its columns are then F0, F1, ... in file
    order, and features appended to it are written unlabelled too."""

    def __post_init__(self) -> None:
        if len(self.missing) != self.n_sentences:
            object.__setattr__(self, "missing", np.zeros(self.n_sentences, dtype=bool))
        if not isinstance(self.surfaces, Surfaces):
            object.__setattr__(self, "surfaces", Surfaces.of(self.surfaces))

    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_hypotheses(self) -> int:
        """Real hypotheses (synthetic rows excluded)."""
        return int(len(self.values) - self.missing.sum())

    @property
    def real(self) -> np.ndarray:
        """(n_rows,) True for rows that are lines of the file."""
        return ~np.repeat(self.missing, self.counts)

    def column(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def select(self, names: Sequence[str]) -> NBestTable:
        """A table restricted to the named columns, in that order."""
        idx = [self.names.index(n) for n in names]
        return NBestTable(
            tuple(names),
            self.values[:, idx],
            self.offsets,
            self.missing,
            self.surfaces,
            self.labeled,
        )

    def padded(self, n_sentences: int) -> NBestTable:
        """The table with trailing sentences up to `n_sentences` (ids the file never reached) as
        sentences without hypotheses."""
        extra = n_sentences - self.n_sentences
        if extra <= 0:
            return self
        return NBestTable(
            self.names,
            np.concatenate([self.values, np.zeros((extra, len(self.names)))]),
            np.concatenate([self.offsets, self.offsets[-1] + np.arange(1, extra + 1)]),
            np.concatenate([self.missing, np.ones(extra, dtype=bool)]),
            self.surfaces.padded(extra),
            self.labeled,
        )

    def subset(self, sentences: np.ndarray) -> tuple[NBestTable, np.ndarray]:
        """The table of the given sentences, in that order (repeats allowed: a bootstrap
        resample), and the rows of this table it holds; surfaces are left out."""
        sentences = np.asarray(sentences, dtype=np.int64)
        counts = self.counts[sentences]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(self.offsets.dtype)
        rows = np.repeat(self.offsets[sentences] - offsets[:-1], counts) + np.arange(offsets[-1])
        table = NBestTable(
            self.names, self.values[rows], offsets, self.missing[sentences], labeled=self.labeled
        )
        return table, rows

    def rows_of(self, choice: np.ndarray) -> np.ndarray:
        """Row index of every sentence's chosen hypothesis."""
        return self.offsets[:-1] + np.asarray(choice, dtype=np.int64)

    def chosen_surfaces(self, choice: np.ndarray) -> list[str]:
        """The chosen hypothesis of every sentence ("" for a sentence without hypotheses)."""
        surfaces = self.surfaces
        return [surfaces[r] for r in self.rows_of(choice).tolist()]

    def sentences(self) -> Iterator[Sentence]:
        """The sentences with real hypotheses, their surfaces as stored (`metrics.compute_hyp_stats`
        input)."""
        for i in np.flatnonzero(~self.missing).tolist():
            yield Sentence(i, self.surfaces.rows(int(self.offsets[i]), int(self.offsets[i + 1])))


def column_names(group_names: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """Flat column names for labelled dense groups: `LM0` for one value, `TM0.0 TM0.1 ..` for more."""
    out: list[str] = []
    for name, n in group_names:
        out.extend([name] if n == 1 else [f"{name}.{i}" for i in range(n)])
    return tuple(out)


def table_from_blocks(
    blocks: Iterable[NBestBlock],
    path: PathLike,
    n_sentences: int | None = None,
    spare_columns: int = 0,
) -> NBestTable:
    """The decoder's total, every dense feature and every surface of the column blocks of
    `nbest_reader.read_nbest_blocks`, built with array operations. The dense layout comes from
    the first line; a line whose layout differs is an error (a linear model needs the same columns
    on every line; Moses' tuners require this too). The blocks' columns are copied
    into the final arrays one block at a time and dropped, so the peak memory is about that of
    the table itself. With `spare_columns`, `values` is the left part of a wider zeroed array,
    which `spare_view` hands to whoever adds that many columns (no copy of the table)."""
    layout: tuple[tuple[str, int], ...] | None = None
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, bytes]] = []
    for b in blocks:
        if not len(b):
            continue
        this = tuple(zip(b.layout.names, b.layout.sizes, strict=True))
        if layout is None:
            layout = this
        elif this != layout:
            raise InputError(
                f"sentence {int(b.sent_ids[0])}: dense features {_layout_text(this)} differ from "
                f"the first line's {_layout_text(layout)} (every line needs the same features)",
                str(path),
                int(b.lines[0]),
            )
        text = "\n".join(b.surfaces) + "\n"
        parts.append((b.sent_ids, b.totals, b.dense, text.encode()))
        if len(parts) % 64 == 0:
            release_memory()  # the freed block buffers lie between the kept columns
    width = sum(n for _, n in layout or ())
    sent = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    n_sent = n_sentences if n_sentences is not None else (int(sent[-1]) + 1 if len(sent) else 0)
    counts = np.bincount(sent, minlength=n_sent)
    missing = counts == 0
    offsets = np.concatenate(([0], np.cumsum(np.maximum(counts, 1)))).astype(np.int64)
    first_real = np.concatenate(([0], np.cumsum(counts)))[:-1]
    rows = offsets[:-1][sent] + (np.arange(len(sent)) - first_real[sent])
    del sent, first_real
    n_rows = int(offsets[-1])
    values = np.zeros((n_rows, 1 + width + spare_columns), dtype=np.float64)[:, : 1 + width]
    buffer = np.empty(sum(len(p[3]) for p in parts), dtype=np.uint8)  # the file's rows, in order
    lengths: list[np.ndarray] = []
    pos = at = 0
    while parts:  # copied block by block, each block dropped once copied
        ids, totals, dense, data = parts.pop(0)
        n = len(ids)
        values[rows[pos : pos + n], 0] = totals
        values[rows[pos : pos + n], 1:] = dense.reshape(n, width)
        src = np.frombuffer(data, dtype=np.uint8)
        buffer[at : at + len(src)] = src
        lengths.append(np.diff(np.flatnonzero(src == 10), prepend=-1))
        pos, at = pos + n, at + len(src)
        if len(parts) % 64 == 0:
            release_memory()
    row_bytes = np.ones(n_rows, dtype=np.int64)  # a synthetic row is its newline alone
    row_bytes[rows] = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    text_offsets = np.concatenate(([0], np.cumsum(row_bytes))).astype(np.int64)
    if missing.any():  # each synthetic row's newline goes where its row starts among the real ones
        synthetic = offsets[:-1][missing]
        buffer = np.insert(buffer, text_offsets[synthetic] - np.arange(len(synthetic)), 10)
    release_memory()
    return NBestTable(
        (TOTAL, *column_names(layout or ())),
        values,
        offsets,
        missing,
        Surfaces(buffer, text_offsets),
    )


def _layout_text(layout: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{name}({n})" for name, n in layout) or "(none)"


def read_table(
    path: PathLike,
    *,
    n_sentences: int | None = None,
    max_hyps: int | None = None,
    max_len: int | None = None,
    spare_columns: int = 0,
) -> NBestTable:
    """Read an n-best list once into a table (see `nbest_reader.read_nbest` for the arguments)
    and validate it (`validate.py`): at least one hypothesis, finite numbers, the same dense
    layout on every line and, with `max_len`, no hypothesis longer than that many tokens. Errors
    name the file and line (exit 2). `spare_columns`: room for columns added later (`spare_view`)."""
    options = {"n_sentences": n_sentences, "max_hyps": max_hyps, "max_len": max_len}
    return _read_table(path, spare_columns=spare_columns, hash_bytes=False, **options)[0]


def read_table_hashed(
    path: PathLike,
    *,
    n_sentences: int | None = None,
    max_hyps: int | None = None,
    max_len: int | None = None,
    spare_columns: int = 0,
) -> tuple[NBestTable, str]:
    """`read_table` and the SHA-256 of the file's bytes as stored, from the one read of it (a
    run records its inputs by their hashes)."""
    options = {"n_sentences": n_sentences, "max_hyps": max_hyps, "max_len": max_len}
    table, sha256 = _read_table(path, spare_columns=spare_columns, hash_bytes=True, **options)
    assert sha256 is not None  # the table reads the whole file
    return table, sha256


def _read_table(
    path: PathLike,
    *,
    n_sentences: int | None,
    max_hyps: int | None,
    max_len: int | None,
    spare_columns: int,
    hash_bytes: bool,
) -> tuple[NBestTable, str | None]:
    reader = NBestReader(
        path, n_sentences=n_sentences, max_hyps=max_hyps, labeled=None, hash_bytes=hash_bytes
    )
    table = table_from_blocks(reader, path, n_sentences, spare_columns)
    if reader.labeled is False:
        object.__setattr__(table, "labeled", False)  # the reader learns it while reading
    if table.n_hypotheses == 0:
        raise InputError("the n-best list has no hypotheses (empty file?)", str(path))
    check_finite(table.names, table.values, table.offsets, path)
    if max_len is not None:
        check_lengths(table.surfaces.n_tokens(), table.offsets, max_len, path)
    return table, reader.sha256


def spare_view(values: np.ndarray, width: int) -> np.ndarray | None:
    """The `width`-column array whose left part `values` is (from `spare_columns`), or None when
    `values` has no such room: then the caller must allocate."""
    base = values.base
    if not isinstance(base, np.ndarray) or base.shape != (len(values), width):
        return None
    same_start = values.__array_interface__["data"] == base.__array_interface__["data"]
    return base if same_start and values.strides == base.strides else None


def as_written(x: np.ndarray) -> np.ndarray:
    """Values rounded as `nbest_writer.format_number` writes them, so that a list we write and read back
    gives exactly the numbers we computed with."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(len(x), dtype=np.float64)
    step = 1 << 16  # a piece at a time: no Python float per value of a whole 3M-row column
    for lo in range(0, len(x), step):
        piece = x[lo : lo + step].tolist()
        out[lo : lo + step] = [float(format_number(v)) for v in piece]
    return out
