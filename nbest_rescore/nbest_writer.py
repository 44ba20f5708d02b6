"""Moses n-best list writing: lines that round-trip through `nbest_reader`.

Round trip: `write_nbest(read_nbest(f))` reproduces `f` byte for byte except that the surface is
written as its tokens joined by single spaces, without the trailing space Moses writes before
`` ||| ``. Features, total and extra fields are written from their text as read, while that text
still says what the hypothesis holds (a caller may have replaced them with `dataclasses.replace`).
Also normalised: CRLF line ends (to LF), a UTF-8 byte order mark (dropped), and a separator
written without its spaces (``3 ||| ||| F= 1 ||| -2`` is read, and written back as
``3 |||  ||| F= 1 ||| -2``).

Numbers the writer formats itself (added features, or fields a caller replaced) use `format_number`:
``%g`` with 7 significant digits (Moses prints 6; one more keeps 4 decimals for scores around -100).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from nbest_rescore.fileio import PathLike, atomic_write
from nbest_rescore.nbest_reader import (
    FIELD_SEP,
    Feature,
    Hypothesis,
    NBestGroup,
    parse_features,
)

NUMBER_DIGITS = 7  # significant digits of the numbers the writer formats (see format_number)


def format_number(value: float) -> str:
    """A number as the writer prints it: ``%g`` with NUMBER_DIGITS significant digits."""
    return f"{value:.{NUMBER_DIGITS}g}"


def _format_group(name: str, values: Sequence[float], style: str) -> str:
    nums = " ".join(map(format_number, values))
    if not style:
        return nums
    return f"{name}{style} {nums}" if nums else f"{name}{style}"


def format_features(features: Sequence[Feature], sparse: Sequence[tuple[str, float]] = ()) -> str:
    """A FEATURES field: dense groups in order, then sparse ``name= value`` pairs."""
    parts = [_format_group(f.name, f.values, f.style) for f in features]
    parts.extend(f"{name}= {format_number(value)}" for name, value in sparse)
    return " ".join(p for p in parts if p)


@functools.lru_cache(maxsize=256)
def _check_added(name: str, style: str) -> None:
    """Refuse feature names that would not read back as one dense group (cached: a list adds
    the same few names to every line)."""
    if style not in ("=", ":", ""):
        raise ValueError(f"feature {name!r}: style must be '=', ':' or '', not {style!r}")
    if style and (not name or any(c.isspace() for c in name) or "|||" in name):
        raise ValueError(f"feature name {name!r} must be non-empty without spaces or '|||'")
    if style and name[-1] in "=:":
        raise ValueError(f"feature name {name!r} must not end with '=' or ':'")
    if style == "=" and "_" in name:
        raise ValueError(
            f"feature name {name!r} contains '_': Moses' tuners would read it as a sparse feature"
        )


def format_hypothesis(h: Hypothesis, extra_features: Sequence[Feature] = ()) -> str:
    """One n-best line (no newline): ``ID ||| surface ||| features ||| total[ ||| extra]...``.

    The surface is the tokens joined by single spaces (no trailing space). The FEATURES and TOTAL
    text as read is reused while it still matches `features`, `sparse` and `total` (so a line
    read is written back unchanged); otherwise the numbers are formatted with `format_number`.
    `extra_features` go at the end of the FEATURES field, as Moses' rescoring scripts put them;
    in an unlabelled list (every feature has style "") they are written unlabelled too, so the
    file stays readable. Names that Moses would misread (with '_', spaces, '=' or ':') raise
    ValueError.
    """
    if h.raw_features and parse_features(h.raw_features) == (h.features, h.sparse):
        feats = h.raw_features
    else:
        feats = format_features(h.features, h.sparse)
    if extra_features:
        for f in extra_features:
            _check_added(f.name, f.style)
        unlabelled = bool(h.features) and all(f.style == "" for f in h.features)
        if unlabelled:
            extra_features = [Feature(f.name, f.values, "") for f in extra_features]
        added = format_features(extra_features)
        feats = f"{feats} {added}" if feats else added
    total = h.raw_total
    try:
        same_total = bool(total) and float(total) == h.total
    except ValueError:
        same_total = False
    if not same_total:
        total = format_number(h.total)
    return FIELD_SEP.join([str(h.sent_id), " ".join(h.tokens), feats, total, *h.extra])


def write_nbest(
    path: PathLike,
    groups: Iterable[NBestGroup],
    extra: Callable[[Hypothesis], Sequence[Feature]] | None = None,
) -> None:
    """Write groups as an n-best list: atomically (temp file + rename), gzipped for a .gz path,
    to stdout for "-". `extra(h)` gives features to append to each line."""

    def emit(out: IO[str]) -> None:
        for group in groups:
            if extra is None:
                lines = [format_hypothesis(h) for h in group.hyps]
            else:
                lines = [format_hypothesis(h, extra(h)) for h in group.hyps]
            if lines:
                lines.append("")
                out.write("\n".join(lines))

    if str(path) == "-":
        emit(sys.stdout)
        sys.stdout.flush()
        return
    with atomic_write(path) as out:
        emit(out)
