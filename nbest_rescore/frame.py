"""`Frame`: the small column table that reports are made of, so writing one needs no pandas.

`rescore run` writes its report on every call, and importing pandas costs about half a second of
a one-sentence run's start-up. A report table is a handful of named columns of Python or numpy
scalars (text, numbers, bools; None for a missing value), written as Markdown, HTML, CSV and JSON
(`report.py`). `to_pandas` gives a DataFrame for analysis; `Frame.of` takes one in.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import pandas as pd


def plain(v: Any) -> Any:
    """A cell as a plain Python value: numpy scalars unwrapped, NaN as None."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def is_number(v: Any) -> bool:
    """A real number that is not a bool (bools are words in a table: True/False)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class Frame:
    """Named columns of equal length, in order; immutable once built."""

    __slots__ = ("_cols",)

    def __init__(self, columns: Mapping[Any, Iterable[Any]]) -> None:
        cols = {str(k): list(v) for k, v in columns.items()}
        lengths = {n: len(v) for n, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"a table's columns must have one length, got {lengths}")
        self._cols = cols

    @classmethod
    def from_records(
        cls, rows: Iterable[Mapping[Any, Any]], columns: Sequence[str] | None = None
    ) -> Frame:
        """One row per mapping; `columns` fixes the order (default: keys in order of appearance).
        A key a row lacks is a missing value (None)."""
        rows = [{str(k): v for k, v in r.items()} for r in rows]
        names = (
            list(columns)
            if columns is not None
            else list(dict.fromkeys(k for r in rows for k in r))
        )
        return cls({n: [r.get(n) for r in rows] for n in names})

    @classmethod
    def of(cls, table: Frame | pd.DataFrame) -> Frame:
        """A `Frame` as is, or a pandas DataFrame's columns (its index dropped)."""
        if isinstance(table, Frame):
            return table
        return cls({str(c): table[c].tolist() for c in table.columns})

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()), ()))

    @overload
    def __getitem__(self, key: str) -> list[Any]: ...

    @overload
    def __getitem__(self, key: list[str] | tuple[str, ...]) -> Frame: ...

    def __getitem__(self, key: str | list[str] | tuple[str, ...]) -> list[Any] | Frame:
        """A column's values (a copy), or a frame of the named columns in that order."""
        if isinstance(key, str):
            return list(self._cols[key])
        return Frame({k: self._cols[k] for k in key})

    def __eq__(self, other: object) -> bool:
        """Same columns and cells as plain values (a NaN equals a NaN: both are missing)."""
        return (
            isinstance(other, Frame)
            and self.columns == other.columns
            and self.records() == other.records()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Frame({len(self)} rows x {self.columns})"

    def rows(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self._cols.values(), strict=True) if self._cols else iter(())

    def records(self) -> list[dict[str, Any]]:
        """One dict per row, cells as plain Python values (numpy unwrapped, NaN as None)."""
        names = self.columns
        return [{n: plain(v) for n, v in zip(names, row, strict=True)} for row in self.rows()]

    def is_text(self, column: str) -> bool:
        """A column of words (names, sentences): not every present value is a number."""
        present = [v for v in self._cols[column] if plain(v) is not None]
        return not present or not all(is_number(v) for v in present)

    def to_csv(self, *, header: bool = True) -> str:
        """CSV (with a header line unless `header` is False, for a table written in pieces);
        missing values empty, floats in their shortest exact form."""

        def cell(v: Any) -> str:
            v = plain(v)
            return "" if v is None else repr(v) if isinstance(v, float) else str(v)

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if header:
            w.writerow(self.columns)
        w.writerows([cell(v) for v in row] for row in self.rows())
        return buf.getvalue()

    def to_json(self) -> str:
        """The rows as a JSON list of objects (missing values null)."""
        return json.dumps(self.records(), indent=2, ensure_ascii=False, default=str) + "\n"

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({n: list(v) for n, v in self._cols.items()}, columns=self.columns)
