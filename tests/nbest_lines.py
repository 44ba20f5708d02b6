"""The real Moses slice of tests/data as lines, and small helpers the n-best tests share
(`test_nbest_reader`, `test_nbest_writer`, `test_nbest_stats`)."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from nbest_rescore.nbest_reader import Hypothesis, read_nbest

DATA = Path(__file__).parent / "data"
SLICE = DATA / "test2016.head30.top20.nbest.gz"
LABELS = (
    "LexicalReordering0",
    "Distortion0",
    "LM0",
    "WordPenalty0",
    "PhrasePenalty0",
    "TranslationModel0",
)


@functools.cache
def real_lines() -> tuple[str, ...]:
    """The lines of the real slice, without their newline."""
    with gzip.open(SLICE, "rt", encoding="utf-8", newline="\n") as fh:
        return tuple(fh.read().split("\n")[:-1])


def lines_of(sent_id: int) -> list[str]:
    """The real lines of one sentence."""
    return [line for line in real_lines() if line.startswith(f"{sent_id} ||| ")]


def moses_to_ours(text: str) -> str:
    """What our writer produces for Moses text: no trailing space after the surface."""
    return text.replace("  ||| ", " ||| ")


def write_text(path: Path, lines: list[str] | tuple[str, ...], *, newline: str = "\n") -> Path:
    """Write lines as UTF-8 (gzipped if the name ends in .gz)."""
    data = "".join(line + newline for line in lines).encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def all_hyps(path: Path, **kwargs: object) -> list[Hypothesis]:
    return [h for g in read_nbest(path, **kwargs) for h in g.hyps]  # type: ignore[arg-type]
