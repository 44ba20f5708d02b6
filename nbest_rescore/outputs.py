"""Output files shared by the jobs: the chosen 1-best as tokens and as text, and the table of
every hypothesis' scores."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import atomic_write
from nbest_rescore.frame import Frame
from nbest_rescore.metrics import BleuConfig, detokenize_moses
from nbest_rescore.table import NBestTable


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Create the `--out` directory and make sure a file can be written there (before any long
    work); a path that exists as a file, or a directory we cannot write, is a user error (exit 2)
    naming the path and the OS's reason."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} must name a directory, but this is a file", str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the {option} directory ({exc.strerror})", str(out)
        ) from exc
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".write-probe-") as fh:
            fh.write(b"x")
    except OSError as exc:
        raise InputError(
            f"cannot write in the {option} directory ({exc.strerror})", str(out)
        ) from exc


def missing_note(missing: np.ndarray) -> str | None:
    """What the console and report say about sentences without hypotheses (None if there are
    none): each gets an empty output line, in `rescore run`, `rerank` and `oracle` alike."""
    ids = np.flatnonzero(missing)
    if not len(ids):
        return None
    shown = ", ".join(map(str, ids[:10].tolist())) + (", ..." if len(ids) > 10 else "")
    return f"{len(ids)} sentence(s) without hypotheses (ids {shown}): their output lines are empty"


def selection_files(stem: str) -> tuple[str, str]:
    """The names `write_selection` writes: the chosen hypotheses as tokens and as text."""
    return f"{stem}.tok.txt", f"{stem}.detok.txt"


def write_selection(out_dir: Path, stem: str, surfaces: Sequence[str], config: BleuConfig) -> None:
    """`{stem}.tok.txt` and `{stem}.detok.txt`: the chosen hypotheses, one per sentence."""
    tok, detok = selection_files(stem)
    with atomic_write(out_dir / tok) as fh:
        fh.writelines(s + "\n" for s in surfaces)
    with atomic_write(out_dir / detok) as fh:
        fh.writelines(detokenize_moses(s.split(), config.tgt_lang) + "\n" for s in surfaces)


SCORES_ROWS = 1 << 16
"""Rows per parquet row group (and per CSV piece): the table is written piece by piece, so its
memory does not grow with the list."""


def write_scores_table(
    path_stem: Path,
    table: NBestTable,
    choices: dict[str, np.ndarray],
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Every real hypothesis with its features, `extra` columns and which systems chose it, to
    parquet (pyarrow installed) or CSV, `SCORES_ROWS` rows at a time; returns the path written."""
    real_rows = np.flatnonzero(table.real)
    chosen = np.zeros((len(table.values), len(choices)), dtype=bool)
    for j, choice in enumerate(choices.values()):
        chosen[table.rows_of(choice), j] = True
    gid = np.repeat(np.arange(table.n_sentences), table.counts)

    def piece(lo: int, hi: int) -> dict[str, np.ndarray]:
        rows = real_rows[lo:hi]
        cols = {"sent_id": gid[rows], "rank": rows - table.offsets[gid[rows]]}
        for i, n in enumerate(table.names):
            cols[n] = table.values[rows, i]
        for n, col in (extra or {}).items():
            cols[n] = np.asarray(col[lo:hi])
        for j, name in enumerate(choices):
            cols[f"chosen.{name}"] = chosen[rows, j]
        return cols

    starts = range(0, max(len(real_rows), 1), SCORES_ROWS)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path = path_stem.with_suffix(".csv")
        with atomic_write(path) as fh:
            for lo in starts:
                cols = piece(lo, lo + SCORES_ROWS)
                frame = Frame({n: c.tolist() for n, c in cols.items()})
                fh.write(frame.to_csv(header=lo == 0))
        return path
    path = path_stem.with_suffix(".parquet")
    with atomic_write(path, "wb", gz=False) as fh:
        writer = None
        for lo in starts:
            cols = piece(lo, lo + SCORES_ROWS)
            part = pa.Table.from_arrays([_arrow(pa, c) for c in cols.values()], names=list(cols))
            if writer is None:
                writer = pq.ParquetWriter(fh, part.schema)
            writer.write_table(part)
        if writer is not None:
            writer.close()
    return path


def _arrow(pa: Any, col: np.ndarray) -> Any:
    """A numpy column as an arrow array, built from its buffers: `pa.array` would import pandas
    (half a second of every run's start-up) only to ask whether the column is a pandas Series."""
    if col.dtype == np.bool_:
        bits = np.packbits(col, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(col), [None, pa.py_buffer(bits)])
    data = np.ascontiguousarray(col)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(data.dtype), len(data), [None, pa.py_buffer(data)]
    )
