"""Moses n-best list I/O: a streaming, validating reader, a writer that round-trips, and stats.

Moses format: ``ID ||| SURFACE ||| FEATURES ||| TOTAL [||| EXTRA]...``, one hypothesis per
line, the lines of a sentence contiguous and ids increasing. The reader keeps one sentence in memory
at a time, reports every malformed line as an `NBestFormatError` naming the file and 1-based line,
and yields an empty group for every sentence id missing from the file (the decoder failed on it).

Round trip: `write_nbest(read_nbest(f))` reproduces `f` byte for byte except that the surface is
written as its tokens joined by single spaces, without the trailing space Moses writes before
`` ||| ``. Features, total and extra fields are written from their text as read. Also normalised:
CRLF line ends (to LF), a UTF-8 byte order mark (dropped), and a separator written without its
spaces (``3 ||| ||| F= 1 ||| -2`` is read, and written back as ``3 |||  ||| F= 1 ||| -2``).

Speed (bench/bench_nbest.py): about 200k lines/s on one core of the 2-core test machine, constant
memory. Most of the time goes into creating the frozen dataclasses and floats the interface asks
for; the hot path reuses the label layout of the previous line, builds each line's features with
code generated for that layout, and shares Feature objects of repeating integer counts.

Numbers the writer formats itself (added features, or fields a caller replaced) use `format_number`:
``%g`` with 7 significant digits (Moses prints 6; one more keeps 4 decimals for scores around -100).
"""

from __future__ import annotations

import gzip
import statistics
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import IO, Any

from nbest_rescore.errors import InputError, NBestFormatError
from nbest_rescore.fileio import PathLike, atomic_write, open_binary

__all__ = [
    "FIELD_SEP",
    "Feature",
    "Hypothesis",
    "NBestGroup",
    "NBestStats",
    "format_features",
    "format_hypothesis",
    "format_number",
    "iter_lines",
    "nbest_stats",
    "read_nbest",
    "write_nbest",
]

FIELD_SEP = " ||| "
NUMBER_DIGITS = 7  # significant digits of the numbers the writer formats (see format_number)
_BLOCK_BYTES = 1 << 20  # read size; a sentence's lines never need to fit in one block
_EXCERPT_CHARS = 100
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


def _split_lines(text: str) -> list[str]:
    """Lines of a decoded chunk that ends with a newline (CRLF read as LF)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    lines.pop()  # the empty string after the final newline
    return lines


def _decode_chunk(
    chunk: bytes, before: int, name: str
) -> tuple[list[str], NBestFormatError | None]:
    """Decode whole lines (`before` lines precede them); on invalid UTF-8 return the lines
    before the bad one and the error naming it, so earlier problems are reported first."""
    try:
        return _split_lines(chunk.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        start = chunk.rfind(b"\n", 0, exc.start) + 1
        end = chunk.find(b"\n", exc.start)
        bad = chunk[start : end if end >= 0 else len(chunk)]
        line_no = before + chunk.count(b"\n", 0, start) + 1
        good = _split_lines(chunk[:start].decode("utf-8")) if start else []
        err = NBestFormatError(
            f"invalid UTF-8 ({exc.reason}) at byte {exc.start - start + 1} of the line: "
            f"{_excerpt(bad.decode('utf-8', errors='replace'))}",
            name,
            line_no,
        )
        return good, err


def _iter_blocks(
    path: PathLike, name: str, block_size: int = _BLOCK_BYTES
) -> Iterator[tuple[int, list[str]]]:
    """Decoded lines in blocks of about `block_size` bytes, each with the number of lines before it.

    Reads plain, .gz (by suffix, or by magic bytes, e.g. gzipped stdin) or "-" for stdin.
    """
    try:
        raw = open_binary(path)
    except (IsADirectoryError, PermissionError) as exc:
        raise InputError(f"cannot read ({exc.strerror})", name) from exc
    fh = raw
    try:
        peek = getattr(raw, "peek", None)
        if peek is not None and not str(path).endswith(".gz") and peek(2)[:2] == _GZIP_MAGIC:
            fh = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        before = 0
        carry = b""
        first = True
        while True:
            try:
                block = fh.read(block_size)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
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
            lines, err = _decode_chunk(chunk, before, name)
            if lines:
                yield before, lines
            if err is not None:
                raise err
            before += len(lines)
        if carry:  # a last line without a newline
            if first and carry.startswith(_BOM):
                carry = carry[len(_BOM) :]
            lines, err = _decode_chunk(carry + b"\n", before, name)
            if lines:
                yield before, lines
            if err is not None:
                raise err
    finally:
        if fh is not raw:
            fh.close()  # the gzip wrapper; it leaves `raw` open
        if str(path) != "-":
            raw.close()  # stdin itself stays open


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
        return itemgetter(*indices)
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
        "labels",
        "n_tokens",
        "sparse",
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


class _Reader:
    """Streaming reader behind `read_nbest`; also records label changes for `nbest_stats`."""

    def __init__(
        self,
        path: PathLike,
        *,
        n_sentences: int | None,
        max_hyps: int | None,
        labeled: bool | None,
    ) -> None:
        if n_sentences is not None and n_sentences < 0:
            raise ValueError(f"n_sentences must be >= 0, got {n_sentences}")
        if max_hyps is not None and max_hyps < 1:
            raise ValueError(f"max_hyps must be >= 1, got {max_hyps}")
        self.path = path
        self.name = _display_name(path)
        self.n_sentences = n_sentences
        self.max_hyps = max_hyps
        self.labeled = labeled
        self.first_dense_names: tuple[str, ...] | None = None
        self.first_label_change_line: int | None = None  # first line whose dense labels differ

    def _error(self, message: str, line_no: int, line: str) -> NBestFormatError:
        return NBestFormatError(f"{message}: {_excerpt(line)}", self.name, line_no)

    def _fields(self, line: str, line_no: int) -> list[str]:
        """The fields of a line that has fewer than four ' ||| '-separated ones."""
        try:
            return _split_fields(line)
        except _LineError as exc:
            raise self._error(str(exc), line_no, line) from None

    def _sentence_id(self, text: str, cur: int, line_no: int, line: str) -> int:
        """The id of a line whose id text differs from the previous line's, checked for order."""
        try:
            sid = _parse_id(text)
        except _LineError as exc:
            raise self._error(str(exc), line_no, line) from None
        if sid < cur:
            raise self._error(
                f"sentence id {sid} after {cur}: ids must increase and the lines of a "
                "sentence must be contiguous",
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

    def _slow_line(
        self, parts: list[str], line_no: int, line: str
    ) -> tuple[_Layout, tuple[Feature, ...], tuple[tuple[str, float], ...], float]:
        """Parse a line whose label layout differs from the cached one (or that has an error)."""
        try:
            toks = parts[2].split()
            if self.labeled is None and toks:
                self.labeled = _is_label(toks[0])
            layout = _Layout(toks, self.labeled is not False)
            features, sparse = layout.parse(toks)
            try:
                total = float(parts[3])
            except ValueError:
                raise _LineError(f"non-numeric total {parts[3]!r}") from None
        except _LineError as exc:
            raise self._error(str(exc), line_no, line) from None
        if self.first_dense_names is None:
            self.first_dense_names = layout.dense_names
        elif layout.dense_names != self.first_dense_names and self.first_label_change_line is None:
            self.first_label_change_line = line_no
        return layout, features, sparse, total

    def __iter__(self) -> Iterator[NBestGroup]:
        """Group the lines by sentence; the per-line work is inlined here for speed."""
        n_sentences = self.n_sentences
        limit = self.max_hyps if self.max_hyps is not None else sys.maxsize
        group = NBestGroup
        hyp = _hypothesis_fast
        sep = FIELD_SEP
        # The layout of the last line: a line with labels at the same places takes the fast path.
        layout = _Layout([], True)
        n_tok = -1
        get_labels = get_values = layout.get_labels
        labels = layout.labels
        build: _Builder | None = None
        cur = -1  # current sentence id
        cur_text = ""  # its id as written
        hyps: list[Hypothesis] = []
        for before, lines in _iter_blocks(self.path, self.name):
            for line_no, line in enumerate(lines, before + 1):
                parts = line.split(sep)
                if len(parts) < 4:
                    parts = self._fields(line, line_no)
                id_text = parts[0]
                if id_text != cur_text:
                    sid = self._sentence_id(id_text, cur, line_no, line)
                    if sid != cur:
                        if cur >= 0:
                            yield group(cur, tuple(hyps))
                        for missing in range(cur + 1, sid):
                            yield group(missing, ())
                        hyps = []
                        cur = sid
                    cur_text = id_text
                if len(hyps) >= limit:
                    continue  # beyond top-k: only the fields and id order are checked
                raw_features = parts[2]
                raw_total = parts[3]
                toks = raw_features.split()
                features: tuple[Feature, ...] | None = None
                if len(toks) == n_tok and get_labels(toks) == labels:
                    if build is None:
                        build = layout.compiled()
                    try:
                        features, sparse = build(get_values(toks))
                        total = float(raw_total)
                    except ValueError:
                        features = None
                if features is None:
                    layout, features, sparse, total = self._slow_line(parts, line_no, line)
                    n_tok = layout.n_tokens
                    get_labels = layout.get_labels
                    get_values = layout.get_values
                    labels = layout.labels
                    build = None
                words = parts[1].split(" ")
                if words[-1] == "":
                    words.pop()  # Moses' trailing space
                if "" in words:  # leading or repeated spaces
                    words = [w for w in words if w]
                hyps.append(
                    hyp(
                        cur,
                        tuple(words),
                        features,
                        sparse,
                        total,
                        tuple(parts[4:]) if len(parts) > 4 else (),
                        raw_features,
                        raw_total,
                    )
                )
        if cur >= 0:
            yield group(cur, tuple(hyps))
        if n_sentences is not None:
            for missing in range(cur + 1, n_sentences):
                yield group(missing, ())


def read_nbest(
    path: PathLike,
    *,
    n_sentences: int | None = None,
    max_hyps: int | None = None,
    labeled: bool | None = None,
) -> Iterator[NBestGroup]:
    """Stream the sentences of an n-best list (plain, .gz or "-"), one group in memory at a time.

    Yields a group for every id 0..last, empty for ids missing from the file. `n_sentences` (the
    number of source lines) adds trailing empty groups and makes a larger id an error. `max_hyps`
    keeps the first k hypotheses of each sentence (the others are only checked for field count
    and id order). `labeled=None` detects from the first line whether features are labelled;
    unlabelled values get the names F0, F1, ... and style "". Bad lines raise NBestFormatError.
    """
    return iter(_Reader(path, n_sentences=n_sentences, max_hyps=max_hyps, labeled=labeled))


# ---------------------------------------------------------------------------------------------
# Writing


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


def _check_added(feature: Feature) -> None:
    """Refuse feature names that would not read back as one dense group."""
    name = feature.name
    if feature.style not in ("=", ":", ""):
        raise ValueError(f"feature {name!r}: style must be '=', ':' or '', not {feature.style!r}")
    if feature.style and (not name or any(c.isspace() for c in name) or "|||" in name):
        raise ValueError(f"feature name {name!r} must be non-empty without spaces or '|||'")
    if feature.style and name[-1] in "=:":
        raise ValueError(f"feature name {name!r} must not end with '=' or ':'")
    if feature.style == "=" and "_" in name:
        raise ValueError(
            f"feature name {name!r} contains '_': Moses' tuners would read it as a sparse feature"
        )


_last_layout: list[_Layout] = []  # the writer's last layout, reused while lines repeat it


def _raw_features_valid(h: Hypothesis) -> bool:
    """Whether `h.raw_features` still says what `h.features` and `h.sparse` say (a caller may
    have replaced them with `dataclasses.replace`)."""
    toks = h.raw_features.split()
    parsed = None
    layout = _last_layout[0] if _last_layout else None
    if layout is not None and layout.matches(toks):
        try:
            parsed = layout.compiled()(layout.get_values(toks))
        except ValueError:
            parsed = None
    if parsed is None:
        try:
            layout = _Layout(toks, bool(toks) and _is_label(toks[0]))
            parsed = layout.parse(toks)
        except _LineError:
            return False
        _last_layout[:] = [layout]
    return parsed == (h.features, h.sparse)


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
    if h.raw_features and _raw_features_valid(h):
        feats = h.raw_features
    else:
        feats = format_features(h.features, h.sparse)
    if extra_features:
        for f in extra_features:
            _check_added(f)
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


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class NBestStats:
    """Summary of an n-best list, for `rescore stats`."""

    n_sentences: int  # ids 0..last (including ids with no hypothesis)
    n_hypotheses: int
    n_missing: int  # ids with no hypothesis
    missing_ids: tuple[int, ...]  # the first 20 of them
    hyps_min: int
    hyps_median: float
    hyps_max: int
    feature_labels: tuple[str, ...]  # dense feature names of the first line, in order
    distinct_ratio: float  # distinct surfaces per sentence, summed, over hypotheses
    n_with_unlabelled: bool  # True when the feature lists are unlabelled (names F0, F1, ...)
    labels_consistent: bool  # every line has the first line's dense label sequence
    first_label_change_line: int | None  # 1-based line where the dense labels first differ
    n_sparse_lines: int  # hypotheses with sparse features
    n_empty_surfaces: int
    n_with_extra_fields: int  # hypotheses with fields after TOTAL (segmentation, alignment)


def nbest_stats(path: PathLike) -> NBestStats:
    """Read an n-best list once (streaming) and summarise it."""
    reader = _Reader(path, n_sentences=None, max_hyps=None, labeled=None)
    counts: list[int] = []
    missing: list[int] = []
    n_hyps = n_distinct = n_sparse = n_empty = n_extra = 0
    for group in reader:
        hyps = group.hyps
        counts.append(len(hyps))
        if not hyps:
            missing.append(group.sent_id)
            continue
        n_hyps += len(hyps)
        n_distinct += len({h.tokens for h in hyps})
        for h in hyps:
            if h.sparse:
                n_sparse += 1
            if not h.tokens:
                n_empty += 1
            if h.extra:
                n_extra += 1
    return NBestStats(
        n_sentences=len(counts),
        n_hypotheses=n_hyps,
        n_missing=len(missing),
        missing_ids=tuple(missing[:20]),
        hyps_min=min(counts, default=0),
        hyps_median=float(statistics.median(counts)) if counts else 0.0,
        hyps_max=max(counts, default=0),
        feature_labels=reader.first_dense_names or (),
        distinct_ratio=n_distinct / n_hyps if n_hyps else 0.0,
        n_with_unlabelled=reader.labeled is False and n_hyps > 0,
        labels_consistent=reader.first_label_change_line is None,
        first_label_change_line=reader.first_label_change_line,
        n_sparse_lines=n_sparse,
        n_empty_surfaces=n_empty,
        n_with_extra_fields=n_extra,
    )
