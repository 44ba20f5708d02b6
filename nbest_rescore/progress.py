"""Progress bars: items/s and ETA on a TTY, silent when piped or when the user asks for quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported when a bar is drawn: `rescore --help` needs none
    from tqdm import tqdm

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ProgressSettings:
    """Whether to show progress; `enabled=None` means "only when stderr is a terminal"."""

    enabled: bool | None = None

    @property
    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return sys.stderr.isatty()


QUIET = ProgressSettings(enabled=False)


def progress(
    items: Iterable[T],
    settings: ProgressSettings = QUIET,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap `items` in a tqdm bar when `settings.active`, else return them untouched."""
    if not settings.active:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


def bar(
    settings: ProgressSettings, *, desc: str = "", total: int | None = None, unit: str = "it"
) -> tqdm:  # type: ignore[type-arg]
    """A manual tqdm bar (call `.update(n)`); disabled when not active."""
    from tqdm import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not settings.active,
    )
