"""Output files shared by the jobs: the chosen 1-best as tokens and as text, and the table of
every hypothesis' scores."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import atomic_write
from nbest_rescore.metrics import BleuConfig, detokenize
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


def write_selection(out_dir: Path, stem: str, surfaces: Sequence[str], config: BleuConfig) -> None:
    """`{stem}.tok.txt` and `{stem}.detok.txt`: the chosen hypotheses, one per sentence."""
    with atomic_write(out_dir / f"{stem}.tok.txt") as fh:
        fh.writelines(s + "\n" for s in surfaces)
    with atomic_write(out_dir / f"{stem}.detok.txt") as fh:
        fh.writelines(detokenize(s.split(), config.tgt_lang) + "\n" for s in surfaces)


def write_scores_table(
    path_stem: Path,
    table: NBestTable,
    choices: dict[str, np.ndarray],
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Every real hypothesis with its features, `extra` columns and which systems chose it, to
    parquet (pyarrow installed) or CSV; returns the path written."""
    real = table.real
    gid = np.repeat(np.arange(table.n_sentences), table.counts)
    rank = np.arange(len(gid)) - table.offsets[gid]
    df = pd.DataFrame({"sent_id": gid[real], "rank": rank[real]})
    for i, n in enumerate(table.names):
        df[n] = table.values[real, i]
    for n, col in (extra or {}).items():
        df[n] = col
    for name, choice in choices.items():
        chosen = np.zeros(len(gid), dtype=bool)
        chosen[table.rows_of(choice)] = True
        df[f"chosen.{name}"] = chosen[real]
    try:
        import pyarrow  # noqa: F401

        path = path_stem.with_suffix(".parquet")
        with atomic_write(path, "wb", gz=False) as fh:
            df.to_parquet(fh, index=False)
    except ImportError:
        path = path_stem.with_suffix(".csv")
        with atomic_write(path) as fh:
            df.to_csv(fh, index=False)
    return path
