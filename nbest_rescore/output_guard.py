"""The one output-path rule of every command: no output may be one of the command's inputs.

The atomic writer replaces its target by rename (and writes a symlink through to its file), so an
output that is an input would destroy it: named directly, as `./x` for `x`, through a symlink or
a hard link, as stdin/stdout redirected from/to it, or as a file that an `--out` directory
receives. `check_outputs` refuses all of these with an `InputError` (exit 2) at the command's
edge, before any work. Streams (devices, FIFOs, a terminal) are never the same *file* as an input:
`translate -i /dev/stdin -o /dev/stdout` on a terminal is fine.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, output_kind

InputPaths = Mapping[str, PathLike | Sequence[PathLike] | None]
"""A command's inputs by option name (`--nbest`, ...): a path, several (`--model`), or None."""


@dataclass(frozen=True)
class OutDir:
    """A directory a command writes into: its option, its path and the files it writes there,
    as glob patterns relative to it (`*` does not cross `/`)."""

    option: str
    path: Path
    files: tuple[str, ...]


@dataclass(frozen=True)
class _Input:
    option: str
    shown: str
    identity: tuple[int, int] | None
    """(device, inode) when it is a regular file, links followed."""
    real: str | None
    """Its resolved path, unless it is a stream."""


def check_outputs(
    inputs: InputPaths,
    files: Mapping[str, PathLike | None] | None = None,
    dirs: Sequence[OutDir] = (),
) -> None:
    """Refuse an output file (by option; `-` is stdout) that is the same file as an input (same
    device and inode, or the same resolved path), and an output directory holding an input under
    a name written there; also a block device or symlink loop as an output (`output_kind`)."""
    known = list(_inputs(inputs))
    for option, out in (files or {}).items():
        if out is None:
            continue
        real = None if output_kind(out) == "stream" else os.path.realpath(out)
        inp = _same_file(known, _identity(out, sys.stdout), real)
        if inp is not None:
            raise InputError(
                f"{option} names the same file as the input {inp.option} {inp.shown}: "
                "writing it would destroy that input; choose another output",
                "<stdout>" if str(out) == "-" else str(out),
            )
    for d in dirs:
        _check_dir(d, known)


def _same_file(
    known: list[_Input], identity: tuple[int, int] | None, real: str | None
) -> _Input | None:
    """The first input that is the file with this identity or resolved path, if any."""
    for inp in known:
        if (identity is not None and identity == inp.identity) or (real and real == inp.real):
            return inp
    return None


def _check_dir(d: OutDir, known: list[_Input]) -> None:
    """An input inside `d` under a written name, or a written name in `d` that links to one."""
    base = Path(os.path.realpath(d.path))
    for inp in known:
        if inp.real is not None and Path(inp.real).is_relative_to(base):
            rel = Path(inp.real).relative_to(base)
            if any(_matches(rel, pattern) for pattern in d.files):
                _refuse_dir(d, rel, inp)
    for pattern in d.files:
        for entry in base.glob(pattern):
            hit = _same_file(known, _identity(entry, sys.stdout), None)
            if hit is not None:
                _refuse_dir(d, entry.relative_to(base), hit)


def _refuse_dir(d: OutDir, rel: Path, inp: _Input) -> None:
    raise InputError(
        f"{d.option} {d.path} would overwrite the input {inp.option} {inp.shown}: the command "
        f"writes {rel} there; choose another {d.option}",
        str(Path(d.path) / rel),
    )


def _matches(rel: Path, pattern: str) -> bool:
    """Whether a relative path matches a glob pattern part by part (`*` stays within a part)."""
    want = Path(pattern).parts
    return len(rel.parts) == len(want) and all(
        fnmatch.fnmatchcase(part, w) for part, w in zip(rel.parts, want, strict=True)
    )


def _inputs(inputs: InputPaths) -> Iterator[_Input]:
    for option, value in inputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | os.PathLike) else list(value)
        for p in paths:
            if str(p) == "-":
                yield _Input(option, "- (stdin)", _identity("-", sys.stdin), None)
                continue
            ident = _identity(p, sys.stdin)
            real = os.path.realpath(p) if ident is not None or not os.path.exists(p) else None
            yield _Input(option, str(p), ident, real)


def _identity(path: PathLike, std: IO[str]) -> tuple[int, int] | None:
    """(device, inode) of the regular file `path` leads to (`-`: the one `std` is redirected
    from/to), links followed; None for a stream, a missing file, or a `std` without a file."""
    try:
        st = os.fstat(std.fileno()) if str(path) == "-" else os.stat(path)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
