"""Moses n-best list reading: a streaming, validating reader (writing: `nbest_writer`).

Moses format: ``ID ||| SURFACE ||| FEATURES ||| TOTAL [||| EXTRA]...``, one hypothesis per
line, the lines of a sentence contiguous and ids increasing. The readers keep one chunk (~1 MiB) in memory
at a time, reports every malformed line as an `NBestFormatError` naming the file and 1-based line,
and yields an empty group for every sentence id missing from the file (the decoder failed on it).
The surface is read as its tokens joined by single spaces (Moses' trailing space dropped); the
FEATURES, TOTAL and extra fields are kept as read too, so that `nbest_writer` can write a line back.

Two readers share one parser: `read_nbest_blocks` streams the list as column blocks (numpy
arrays of sentence ids, line numbers, dense feature values and totals; lists of surfaces and of
the raw fields), the form to build tables from; `read_nbest` turns the blocks into the frozen
per-hypothesis objects below. A chunk of about 1 MiB whose lines share one field count and one
feature layout (every real Moses list) is parsed with whole-chunk string operations, numpy and
numpy's C number reader; any other chunk line by line, which also finds and names a bad line.
Speeds and memory: bench/bench_nbest.py (bench/results/nbest.json).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import io
import itertools
import operator
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np
import numpy.typing as npt

from nbest_rescore.errors import InputError, NBestFormatError
from nbest_rescore.fileio import CONTROL_CHARS, PathLike, control_char_problem, open_raw

try:  # optional: a 4x faster gzip inflater, with the zlib module's interface
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover
    import zlib  # type: ignore[no-redef]

_INFLATE_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error)  # type: ignore[assignment]

try:  # optional: a faster number reader (see read_floats)
    import pyarrow as _pyarrow
    import pyarrow.csv as _arrow_csv

    _ARROW_ERRORS: tuple[type[Exception], ...] = (_pyarrow.ArrowException,)
except ImportError:  # pragma: no cover
    _pyarrow = _arrow_csv = None
    _ARROW_ERRORS = ()
# pandas' ParserError is a ValueError: pandas is imported only where pyarrow is missing.
_NUMBER_ERRORS: tuple[type[Exception], ...] = (ValueError, *_ARROW_ERRORS)


__all__ = [
    "FIELD_SEP",
    "Feature",
    "FeatureLayout",
    "Hypothesis",
    "NBestBlock",
    "NBestGroup",
    "NBestReader",
    "iter_lines",
    "parse_features",
    "read_nbest",
    "read_nbest_blocks",
    "token_tuples",
]

FIELD_SEP = " ||| "
_BLOCK_BYTES = 1 << 20  # read size; a sentence's lines never need to fit in one block
_INFLATE_BYTES = 4 << 20  # gzip: compressed bytes read, and most bytes inflated, per zlib call
_EXCERPT_CHARS = 100
MAX_ID_GAP = 100_000
"""Most consecutive sentence ids a list may skip. Every skipped id is a sentence the decoder
produced nothing for and becomes an (empty) output line, so a stray huge id would otherwise make
every command allocate and write by id; no real decoder run fails on this many sentences in a row."""
_CACHE_SIZE = 256  # Feature objects kept per single-value feature group (see _Layout)
_MAX_COMPILED_GROUPS = 2000  # longer layouts are parsed by a loop instead of generated code
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark at the start of a file is skipped


@dataclass(frozen=True, slots=True)
class Feature:
    """One labelled dense feature group, e.g. ``LM0= -21.9`` or the values of ``TranslationModel0=``."""

    name: str  # the label without its '=' or ':' (e.g. "LM0", "d"); F0, F1, ... in unlabelled lists
    values: tuple[float, ...]
    style: str = "="  # "=" (current Moses), ":" (old Moses short labels) or "" (unlabelled list)


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One line of an n-best list; `raw_*` keep the text as read so the writer reproduces it."""

    sent_id: int
    tokens: tuple[str, ...]  # the surface split on spaces (U+0020); may be empty
    features: tuple[Feature, ...]  # dense groups in file order
    sparse: tuple[tuple[str, float], ...]  # sparse (name, value): '='-labels with '_' and one value
    total: float
    extra: tuple[str, ...] = ()  # fields after TOTAL (segmentation, alignment), verbatim
    raw_features: str = ""  # the FEATURES field as read
    raw_total: str = ""  # the TOTAL field as read

    @property
    def surface(self) -> str:
        """The hypothesis text, tokens joined by single spaces."""
        return " ".join(self.tokens)

    def feature(self, name: str) -> tuple[float, ...]:
        """Values of the dense group `name`, else of the sparse feature `name`; KeyError if absent."""
        for f in self.features:
            if f.name == name:
                return f.values
        for sparse_name, value in self.sparse:
            if sparse_name == name:
                return (value,)
        raise KeyError(name)

    def dense_vector(self) -> tuple[float, ...]:
        """All dense values flattened in file order (what Moses' tuners read as the dense vector)."""
        out: list[float] = []
        for f in self.features:
            out.extend(f.values)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class NBestGroup:
    """The hypotheses of one sentence, best first; empty when the id is missing from the file."""

    sent_id: int
    hyps: tuple[Hypothesis, ...]

    @property
    def surfaces(self) -> list[str]:
        """The hypotheses' texts, tokens joined by single spaces (`metrics.compute_hyp_stats`)."""
        return [h.surface for h in self.hyps]


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """The dense feature groups of the rows of one `NBestBlock`, in file order.

    Row values are flattened: group k occupies `sizes[k]` consecutive columns of `NBestBlock.dense`
    (names F0, F1, ... and style "" in an unlabelled list, one column each).
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    styles: tuple[str, ...]

    @property
    def width(self) -> int:
        """The number of dense columns."""
        return sum(self.sizes)


@dataclass(frozen=True, eq=False)
class NBestBlock:
    """Consecutive hypotheses of an n-best list as columns; every row has the same `layout`.

    Rows are in file order; a block may hold the lines of several sentences and a sentence may
    continue in the next block. Ids missing from the file simply have no rows.
    """

    sent_ids: npt.NDArray[np.int64]  # (n,) sentence id of each row, non-decreasing
    lines: npt.NDArray[np.int64]  # (n,) 1-based line number of each row in the file
    surfaces: list[
        str
    ]  # the surface as tokens joined by single spaces (Moses' trailing space gone)
    dense: npt.NDArray[np.float64]  # (n, layout.width) dense feature values in file order
    totals: npt.NDArray[np.float64]  # (n,) the decoder's TOTAL score
    layout: FeatureLayout
    sparse: list[tuple[tuple[str, float], ...]]  # per row: sparse (name, value) pairs, mostly ()
    raw_features: list[str]  # per row: the FEATURES field as read
    raw_totals: list[str]  # per row: the TOTAL field as read
    extra: list[tuple[str, ...]]  # per row: fields after TOTAL, verbatim

    def __len__(self) -> int:
        return len(self.surfaces)


# Building frozen dataclasses is the reader's main cost: their __init__ sets each field through
# object.__setattr__. These mutable twins have the same slots in the same order, so an instance
# can be built with plain attribute stores and then relabelled with `__class__ = Feature`, which
# CPython allows between classes of identical layout. The result is an ordinary Feature.
@dataclass(slots=True)
class _FeatureTwin:
    name: str
    values: tuple[float, ...]
    style: str


@dataclass(slots=True)
class _HypothesisTwin:
    sent_id: int
    tokens: tuple[str, ...]
    features: tuple[Feature, ...]
    sparse: tuple[tuple[str, float], ...]
    total: float
    extra: tuple[str, ...]
    raw_features: str
    raw_total: str


def _check_twins() -> bool:
    """Whether the fast construction works here and gives objects equal to the normal one."""
    try:
        f: Any = _FeatureTwin("a", (1.0,), "=")
        f.__class__ = Feature
        h: Any = _HypothesisTwin(0, ("x",), (f,), (), 1.0, (), "a= 1", "1")
        h.__class__ = Hypothesis
    except TypeError:
        return False
    return f == Feature("a", (1.0,), "=") and h == Hypothesis(
        0, ("x",), (f,), (), 1.0, (), "a= 1", "1"
    )


_FAST_BUILD = (
    _FeatureTwin.__slots__ == Feature.__slots__
    and _HypothesisTwin.__slots__ == Hypothesis.__slots__
    and _check_twins()
)


def _feature(name: str, values: tuple[float, ...], style: str) -> Feature:
    """A Feature, built through its mutable twin when possible (about twice as fast)."""
    f: Any = _FeatureTwin(name, values, style)
    f.__class__ = Feature
    return f  # type: ignore[no-any-return]


def _hypothesis_fast(
    sent_id: int,
    tokens: tuple[str, ...],
    features: tuple[Feature, ...],
    sparse: tuple[tuple[str, float], ...],
    total: float,
    extra: tuple[str, ...],
    raw_features: str,
    raw_total: str,
) -> Hypothesis:
    """A Hypothesis, built through its mutable twin."""
    h: Any = _HypothesisTwin(
        sent_id, tokens, features, sparse, total, extra, raw_features, raw_total
    )
    h.__class__ = Hypothesis
    return h  # type: ignore[no-any-return]


if not _FAST_BUILD:  # pragma: no cover - only on an interpreter without __class__ assignment
    _feature = Feature  # type: ignore[assignment]
    _hypothesis_fast = Hypothesis  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# Reading lines


def _display_name(path: PathLike) -> str:
    """The file name used in error messages."""
    p = str(path)
    return "<stdin>" if p == "-" else p


def _excerpt(line: str) -> str:
    """A shortened, quoted copy of a line for error messages."""
    if len(line) > _EXCERPT_CHARS:
        line = line[: _EXCERPT_CHARS - 3] + "..."
    return repr(line)


def _decode_text(chunk: bytes, before: int, name: str) -> tuple[str, NBestFormatError | None]:
    """Decode whole lines (`before` lines precede them; CRLF read as LF). On invalid UTF-8 return
    the text of the lines before the bad one and the error naming it, so that earlier problems
    are reported first."""
    err = None
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = chunk.rfind(b"\n", 0, exc.start) + 1
        end = chunk.find(b"\n", exc.start)
        bad = chunk[start : end if end >= 0 else len(chunk)]
        err = NBestFormatError(
            f"invalid UTF-8 ({exc.reason}) at byte {exc.start - start + 1} of the line: "
            f"{_excerpt(bad.decode('utf-8', errors='replace'))}",
            name,
            before + chunk.count(b"\n", 0, start) + 1,
        )
        text = chunk[:start].decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if (m := CONTROL_CHARS.search(text)) is not None:
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.start())
        line = text[start : end if end >= 0 else len(text)]
        problem = control_char_problem(line) or "control character"
        err = NBestFormatError(
            f"{problem}: {_excerpt(line)}", name, before + text.count("\n", 0, start) + 1
        )
        text = text[:start]
    return text, err


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Digesting:
    """A binary stream whose bytes feed `digest` as they are read (the file is hashed by the read
    that parses it, not by a second one)."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        self.raw, self.digest = raw, digest

    def read(self, size: int, /) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def _gunzip(raw: _Readable) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (members one after another) in blocks of at most
    _INFLATE_BYTES, inflated in one call each (by ISA-L when `isal` is installed, else zlib):
    both release the GIL while they work, so a thread
    running this decompresses beside the parser, and few large blocks need few GIL hand-overs.
    Raises zlib.error or EOFError on bad data."""
    inflater = zlib.decompressobj(wbits=31)
    started = False
    while data := raw.read(_INFLATE_BYTES):
        while data:
            if not started:  # between members: zero padding is allowed, as gzip allows it
                data = data.lstrip(b"\0")
                if not data:
                    break
            started = True
            out = inflater.decompress(data, _INFLATE_BYTES)
            data = inflater.unconsumed_tail
            if out:
                yield out
            if inflater.eof:  # a member ends; another may follow
                data = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                started = False
    if started:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _pieces(blocks: Generator[bytes, None, None], size: int) -> Iterator[bytes]:
    """The bytes of `blocks` in pieces of at most `size`; closing this closes `blocks`."""
    try:
        for block in blocks:
            for i in range(0, len(block), size):
                yield block[i : i + size]
    finally:
        blocks.close()


def _prefetch(blocks: Iterator[bytes]) -> Generator[bytes, None, None]:
    """The items of `blocks`, produced by a background thread (which stops when this generator
    is closed); its exceptions are raised here."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    return
                put(block)
            put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=work, name="nbest-gunzip", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _iter_chunks(
    path: PathLike, name: str, block_size: int = _BLOCK_BYTES, digest: Any = None
) -> Iterator[tuple[int, int, str]]:
    """Decoded text in chunks of whole lines (each ending with a newline, CRLF read as LF) of
    about `block_size` bytes: (lines before it, its number of lines, the text).

    Reads plain, .gz (by suffix, or by magic bytes, e.g. gzipped stdin) or "-" for stdin; gzip
    data is decompressed by a background thread. A `digest` (hashlib object) is fed the bytes as
    stored.
    """
    try:
        raw = open_raw(path)
    except (IsADirectoryError, PermissionError) as exc:
        raise InputError(f"cannot read ({exc.strerror})", name) from exc
    blocks: Iterator[bytes] | None = None
    try:
        peek = getattr(raw, "peek", None)
        source: _Readable = raw if digest is None else _Digesting(raw, digest)
        if str(path).endswith(".gz") or (peek is not None and peek(2)[:2] == _GZIP_MAGIC):
            blocks = _pieces(_prefetch(_gunzip(source)), block_size)
        else:
            blocks = iter(functools.partial(source.read, block_size), b"")
        before = 0
        carry = b""
        first = True
        while True:
            try:
                block = next(blocks, b"")
            except _INFLATE_ERRORS as exc:
                raise InputError(f"corrupt gzip data after line {before} ({exc})", name) from exc
            if not block:
                break
            cut = block.rfind(b"\n")
            if cut < 0:
                carry += block
                continue
            chunk = carry + block[: cut + 1] if carry else block[: cut + 1]
            carry = block[cut + 1 :]
            if first and chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
            first = False
            text, err = _decode_text(chunk, before, name)
            n = text.count("\n")
            if n:
                yield before, n, text
            if err is not None:
                raise err
            before += n
        if carry:  # a last line without a newline
            if first and carry.startswith(_BOM):
                carry = carry[len(_BOM) :]
            text, err = _decode_text(carry + b"\n", before, name)
            if text:
                yield before, text.count("\n"), text
            if err is not None:
                raise err
    finally:
        if isinstance(blocks, Generator):
            blocks.close()  # stops the prefetch thread (closing _pieces closes _prefetch)
        if str(path) != "-":
            raw.close()  # stdin itself stays open


def _iter_blocks(
    path: PathLike, name: str, block_size: int = _BLOCK_BYTES
) -> Iterator[tuple[int, list[str]]]:
    """The lines (without newlines) of `_iter_chunks`' chunks, each with the lines before it."""
    for before, _, text in _iter_chunks(path, name, block_size):
        lines = text.split("\n")
        lines.pop()  # the empty string after the final newline
        yield before, lines


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a plain/.gz file or "-" (stdin).

    Invalid UTF-8 raises NBestFormatError naming the line.
    """
    name = _display_name(path)
    for before, lines in _iter_blocks(path, name):
        yield from enumerate(lines, before + 1)


# ---------------------------------------------------------------------------------------------
# Parsing


class _LineError(ValueError):
    """A problem in one line; the reader adds file, line number and excerpt."""


def _is_label(token: str) -> bool:
    """Whether a FEATURES token is a label (``LM0=``, ``lm:``) rather than a value."""
    return len(token) > 1 and token[-1] in "=:"


def _tuple_getter(indices: Sequence[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """itemgetter that always returns a tuple (itemgetter(i) alone returns the bare item)."""
    if len(indices) >= 2:
        return operator.itemgetter(*indices)
    if len(indices) == 1:
        (i,) = indices
        return lambda toks: (toks[i],)
    return lambda toks: ()


_Builder = Callable[[tuple[str, ...]], tuple[tuple[Feature, ...], tuple[tuple[str, float], ...]]]
# (name, first value index, stop index, style, cache or None) and (name, value index)
_DenseSpec = tuple[str, int, int, str, dict[str, Feature] | None]
_SparseSpec = tuple[str, int]


def _cached_feature(cache: dict[str, Feature], name: str, token: str, style: str) -> Feature:
    """Build a single-value Feature and remember it while the cache is small."""
    f = _feature(name, (float(token),), style)
    if len(cache) < _CACHE_SIZE:
        cache[token] = f
    return f


def _compile_builder(dense: Sequence[_DenseSpec], sparse: Sequence[_SparseSpec]) -> _Builder:
    """Straight-line code that builds one layout's features from its value tokens.

    Generated like namedtuple's methods; names and caches are passed in the namespace, so the
    source holds only our identifiers and integers, never text from the file.
    """
    ns: dict[str, Any] = {"_fl": float, "_mk": _feature, "_miss": _cached_feature}
    if _FAST_BUILD:
        ns.update(_Twin=_FeatureTwin, _Feature=Feature)
    body: list[str] = []
    for k, (name, a, b, style, cache) in enumerate(dense):
        ns[f"_n{k}"], ns[f"_s{k}"] = name, style
        if cache is not None:
            ns[f"_c{k}"] = cache
            body.append(f"f{k} = _c{k}.get(raw[{a}]) or _miss(_c{k}, _n{k}, raw[{a}], _s{k})")
            continue
        values = "".join(f"_fl(raw[{i}]), " for i in range(a, b))
        if _FAST_BUILD:
            body.append(f"f{k} = _Twin(_n{k}, ({values}), _s{k})")
            body.append(f"f{k}.__class__ = _Feature")
        else:  # pragma: no cover
            body.append(f"f{k} = _mk(_n{k}, ({values}), _s{k})")
    for k, (name, _) in enumerate(sparse):
        ns[f"_m{k}"] = name
    features = "".join(f"f{k}, " for k in range(len(dense)))
    pairs = "".join(f"(_m{k}, _fl(raw[{i}])), " for k, (_, i) in enumerate(sparse))
    body.append(f"return ({features}), ({pairs})")
    source = "def build(raw):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, "<nbest layout>", "exec"), ns)
    return ns["build"]  # type: ignore[no-any-return]


class _Layout:
    """The label structure of one FEATURES field, reused while the next lines have the same one.

    `labels` are the label tokens found at some positions; the other tokens are values, which
    `dense` (name, start, stop, style, cache) and `sparse` (name, index) slice. A single-value
    group whose first value is an integer (Distortion0, WordPenalty0, PhrasePenalty0 ...) keeps a
    small cache from value text to Feature: such counts repeat on most lines, and sharing their
    Feature objects saves both the parse and the memory.
    """

    __slots__ = (
        "_compiled",
        "dense",
        "dense_names",
        "get_labels",
        "get_values",
        "label_pos",
        "labels",
        "layout",
        "n_tokens",
        "sparse",
        "value_pos",
    )

    def __init__(self, toks: list[str], labeled: bool) -> None:
        self.n_tokens = len(toks)
        label_pos: list[int] = []
        value_pos: list[int] = []
        dense: list[_DenseSpec] = []
        sparse: list[_SparseSpec] = []
        if not labeled:
            for i, tok in enumerate(toks):
                if _is_label(tok):
                    raise _LineError(f"label {tok!r} in an unlabelled feature list")
                dense.append((f"F{i}", i, i + 1, "", {} if _is_int(tok) else None))
            value_pos = list(range(len(toks)))
        else:
            i = 0
            n = len(toks)
            while i < n:
                label = toks[i]
                if not _is_label(label):
                    raise _LineError(f"feature value {label!r} before any label")
                label_pos.append(i)
                j = i + 1
                while j < n and not _is_label(toks[j]):
                    j += 1
                start = len(value_pos)
                value_pos.extend(range(i + 1, j))
                name, style = label[:-1], label[-1]
                single = j - i == 2
                if single and style == "=" and "_" in name:
                    sparse.append((name, start))
                else:
                    cache: dict[str, Feature] | None = None
                    if single and _is_int(toks[i + 1]):
                        cache = {}
                    dense.append((name, start, len(value_pos), style, cache))
                i = j
        self.labels = tuple(toks[i] for i in label_pos)
        self.label_pos = tuple(label_pos)
        self.value_pos = tuple(value_pos)
        self.layout = FeatureLayout(
            tuple(d[0] for d in dense),
            tuple(d[2] - d[1] for d in dense),
            tuple(d[3] for d in dense),
        )
        self.get_labels = _tuple_getter(label_pos)
        self.get_values = _tuple_getter(value_pos)
        self.dense = tuple(dense)
        self.sparse = tuple(sparse)
        self.dense_names = tuple(d[0] for d in dense)
        self._compiled: _Builder | None = None

    def matches(self, toks: list[str]) -> bool:
        """Whether `toks` has labels at the same places (the values are checked when parsed)."""
        return len(toks) == self.n_tokens and self.get_labels(toks) == self.labels

    def compiled(self) -> _Builder:
        """The generated builder for this layout (compiled once, when a second line uses it);
        a very long layout keeps the generic one."""
        if self._compiled is None:
            if len(self.dense) + len(self.sparse) > _MAX_COMPILED_GROUPS:
                self._compiled = self.build_generic
            else:
                self._compiled = _compile_builder(self.dense, self.sparse)
        return self._compiled

    def build_generic(
        self, raw: tuple[str, ...]
    ) -> tuple[tuple[Feature, ...], tuple[tuple[str, float], ...]]:
        """What the compiled builder does, as a loop; ValueError on a non-numeric value."""
        features = tuple(
            [_feature(n, tuple(map(float, raw[a:b])), st) for n, a, b, st, _ in self.dense]
        )
        return features, tuple([(n, float(raw[k])) for n, k in self.sparse])

    def parse(self, toks: list[str]) -> tuple[tuple[Feature, ...], tuple[tuple[str, float], ...]]:
        """Features of one line with this layout; `_LineError` names a non-numeric value."""
        raw = self.get_values(toks)
        try:
            return self.build_generic(raw)
        except ValueError:
            pass
        for k, tok in enumerate(raw):
            try:
                float(tok)
            except ValueError:
                owner = next((d[0] for d in self.dense if d[1] <= k < d[2]), None)
                if owner is None:
                    owner = next((n for n, idx in self.sparse if idx == k), "?")
                where = f" for feature {owner}" if self.labels else f" (value {k + 1})"
                raise _LineError(f"non-numeric feature value {tok!r}{where}") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _is_int(token: str) -> bool:
    """Whether a value token is a plain integer such as "-13" (a count feature)."""
    return token.lstrip("-").isdigit()


_last_layout: list[_Layout] = []  # parse_features' last layout, reused while fields repeat it


def parse_features(field: str) -> tuple[tuple[Feature, ...], tuple[tuple[str, float], ...]] | None:
    """The dense groups and sparse pairs of a FEATURES field as the reader reads them (labelled or
    not, by its first token), or None where the reader would refuse it. The last field's layout
    is reused while the next fields repeat it (the writer checks every line it writes)."""
    toks = field.split()
    layout = _last_layout[0] if _last_layout else None
    if layout is not None and layout.matches(toks):
        try:
            return layout.compiled()(layout.get_values(toks))
        except ValueError:
            pass
    try:
        layout = _Layout(toks, bool(toks) and _is_label(toks[0]))
        parsed = layout.parse(toks)
    except _LineError:
        return None
    _last_layout[:] = [layout]
    return parsed


def _parse_id(text: str) -> int:
    """The sentence id, a non-negative decimal integer."""
    if text.isascii() and text.isdigit():
        return int(text)
    stripped = text.strip()
    if stripped.startswith("-") and stripped[1:].isdigit():
        raise _LineError(f"negative sentence id {stripped}")
    raise _LineError(f"sentence id {text!r} is not a non-negative integer")


def _split_fields(line: str) -> list[str]:
    """The ' ||| '-separated fields; tolerates an empty field written without its spaces."""
    parts = line.split(FIELD_SEP)
    if len(parts) >= 4:
        return parts
    loose = line.split("|||")
    if len(loose) >= 4:  # e.g. "3 ||| ||| F= 1 ||| -2": empty surface without its second space
        last = len(loose) - 1
        return [
            p[1 if i and p.startswith(" ") else 0 : -1 if i < last and p.endswith(" ") else None]
            for i, p in enumerate(loose)
        ]
    raise _LineError(
        f"expected at least 4 fields separated by '|||' (ID, surface, features, total), "
        f"found {len(parts)}"
    )


def _u64_windows(data: bytes) -> npt.NDArray[np.uint64]:
    """Overlapping little-endian 8-byte windows, one starting at each byte of `data` (which must
    end with 8 padding bytes): one gather compares up to 8 bytes of many tokens at once."""
    return np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))


def _tokens_equal(
    windows: npt.NDArray[np.uint64], starts: npt.NDArray[np.int64], token: bytes
) -> bool:
    """Whether the bytes at every offset in `starts` begin with `token`."""
    for o in range(0, len(token), 8):
        part = token[o : o + 8]
        mask = np.uint64((1 << (8 * len(part))) - 1)
        want = np.uint64(int.from_bytes(part, "little"))
        if not ((windows[starts + o] & mask) == want).all():
            return False
    return True


class _Rows:
    """Rows parsed line by line, turned into an NBestBlock."""

    def __init__(self, layout: FeatureLayout) -> None:
        self.layout = layout
        self.sent_ids: list[int] = []
        self.lines: list[int] = []
        self.surfaces: list[str] = []
        self.dense: list[list[float]] = []
        self.totals: list[float] = []
        self.sparse: list[tuple[tuple[str, float], ...]] = []
        self.raw_features: list[str] = []
        self.raw_totals: list[str] = []
        self.extra: list[tuple[str, ...]] = []

    def block(self) -> NBestBlock:
        n = len(self.surfaces)
        return NBestBlock(
            sent_ids=np.array(self.sent_ids, dtype=np.int64),
            lines=np.array(self.lines, dtype=np.int64),
            surfaces=self.surfaces,
            dense=np.array(self.dense, dtype=np.float64).reshape(n, self.layout.width),
            totals=np.array(self.totals, dtype=np.float64),
            layout=self.layout,
            sparse=self.sparse,
            raw_features=self.raw_features,
            raw_totals=self.raw_totals,
            extra=self.extra,
        )


def _spaced_oddly(surfaces: list[str]) -> bool:
    """Whether a surface (trailing spaces already stripped) has a leading or a repeated space;
    a vectorised scan, as `"  " in text` is slow on text with many single spaces."""
    a = np.frombuffer("\n".join(surfaces).encode(), dtype=np.uint8)
    if not len(a):
        return False
    space = a == 32
    return bool(space[0] or (space[1:] & (space[:-1] | (a[:-1] == 10))).any())


def _normalise_surface(text: str) -> str:
    """The surface field as tokens (split on U+0020) joined by single spaces."""
    words = text.split(" ")
    if words[-1] == "":
        words.pop()  # Moses' trailing space
    if "" in words:  # leading or repeated spaces
        words = [w for w in words if w]
    return " ".join(words)


class NBestReader:
    """Streaming block reader behind `read_nbest_blocks` and `read_nbest`: iterating it yields
    `NBestBlock`s. It also records what it learns about the file (`labeled`,
    `first_dense_names`, `first_label_change_line`) for `nbest_stats`.

    Each chunk of about `_BLOCK_BYTES` is parsed by `_fast` with whole-chunk string operations
    and numpy when its lines share one field count and feature layout; otherwise (or on any
    problem) by `_slow`, line by line, which gives the precise error. Both give the same rows.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        n_sentences: int | None,
        max_hyps: int | None,
        labeled: bool | None,
        block_bytes: int = _BLOCK_BYTES,
        hash_bytes: bool = False,
    ) -> None:
        if n_sentences is not None and n_sentences < 0:
            raise ValueError(f"n_sentences must be >= 0, got {n_sentences}")
        if max_hyps is not None and max_hyps < 1:
            raise ValueError(f"max_hyps must be >= 1, got {max_hyps}")
        self.path = path
        self.name = _display_name(path)
        self.n_sentences = n_sentences
        self.limit = max_hyps if max_hyps is not None else sys.maxsize
        self.labeled = labeled
        self.block_bytes = block_bytes
        self._digest = hashlib.sha256() if hash_bytes else None
        self.sha256: str | None = None
        """With `hash_bytes`, the SHA-256 of the file's bytes as stored, once all are read."""
        self.first_dense_names: tuple[str, ...] | None = None
        self.first_label_change_line: int | None = None  # first line whose dense labels differ
        self._cur = -1  # the current sentence id
        self._cur_text = ""  # its id as written on the last line
        self._seen = 0  # lines of the current sentence so far
        self._layout: _Layout | None = None  # the feature layout of the last parsed line
        self._pool: ThreadPoolExecutor | None = None  # reads numbers beside the parser

    def __iter__(self) -> Iterator[NBestBlock]:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nbest-numbers")
        try:
            chunks = _iter_chunks(self.path, self.name, self.block_bytes, self._digest)
            for before, n, text in chunks:
                block = self._fast(text, before, n)
                if block is None:
                    yield from self._slow(text, before)
                elif len(block):
                    yield block
            if self._digest is not None:
                self.sha256 = self._digest.hexdigest()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # --- checks shared by both parsers

    def _error(self, message: str, line_no: int, line: str) -> NBestFormatError:
        return NBestFormatError(f"{message}: {_excerpt(line)}", self.name, line_no)

    def _sentence_id(self, text: str, line_no: int, line: str) -> int:
        """The id of a line whose id text differs from the previous line's, checked for order."""
        try:
            sid = _parse_id(text)
        except _LineError as exc:
            raise self._error(str(exc), line_no, line) from None
        if sid < self._cur:
            raise self._error(
                f"sentence id {sid} after {self._cur}: ids must increase and the lines of a "
                "sentence must be contiguous",
                line_no,
                line,
            )
        if sid >= 1 << 63:
            raise self._error(f"sentence id {sid} is too large", line_no, line)
        if (gap := sid - max(self._cur, -1) - 1) > MAX_ID_GAP:
            raise self._error(
                f"sentence id {sid} leaves the {gap} ids before it without hypotheses (at most "
                f"{MAX_ID_GAP}): ids number the source sentences from 0",
                line_no,
                line,
            )
        if self.n_sentences is not None and sid >= self.n_sentences:
            raise self._error(
                f"sentence id {sid}, but there are only {self.n_sentences} sentences",
                line_no,
                line,
            )
        return sid

    def _note_layout(self, layout: _Layout, line_no: int) -> None:
        """Remember the first dense labels and the first line whose labels differ."""
        if self.first_dense_names is None:
            self.first_dense_names = layout.dense_names
        elif layout.dense_names != self.first_dense_names and self.first_label_change_line is None:
            self.first_label_change_line = line_no

    # --- line by line

    def _slow(self, text: str, before: int) -> Iterator[NBestBlock]:
        """Parse a chunk line by line: one block per run of lines with the same layout."""
        lines = text.split("\n")
        lines.pop()
        layout = self._layout
        rows: _Rows | None = None
        for line_no, line in enumerate(lines, before + 1):
            parts = line.split(FIELD_SEP)
            if len(parts) < 4:
                try:
                    parts = _split_fields(line)
                except _LineError as exc:
                    raise self._error(str(exc), line_no, line) from None
            id_text = parts[0]
            if id_text != self._cur_text:
                sid = self._sentence_id(id_text, line_no, line)
                if sid != self._cur:
                    self._cur, self._seen = sid, 0
                self._cur_text = id_text
            self._seen += 1
            if self._seen > self.limit:
                continue  # beyond top-k: only the fields and id order are checked
            toks = parts[2].split()
            try:
                if layout is None or not layout.matches(toks):
                    if self.labeled is None and toks:
                        self.labeled = _is_label(toks[0])
                    layout = _Layout(toks, self.labeled is not False)
                    self._note_layout(layout, line_no)
                try:
                    values = [float(t) for t in layout.get_values(toks)]
                except ValueError:
                    layout.parse(toks)  # raises _LineError naming the value
                    raise
                try:
                    total = float(parts[3])
                except ValueError:
                    raise _LineError(f"non-numeric total {parts[3]!r}") from None
            except _LineError as exc:
                raise self._error(str(exc), line_no, line) from None
            if rows is None or rows.layout != layout.layout:
                if rows is not None:
                    yield rows.block()
                rows = _Rows(layout.layout)
            if layout.sparse:
                dense = [v for _, a, b, _, _ in layout.dense for v in values[a:b]]
                rows.sparse.append(tuple((name, values[i]) for name, i in layout.sparse))
            else:
                dense = values
                rows.sparse.append(())
            rows.sent_ids.append(self._cur)
            rows.lines.append(line_no)
            rows.surfaces.append(_normalise_surface(parts[1]))
            rows.dense.append(dense)
            rows.totals.append(total)
            rows.raw_features.append(parts[2])
            rows.raw_totals.append(parts[3])
            rows.extra.append(tuple(parts[4:]))
        self._layout = layout
        if rows is not None:
            yield rows.block()

    # --- whole chunk

    def _fast(self, text: str, before: int, n: int) -> NBestBlock | None:
        """Parse a chunk whose lines all have the field count and the feature layout (labels at
        the same token positions, values separated by single spaces) of its first line; None if
        any line differs or has a problem, without changing the state."""
        # One function on purpose (88 lines): it is the whole-chunk fast path, read top to
        # bottom as one check-then-parse of numpy views; its pieces mean nothing apart.
        first = text[: text.find("\n")].split(FIELD_SEP)
        k = len(first)
        if k < 4:
            return None
        toks0 = first[2].split()
        labeled = self.labeled
        if labeled is None and toks0:
            labeled = _is_label(toks0[0])
        layout = self._layout
        if layout is None or not layout.matches(toks0):
            try:
                layout = _Layout(toks0, labeled is not False)
            except _LineError:
                return None
        # Split on FIELD_SEP, each newline stays inside the field that ends one line and starts
        # the next ("TOTAL\nID" when k = 4). That there are (k-1)*n+1 fields and each of these n
        # joints holds exactly one newline proves that every line has k fields.
        f = text.split(FIELD_SEP)
        if len(f) != (k - 1) * n + 1:
            return None
        joints = f[k - 1 :: k - 1]
        if list(map(str.count, joints, itertools.repeat("\n"))).count(1) != n:
            return None
        halves = "\n".join(joints).split("\n")  # last field 0, id 1, last field 1, id 2, ...
        ids = [f[0], *halves[1 : 2 * n - 1 : 2]]
        id_text = "".join(ids)
        if not (id_text.isascii() and id_text.isdigit() and all(ids)):
            return None
        columns = [*(f[j :: k - 1] for j in range(1, k - 1)), halves[0 : 2 * n : 2]]
        surfaces, feats, raw_totals = columns[0], columns[1], columns[2]

        # features and totals: the numbers are read by a helper thread while this one checks the
        # labels, the ids and the surfaces
        pending = self._fast_numbers(feats, raw_totals, layout, n)
        if pending is None:
            return None
        runs = self._fast_ids(ids)  # sentence ids: checked per run of equal id text
        surfaces = list(map(str.rstrip, surfaces, itertools.repeat(" ")))
        if _spaced_oddly(surfaces):
            surfaces = [_normalise_surface(s) for s in surfaces]
        extra: list[tuple[str, ...]] = list(zip(*columns[3:], strict=True)) if k > 4 else [()] * n
        lines = np.arange(before + 1, before + n + 1, dtype=np.int64)
        numbers = pending.result() if runs is not None else None
        if runs is None or numbers is None:
            return None
        sent_ids, seen = runs
        dense, totals = numbers
        sparse: list[tuple[tuple[str, float], ...]] = [()] * n
        if layout.sparse:  # the same sparse names on every line of the chunk
            pairs = [zip(itertools.repeat(name), dense[:, i].tolist()) for name, i in layout.sparse]
            sparse = list(zip(*pairs, strict=True))
            dense = dense[:, [i for _, a, b, _, _ in layout.dense for i in range(a, b)]]
        raw_features = feats
        last_sid, last_seen = int(sent_ids[-1]), int(seen[-1])
        keep = seen <= self.limit
        if not keep.all():
            idx = np.flatnonzero(keep)
            sent_ids, lines, dense, totals = sent_ids[idx], lines[idx], dense[idx], totals[idx]
            pick = idx.tolist()
            surfaces = [surfaces[i] for i in pick]
            raw_features = [feats[i] for i in pick]
            raw_totals = [raw_totals[i] for i in pick]
            extra = [extra[i] for i in pick]
            sparse = [sparse[i] for i in pick]

        # commit the state
        if len(lines):
            self.labeled = labeled
            if layout is not self._layout:
                self._note_layout(layout, int(lines[0]))
            self._layout = layout
        self._cur, self._cur_text, self._seen = last_sid, ids[-1], last_seen
        return NBestBlock(
            sent_ids=sent_ids,
            lines=lines,
            surfaces=surfaces,
            dense=dense,
            totals=totals,
            layout=layout.layout,
            sparse=sparse,
            raw_features=raw_features,
            raw_totals=raw_totals,
            extra=extra,
        )

    def _fast_ids(
        self, ids: list[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """Sentence id of each row and its 1-based position in its sentence (counting the lines
        of the previous chunk); None if an id is out of order or beyond n_sentences."""
        n = len(ids)
        try:  # the ids are ASCII digits (checked); numbers beyond int64 go to the line parser
            sent_ids = np.array(ids, dtype=np.int64)
        except (OverflowError, ValueError):  # (ValueError: more digits than int() reads)
            return None
        if sent_ids[0] < self._cur or (n > 1 and (np.diff(sent_ids) < 0).any()):
            return None
        if np.diff(sent_ids, prepend=max(self._cur, -1)).max() > MAX_ID_GAP + 1:
            return None  # the line parser names the line
        if self.n_sentences is not None and sent_ids[-1] >= self.n_sentences:
            return None
        new = np.empty(n, dtype=bool)
        new[0] = sent_ids[0] != self._cur
        new[1:] = sent_ids[1:] != sent_ids[:-1]
        row = np.arange(n, dtype=np.int64)
        first = np.maximum.accumulate(np.where(new, row, 0))
        seen = row - first + 1
        if not new[0]:  # the first rows continue the previous chunk's sentence
            cont = int(np.argmax(new)) if new.any() else n
            seen[:cont] += self._seen
        return sent_ids, seen

    def _fast_numbers(
        self, feats: list[str], raw_totals: list[str], layout: _Layout, n: int
    ) -> Future[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None] | None:
        """The values (dense and sparse, in token order, as an (n, values) array) and totals of
        lines whose FEATURES fields all have `layout`'s tokens (single-space separated, same
        labels at the same places), read by the helper thread; None if a line differs. The
        future's result is None if a number is not one that float() reads."""
        n_tok = layout.n_tokens
        usecols = layout.value_pos
        if n_tok == 0:
            if any(feats):
                return None
            return self._submit(_numbers, b"", n, usecols, raw_totals)
        text = "\n".join(feats)
        raw = text.encode()
        if len(raw) != len(text) or b"\r" in raw:  # not ASCII: byte and character offsets differ
            return None
        pending = self._submit(_numbers, raw, n, usecols, raw_totals)
        data = raw + bytes(8)
        chars = np.frombuffer(data, dtype=np.uint8)[:-8]
        spaces = np.flatnonzero(chars == 32)
        ends = np.append(np.flatnonzero(chars == 10), len(raw))  # fields hold no newline
        per_line = np.diff(np.searchsorted(spaces, ends), prepend=0)
        if not (per_line == n_tok - 1).all():
            return None  # a line with more or fewer tokens
        # Tokens are what lies between single spaces: an empty one (two spaces) gives a label
        # of the wrong length, or a value that the number reader refuses.
        if layout.labels:
            windows = _u64_windows(data)
            gaps = spaces.reshape(n, n_tok - 1)
            line_starts = np.concatenate(([0], ends[:-1] + 1))
            for p, label in zip(layout.label_pos, layout.labels, strict=True):
                start = line_starts if p == 0 else gaps[:, p - 1] + 1
                stop = ends if p == n_tok - 1 else gaps[:, p]
                token = label.encode()
                if not (stop - start == len(token)).all():
                    return None
                if not _tokens_equal(windows, start, token):
                    return None
        return pending

    def _submit(self, fn: Callable[..., _Numbers | None], *args: Any) -> Future[_Numbers | None]:
        """`fn(*args)` on the helper thread (which `__iter__` runs while it parses)."""
        assert self._pool is not None
        return self._pool.submit(fn, *args)


_Numbers = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _numbers(data: bytes, n: int, usecols: Sequence[int], raw_totals: list[str]) -> _Numbers | None:
    """The feature values (columns `usecols` of `data`) and the totals of `n` lines, or None if a
    number is not one that float() reads."""
    values = read_floats(data, n, usecols) if usecols else np.empty((n, 0), dtype=np.float64)
    if values is None or values.shape != (n, len(usecols)):
        return None
    text = "\n".join(raw_totals)
    read = read_floats(text, n, [0]) if " " not in text else None
    if read is not None:
        return values, read[:, 0]
    try:
        return values, np.fromiter(map(float, raw_totals), dtype=np.float64, count=n)
    except ValueError:
        return None


def _arrow_floats(data: bytes, usecols: Sequence[int]) -> npt.NDArray[np.float64] | None:
    """pyarrow's CSV reader (None if pyarrow is missing): a correctly rounding C++ parser that
    releases the GIL, so it runs beside the Python work of the next steps."""
    if _arrow_csv is None:
        return None
    names = [f"f{i}" for i in usecols]  # pyarrow names the columns f0, f1, ...
    table = _arrow_csv.read_csv(
        _pyarrow.BufferReader(data),
        read_options=_arrow_csv.ReadOptions(
            autogenerate_column_names=True, use_threads=False, block_size=max(len(data), 1 << 20)
        ),
        parse_options=_arrow_csv.ParseOptions(delimiter=" ", quote_char=False, double_quote=False),
        convert_options=_arrow_csv.ConvertOptions(
            include_columns=names,
            column_types={c: _pyarrow.float64() for c in names},
            null_values=[],
            strings_can_be_null=False,
        ),
    )
    return np.column_stack([_float64s(table.column(c)) for c in names])


def _float64s(column: Any) -> npt.NDArray[np.float64]:
    """A float64 arrow column as numpy, read from its chunks' buffers: `to_numpy` would import
    pandas (half a second of start-up) only to ask whether it is needed."""
    parts = [
        np.frombuffer(ch.buffers()[1], dtype=np.float64)[ch.offset : ch.offset + len(ch)]
        if ch.null_count == 0
        else ch.to_numpy(zero_copy_only=False).astype(np.float64)
        for ch in column.chunks
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def read_floats(
    text: str | bytes, n: int, usecols: Sequence[int]
) -> npt.NDArray[np.float64] | None:
    """The numbers in columns `usecols` of `n` lines of single-space separated tokens, exactly as
    float() reads them; None if a token there is not a number float() reads the same way.

    pyarrow's reader (or pandas' without it) is 3x faster than numpy's and rounds like float()
    (tested); what it refuses or reads as NaN (it knows fewer spellings: "1_0", "nan",
    "infinity") goes to numpy's reader, which follows float() and refuses what float() refuses."""
    data = text.encode() if isinstance(text, str) else text
    try:
        values = _arrow_floats(data, usecols)
        if values is None:
            import pandas as pd

            frame = pd.read_csv(
                io.BytesIO(data),
                sep=" ",
                header=None,
                usecols=list(usecols),
                dtype=np.float64,
                engine="c",
                na_filter=False,
                comment=None,
                quoting=3,  # csv.QUOTE_NONE: a quote is an ordinary character
                skip_blank_lines=False,
            )
            values = frame.to_numpy(dtype=np.float64)[:, np.argsort(np.argsort(usecols))]
        if values.shape == (n, len(usecols)) and not np.isnan(values).any():
            return values
    except _NUMBER_ERRORS:
        pass
    try:
        lines = data.decode().split("\n")
        values = np.loadtxt(
            lines, dtype=np.float64, delimiter=" ", comments=None, usecols=usecols, ndmin=2
        )
    except ValueError:
        return None
    return values if values.shape == (n, len(usecols)) else None


def read_nbest_blocks(
    path: PathLike,
    *,
    n_sentences: int | None = None,
    max_hyps: int | None = None,
    labeled: bool | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> Iterator[NBestBlock]:
    """Stream an n-best list (plain, .gz or "-") as column blocks of about `block_bytes` of text.

    Each `NBestBlock` holds consecutive rows (hypotheses in file order) that share one dense
    feature layout: int64 `sent_ids` and `lines`, float64 `dense` (n, width) and `totals`, and
    per-row lists `surfaces`, `sparse`, `raw_features`, `raw_totals`, `extra`. Memory stays
    that of one block. Ids are checked as `read_nbest` checks them (increasing, below
    `n_sentences`); a missing id has no rows. `max_hyps` keeps the first k rows of a sentence.
    Every line is validated as by `read_nbest`: a bad line raises `NBestFormatError` (an
    `InputError`) naming the file and 1-based line, before the block holding it is yielded.
    """
    return iter(
        NBestReader(
            path,
            n_sentences=n_sentences,
            max_hyps=max_hyps,
            labeled=labeled,
            block_bytes=block_bytes,
        )
    )


def token_tuples(surfaces: list[str]) -> list[tuple[str, ...]]:
    """Each surface split into its tokens (an empty surface has none)."""
    tokens = list(map(tuple, map(str.split, surfaces, itertools.repeat(" "))))
    if "" in surfaces:
        for i, surface in enumerate(surfaces):
            if not surface:
                tokens[i] = ()
    return tokens


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a block's objects are built: they all stay alive, so
    the collections that their allocation would trigger find nothing to free (a quarter of the
    time of `read_nbest`). The previous state is restored; nothing is yielded to callers inside."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_all(twin: type, final: type, n: int, *columns: Iterable[Any]) -> list[Any]:
    """`final(*row)` for each row of the columns, through `twin` (see _FeatureTwin) when possible."""
    if not _FAST_BUILD:  # pragma: no cover
        return list(map(final, *columns))
    objs = list(map(twin, *columns))
    for obj in objs:
        obj.__class__ = final
    return objs


class _FeatureColumns:
    """Builds the Feature objects of a block, one dense group (column slice) at a time.

    A single-value group whose values are integers on the first block (Distortion0,
    WordPenalty0 ...) shares its Feature objects through a small cache: such counts repeat on
    most lines, and sharing them saves both time and memory.
    """

    def __init__(self, layout: FeatureLayout, first: npt.NDArray[np.float64]) -> None:
        self.groups = list(
            zip(
                layout.names,
                itertools.pairwise(itertools.accumulate(layout.sizes, initial=0)),
                layout.styles,
                strict=True,
            )
        )
        self.caches: list[dict[float, Feature] | None] = [
            {} if b - a == 1 and bool(np.all(first[:, a] == np.round(first[:, a]))) else None
            for _, (a, b), _ in self.groups
        ]

    def rows(self, dense: npt.NDArray[np.float64]) -> Iterator[tuple[Feature, ...]]:
        """The features tuple of each row of `dense`."""
        n = len(dense)
        rows = dense.tolist()
        columns: list[list[Feature]] = []
        for (name, (a, b), style), cache in zip(self.groups, self.caches, strict=True):
            if cache is not None:
                columns.append(self._cached(dense[:, a], cache, name, style))
                continue
            values: Iterable[tuple[float, ...]]
            if b - a > 1:
                values = map(operator.itemgetter(*range(a, b)), rows)
            elif b - a == 1:
                values = zip(map(operator.itemgetter(a), rows))
            else:
                values = itertools.repeat((), n)
            names, styles = itertools.repeat(name, n), itertools.repeat(style, n)
            columns.append(_build_all(_FeatureTwin, Feature, n, names, values, styles))
        return zip(*columns, strict=True) if columns else itertools.repeat((), n)

    @staticmethod
    def _cached(
        column: npt.NDArray[np.float64], cache: dict[float, Feature], name: str, style: str
    ) -> list[Feature]:
        """Feature objects of a single-value group, shared through `cache`."""
        values = column.tolist()
        for v in set(values).difference(cache):
            if len(cache) >= _CACHE_SIZE:
                break
            cache[v] = _feature(name, (v if v else 0.0,), style)  # a -0.0 key stores +0.0
        try:
            out = list(map(cache.__getitem__, values))
        except KeyError:  # the cache is full: build what it lacks
            out = [cache.get(v) or _feature(name, (v,), style) for v in values]
        negative_zero = np.flatnonzero((column == 0) & np.signbit(column))
        for i in negative_zero.tolist():
            out[i] = _feature(name, (-0.0,), style)
        return out


def _groups(blocks: Iterable[NBestBlock], n_sentences: int | None) -> Iterator[NBestGroup]:
    """Hypothesis objects grouped by sentence, with an empty group for every missing id."""
    builders: dict[FeatureLayout, _FeatureColumns] = {}
    cur = -1
    hyps: list[Hypothesis] = []
    for block in blocks:
        n = len(block)
        columns = builders.get(block.layout)
        if columns is None:
            columns = builders[block.layout] = _FeatureColumns(block.layout, block.dense)
        sids = block.sent_ids.tolist()
        with _gc_paused():
            made = _build_all(
                _HypothesisTwin,
                Hypothesis,
                n,
                sids,
                token_tuples(block.surfaces),
                columns.rows(block.dense),
                block.sparse,
                block.totals.tolist(),
                block.extra,
                block.raw_features,
                block.raw_totals,
            )
        starts = np.flatnonzero(np.diff(block.sent_ids, prepend=cur)).tolist()
        hyps.extend(made[: starts[0] if starts else n])  # rows continuing the current sentence
        for i, j in itertools.pairwise([*starts, n]):
            if cur >= 0:
                yield NBestGroup(cur, tuple(hyps))
            for missing in range(cur + 1, sids[i]):
                yield NBestGroup(missing, ())
            hyps = made[i:j]
            cur = sids[i]
    if cur >= 0:
        yield NBestGroup(cur, tuple(hyps))
    if n_sentences is not None:
        for missing in range(cur + 1, n_sentences):
            yield NBestGroup(missing, ())


def read_nbest(
    path: PathLike,
    *,
    n_sentences: int | None = None,
    max_hyps: int | None = None,
    labeled: bool | None = None,
) -> Iterator[NBestGroup]:
    """Stream the sentences of an n-best list (plain, .gz or "-"), one block in memory at a time.

    Yields a group for every id 0..last, empty for ids missing from the file. `n_sentences` (the
    number of source lines) adds trailing empty groups and makes a larger id an error. `max_hyps`
    keeps the first k hypotheses of each sentence (the others are only checked for field count
    and id order). `labeled=None` detects from the first line whether features are labelled;
    unlabelled values get the names F0, F1, ... and style "". Bad lines raise NBestFormatError.
    Built on `read_nbest_blocks`; code that needs arrays rather than objects should use that.
    """
    reader = NBestReader(path, n_sentences=n_sentences, max_hyps=max_hyps, labeled=labeled)
    return _groups(reader, n_sentences)
