"""File helpers: open plain/.gz/stdin text, atomic writes, content hashes."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from nbest_rescore.errors import InputError

PathLike = str | os.PathLike[str]

CONTROL_CHARS = re.compile(
    "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
    "\u08e2\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]|\r(?!\n|\\Z)"
)
"""Characters no text field may hold (sources, references, hypotheses, weights files): Unicode's
controls (C0 but the newline, tab included; DEL; C1), format characters (a BOM, zero-width space,
bidi marks, soft hyphen) and line/paragraph separators, and a CR not ending a line. Each consumer
(the tokenizer, str.split, sacrebleu) treats them differently, so they are refused with file:line
rather than normalised. ZWNJ/ZWJ (U+200C/U+200D) are letters' business in Persian, Indic scripts
and emoji and stay; a BOM at the very start of a file is an encoding mark and is skipped."""


def control_char_problem(line: str) -> str | None:
    """What is wrong with one line of text by `CONTROL_CHARS` (its first such character, and
    where), or None when it has none."""
    m = CONTROL_CHARS.search(line)
    if m is None:
        return None
    return (
        f"control or invisible character U+{ord(m.group()[0]):04X} at column {m.start() + 1}: "
        "text may hold no control, format (BOM, zero-width, bidi) or line separator characters"
    )


def open_text(path: PathLike, *, errors: str = "strict") -> IO[str]:
    """Open `path` for reading UTF-8 text; `.gz` is decompressed and `-` is stdin.

    Newlines are not translated, so `\\r` inside a line is kept as data.
    """
    p = str(path)
    if p == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors=errors, newline="\n")
    try:
        if p.endswith(".gz"):
            return io.TextIOWrapper(
                gzip.open(p, "rb"), encoding="utf-8", errors=errors, newline="\n"
            )
        return open(p, encoding="utf-8", errors=errors, newline="\n")
    except OSError as exc:
        raise _open_error(exc, p) from exc


def _open_error(exc: OSError, p: str) -> InputError:
    """What is wrong with an input that cannot be opened, naming it."""
    if isinstance(exc, FileNotFoundError):
        return InputError("no such file", p)
    if isinstance(exc, IsADirectoryError):
        return InputError("is a directory, expected a file", p)
    return InputError(f"cannot read ({exc.strerror or exc})", p)


def open_raw(path: PathLike) -> IO[bytes]:
    """Open `path` for reading its bytes as stored (no decompression); `-` is stdin."""
    p = str(path)
    if p == "-":
        return sys.stdin.buffer
    try:
        return open(p, "rb")
    except OSError as exc:
        raise _open_error(exc, p) from exc


def open_binary(path: PathLike) -> IO[bytes]:
    """Open `path` for reading bytes, decompressing `.gz`; `-` is stdin."""
    p = str(path)
    if p == "-":
        return sys.stdin.buffer
    try:
        if p.endswith(".gz"):
            return gzip.open(p, "rb")  # type: ignore[return-value]
        return open(p, "rb")
    except OSError as exc:
        raise _open_error(exc, p) from exc


def iter_text_lines(path: PathLike) -> Iterator[str]:
    """The lines of a text file or "-" (stdin), lazily, without their newline; invalid UTF-8
    is an `InputError` naming the line."""
    fh = open_binary(path)
    try:
        yield from _decoded_lines(fh, "<stdin>" if str(path) == "-" else str(path))
    finally:
        if str(path) != "-":
            fh.close()


def _decoded_lines(fh: Iterable[bytes], name: str) -> Iterator[str]:
    """The lines of a byte stream, decoded, without their newline; errors name `name`."""
    try:
        for i, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"invalid UTF-8 ({exc.reason})", name, i) from exc
            text = text.rstrip("\n").rstrip("\r")
            if i == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if problem := control_char_problem(text):
                raise InputError(problem, name, i)
            yield text
    except (EOFError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read ({exc})", name) from exc


def needs_spooling(path: str) -> bool:
    """True for an input that can be read only once: `-` (stdin), a FIFO (`<(zcat list.gz)`),
    a socket or a character device. Jobs that read an input twice spool it first."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # reading it names the problem
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def spooled_inputs(**inputs: str | None) -> Iterator[dict[str, str | None]]:
    """The given input paths with each one-pass input (`needs_spooling`: stdin, a FIFO, a
    device) replaced by a temp file holding its bytes, read once, so that jobs needing several
    passes see the same data as from a file and never wait on a drained pipe. Only one input
    may be `-` (`InputError` naming the options otherwise). A spooled file keeps its name (in a
    temp directory), so `.gz` and the names recorded in reports stay; errors that name the temp
    file name the input instead (`<stdin>` for `-`). Keys are option names without dashes."""
    dashed = [k for k, v in inputs.items() if v is not None and str(v) == "-"]
    if len(dashed) > 1:
        opts = ", ".join(f"--{k.replace('_', '-')}" for k in dashed)
        raise InputError(f"only one input can be - (stdin), got {opts}")
    once = {k: str(v) for k, v in inputs.items() if v is not None and needs_spooling(str(v))}
    if not once:
        yield dict(inputs)
        return
    tmp_dir = tempfile.mkdtemp(prefix="nbest-rescore-spool-")
    originals: dict[str, str] = {}
    try:
        for k, v in once.items():
            tmp = os.path.join(tmp_dir, k, "stdin" if v == "-" else os.path.basename(v) or k)
            os.mkdir(os.path.dirname(tmp))
            src = sys.stdin.buffer if v == "-" else open_raw(v)
            try:
                with open(tmp, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
            finally:
                if v != "-":
                    src.close()
            originals[tmp] = "<stdin>" if v == "-" else v
        spooled = {k: v for k, v in inputs.items()}
        spooled.update({k: t for t, k in zip(originals, once, strict=True)})
        try:
            yield spooled
        except InputError as exc:
            for tmp, name in originals.items():
                if exc.path == tmp:
                    exc.path = name
                    exc.args = (str(exc),)
                exc.message = exc.message.replace(tmp, name)
            raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def read_lines(path: PathLike) -> list[str]:
    """All lines of a small text file (source, reference), without their newline.

    Invalid UTF-8 is an `InputError` naming the line.
    """
    return list(iter_text_lines(path))


def read_lines_hashed(path: PathLike) -> tuple[list[str], str]:
    """`read_lines` and `sha256_file` of a small file from one read of it (a file that is both
    used and recorded by its hash, such as a weights file)."""
    name = "<stdin>" if str(path) == "-" else str(path)
    fh = open_raw(path)
    try:
        data = fh.read()
    finally:
        if str(path) != "-":
            fh.close()
    stream = io.BytesIO(data)
    text = gzip.GzipFile(fileobj=stream) if str(path).endswith(".gz") else stream
    return list(_decoded_lines(text, name)), hashlib.sha256(data).hexdigest()


WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO,
     errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.ENXIO}
)  # fmt: skip
"""OS errors of writing an output that are the user's to fix (full disk, permissions, a file
where a directory should be): `atomic_write` turns them into `InputError`s naming the path."""


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", *, gz: bool | None = None) -> Iterator[IO]:  # type: ignore[type-arg]
    """Write `path` so that a failure leaves it as it was, and never replace what is not a file.

    A regular (or new) file is written to a temp file beside it and renamed into place only on
    success; a symlink is written through (the rename lands on the file it resolves to, the link
    stays). A stream (see `output_kind`: `-` for stdout, a device, a FIFO, /dev/stdout) is written
    in place. `gz` defaults to whether `path` ends in `.gz`; `mode` is "w" (text, UTF-8) or "wb".
    """
    shown = str(path)
    use_gz = shown.endswith(".gz") if gz is None else gz
    if output_kind(path) == "stream":
        with _stream_write(shown, mode, use_gz) as out:
            yield out
        return
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(exc, shown) from exc
    try:
        with contextlib.ExitStack() as stack:
            yield _encoded(stack, stack.enter_context(os.fdopen(fd, "wb")), mode, use_gz)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise _write_error(exc, shown) from exc
        raise


def output_kind(path: PathLike) -> Literal["stream", "file"]:
    """ "stream" for an output written in place: `-` (stdout), a character device, FIFO or socket,
    or a path in /dev or /proc (/dev/stdout, /dev/fd/N), symlinks followed; "file" otherwise
    (written by rename). A block device or a symlink loop is an `InputError`: never written."""
    p = str(path)
    if p == "-":
        return "stream"
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        return "file"  # a new file, or a symlink to one: written through
    except OSError as exc:
        raise _write_error(exc, p) from exc
    if stat.S_ISBLK(mode):
        raise InputError("is a block device; an output is never written to one", p)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or _in_stream_dir(p):
        return "stream"
    return "file"


def _in_stream_dir(path: str) -> bool:
    """Whether `path`, or a symlink it passes through, lies directly in /dev or /dev/fd, or under
    /proc: such paths name streams (/dev/stdout, /dev/fd/1, /proc/self/fd/1), even when they lead
    to a regular file (stdout redirected to one), which is then appended to rather than replaced."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own symlink limit
        parent = os.path.realpath(os.path.dirname(p))
        if parent in ("/dev", "/dev/fd", "/proc") or parent.startswith("/proc/"):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.join(os.path.dirname(p), os.readlink(p))
    return False


@contextlib.contextmanager
def _stream_write(path: str, mode: str, use_gz: bool) -> Iterator[IO]:  # type: ignore[type-arg]
    """Write a stream in place: stdout for `-` (left open), else the path opened for appending
    (a device or FIFO is not truncated, a regular file behind /dev/stdout keeps what the shell
    put there)."""
    try:
        with contextlib.ExitStack() as stack:
            if path == "-" and "b" not in mode and not use_gz:
                sys.stdout.flush()
                yield sys.stdout
                sys.stdout.flush()
                return
            if path == "-":
                base = sys.stdout.buffer
                stack.callback(base.flush)  # after the layers above it have closed
            else:
                base = stack.enter_context(open(path, "ab"))
            yield _encoded(stack, base, mode, use_gz)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise _write_error(exc, path) from exc
        raise


def _encoded(stack: contextlib.ExitStack, base: Any, mode: str, use_gz: bool) -> Any:
    """`base` as the handle a writer wants: gzip-compressed if `use_gz`, UTF-8 text with LF
    newlines unless `mode` has "b"; the layers close with `stack` (`base` if the stack holds it)."""
    if use_gz:
        # No file name and mtime 0 in the header: byte-identical output across runs (the temp
        # file's random name would otherwise be stored).
        base = stack.enter_context(
            gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=base, mtime=0)
        )
    if "b" in mode:
        return base
    return stack.enter_context(io.TextIOWrapper(base, encoding="utf-8", newline="\n"))


def _write_error(exc: OSError, target: PathLike) -> InputError:
    """A write failure as a user error: the output's path and the OS's reason."""
    return InputError(f"cannot write ({exc.strerror or exc})", str(target))


def _umask() -> int:
    """The process umask (mkstemp creates 0600 files; outputs should get the usual mode)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: PathLike, *, length: int = 64) -> str:
    """Hex SHA-256 of a file's bytes (the full 64 digits unless `length` says fewer)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]
