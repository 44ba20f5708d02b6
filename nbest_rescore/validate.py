"""Checks at the edges, made once before any expensive work (issue 10: never silently wrong).

- Numeric options: `option_at_least`, `option_above`, `option_at_most`, `option_finite`,
  `option_in_range` raise `OptionError` (an `InputError`) naming the option (exit 2).
- The numbers of an n-best list, once it is a `table.NBestTable`: `check_finite` refuses a
  non-finite total or feature, and `check_lengths` a hypothesis longer than `max_len` tokens
  (`check_source_lengths`: a source line), naming file:line.
  Rule for non-finite numbers: they are an error, never a score (a NaN would lose its sentence's
  output, an inf would shift every scale-aware weight).
- `line_of`: the 1-based line of a sentence's k-th hypothesis (a second pass over the file, made
  only on the error path, so the fast reader never has to carry line numbers).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike

if TYPE_CHECKING:  # numpy is imported where arrays are checked: `rescore --help` needs none
    import numpy as np

DEFAULT_MAX_LEN = 1000
"""Longest hypothesis (and source), in tokens, that `rescore run` scores. Scoring memory grows
with (hypotheses of a chunk) x (longest hypothesis of the chunk), so an unbounded length could
exhaust memory; a longer line is an exit-2 error naming it (`--max-len` raises the bound)."""


MAX_THREADS = 1024
"""Most CPU threads a command may ask for (`--threads`). Each thread reserves its own stack, so
a huge count exhausts the process' memory and the next allocation fails (loading a checkpoint
then failed as if the file were corrupt); threads beyond the cores only slow the work down."""


class OptionError(InputError, ValueError):
    """A command-line option (or config field) out of its range; also a ValueError for callers
    that construct configs directly."""


def option_at_least(option: str, value: float | None, minimum: float) -> None:
    """`value` (if given) must be a finite number >= `minimum`."""
    if value is None:
        return
    option_finite(option, value)
    if value < minimum:
        raise OptionError(f"{option} must be >= {minimum:g}, got {value:g}")


def option_above(option: str, value: float | None, bound: float) -> None:
    """`value` (if given) must be a finite number > `bound`."""
    if value is None:
        return
    option_finite(option, value)
    if value <= bound:
        raise OptionError(f"{option} must be > {bound:g}, got {value:g}")


def option_at_most(option: str, value: float | None, maximum: float) -> None:
    """`value` (if given) must be a finite number <= `maximum`."""
    if value is None:
        return
    option_finite(option, value)
    if value > maximum:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise OptionError(f"{option} must be <= {maximum:g}, got {shown}")


def option_finite(option: str, value: float | None) -> None:
    """`value` (if given) must be a finite number (not nan or inf)."""
    if value is not None and not math.isfinite(value):
        raise OptionError(f"{option} must be a finite number, got {value}")


def option_in_range(option: str, value: float | None, lo: float, hi: float) -> None:
    """`value` (if given) must lie in [lo, hi)."""
    if value is None:
        return
    option_finite(option, value)
    if not lo <= value < hi:
        raise OptionError(f"{option} must be in [{lo:g}, {hi:g}), got {value:g}")


def line_of(path: PathLike, sent_id: int, rank: int) -> int | None:
    """The 1-based line number of the `rank`-th (0-based) hypothesis of sentence `sent_id`."""
    from nbest_rescore.nbest_reader import iter_lines

    seen = 0
    for line_no, line in iter_lines(path):
        head = line.split("|||", 1)[0].strip()
        if head.isdigit() and int(head) == sent_id:
            if seen == rank:
                return line_no
            seen += 1
    return None


def check_finite(
    names: tuple[str, ...], values: np.ndarray, offsets: np.ndarray, path: PathLike
) -> None:
    """Every total and feature value must be finite; the first that is not names its line."""
    import numpy as np

    bad = ~np.isfinite(values)
    if not bad.any():
        return
    row, col = (int(x) for x in np.argwhere(bad)[0])
    sent = int(np.searchsorted(offsets, row, side="right") - 1)
    rank = row - int(offsets[sent])
    what = "total" if names[col] == "total" else f"feature {names[col]}"
    raise InputError(
        f"non-finite {what} value {values[row, col]} (sentence {sent}, hypothesis {rank + 1}): "
        "every number of an n-best line must be finite",
        str(path),
        line_of(path, sent, rank),
    )


def check_lengths(n_tokens: np.ndarray, offsets: np.ndarray, max_len: int, path: PathLike) -> None:
    """No hypothesis may have more than `max_len` tokens (see `DEFAULT_MAX_LEN`); `n_tokens` holds
    each table row's token count."""
    import numpy as np

    long = np.flatnonzero(n_tokens > max_len)
    if len(long):
        row = int(long[0])
        sent = int(np.searchsorted(offsets, row, side="right") - 1)
        rank = row - int(offsets[sent])
        raise InputError(
            f"hypothesis of {int(n_tokens[row])} tokens (sentence {sent}): longer than "
            f"--max-len {max_len}",
            str(path),
            line_of(path, sent, rank),
        )


def check_source_lengths(lines: list[str], max_len: int, path: PathLike) -> None:
    """No source line may have more than `max_len` space-separated words."""
    for i, s in enumerate(lines, start=1):
        if len(s) > max_len and len(s.split()) > max_len:
            raise InputError(
                f"source sentence of {len(s.split())} words: longer than --max-len {max_len}",
                str(path),
                i,
            )
