"""Scoring a whole n-best list: chunked, cached on disk, resumable and sharded over torchrun ranks.

`score_table` scores the list as `table.read_table` read it (the run job reads each file once);
`score_nbest` reads a file first. The list is cut into chunks of `chunk_sentences` sentence ids
(chunk k = ids k*C .. k*C+C-1). Each (model, chunk) result is one `.npz` file, written atomically
as soon as it is computed, and named by a key over the model's SHA-256, the chunk's content
(sources, hypotheses, sentence boundaries) and every setting that can change a score's bits.
Hence:
- a run killed at any point resumes from its finished chunks when restarted with the same command;
- a second run over the same file, or with one more model, only loads files; a changed file
  re-scores only its changed chunks;
- batching inside a chunk depends only on the chunk's content, so results are byte-identical
  whether a chunk was scored in this run, a previous one, or on another rank.
Under torchrun, chunk k is scored by rank k % world_size; after a barrier every rank assembles
the full result from the shared cache directory.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nbest_rescore import distributed
from nbest_rescore.checkpoint import ModelBundle
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import PathLike, atomic_write
from nbest_rescore.memory import release_memory
from nbest_rescore.nbest_reader import read_nbest_blocks, token_tuples
from nbest_rescore.progress import QUIET, ProgressSettings, bar
from nbest_rescore.scoring import (
    DETECT_HYPS,
    HypScores,
    ScoreStats,
    ScoringConfig,
    bf16_max_difference,
    hypothesis_ids,
    resolve_escaped,
    score_hypotheses,
    score_source_given_hypotheses,
    source_tokens,
)
from nbest_rescore.table import NBestTable, table_from_blocks

STORE_FORMAT = "nbest_rescore/scores/1"
"""Bump when the scoring arithmetic changes, so old chunk files are not reused."""


@dataclass
class NBestScores:
    """Scores of every hypothesis of an n-best file, in file order, for one or more models."""

    logprob: np.ndarray
    """(n_hyps, n_models) float64: log P(hyp | source), EOS included."""
    n_tokens: np.ndarray
    """(n_hyps,) int64: target tokens including EOS."""
    n_unk: np.ndarray
    """(n_hyps, n_models) int64: target tokens outside each model's vocabulary."""
    offsets: np.ndarray
    """(n_sentences + 1,) int64: hypotheses of sentence i are rows offsets[i]:offsets[i+1]."""
    model_sha256: tuple[str, ...]
    tgt_oov_rate: tuple[float, ...]
    """Per model: share of n-best tokens (EOS excluded, every hypothesis counted) not in its vocab."""
    src_oov_rate: tuple[float, ...]
    escaped: bool
    """The n-best escaping convention used (given or detected)."""
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    def sentence(self, i: int) -> slice:
        """Rows of sentence id `i`."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


@dataclass(frozen=True)
class _Scan:
    """What the store needs to know of a list before scoring: its structure and content keys."""

    counts: np.ndarray  # hypotheses per sentence id, (n_sentences,)
    chunk_hashes: tuple[str, ...]
    escaped: bool
    src_escaped: bool


def model_key(bundle: ModelBundle) -> str:
    """The model's identity for cache keys: the checkpoint's SHA-256, else a hash of its content."""
    suffix = "" if bundle.direction == "s2t" else f"-{bundle.direction}"
    if bundle.sha256:
        return bundle.sha256 + suffix
    h = hashlib.sha256(suffix.encode())
    h.update(repr(bundle.config.to_dict()).encode())
    h.update("\n".join(bundle.src_vocab.itos).encode())
    h.update(b"\0")
    h.update("\n".join(bundle.tgt_vocab.itos).encode())
    h.update(repr((bundle.src_tok.to_dict(), bundle.tgt_tok.to_dict())).encode())
    for name, t in sorted(bundle.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _chunk_ids(n_sentences: int, chunk: int) -> list[range]:
    return [range(s, min(s + chunk, n_sentences)) for s in range(0, n_sentences, chunk)]


def _check_count(n_ids: int, n_sources: int, nbest: PathLike, sources_path: str | None) -> None:
    if n_ids > n_sources:
        src = f" ({sources_path})" if sources_path else ""
        raise InputError(
            f"the n-best list has sentence ids up to {n_ids - 1}, so it needs at least "
            f"{n_ids} source sentences, but the source{src} has {n_sources} lines",
            str(nbest),
        )


def _real_surfaces(table: NBestTable, ids: range) -> tuple[list[str], np.ndarray]:
    """The surfaces of sentences `ids` (synthetic rows left out) and each one's sentence id."""
    lo, hi = int(table.offsets[ids.start]), int(table.offsets[ids.stop])
    counts = table.counts[ids.start : ids.stop]
    real = np.flatnonzero(np.repeat(~table.missing[ids.start : ids.stop], counts))
    rows = table.surfaces.rows(lo, hi)
    sent = np.repeat(np.arange(ids.start, ids.stop), counts)
    return [rows[i] for i in real.tolist()], sent[real]


def _chunk_hash(table: NBestTable, sources: Sequence[str], ids: range, chunk: int) -> str:
    """The content key of a chunk: each id's source ("S" line) followed by its hypotheses ("H")."""
    h = hashlib.sha256()
    surfaces, sent = _real_surfaces(table, ids)
    ends = np.searchsorted(sent, np.arange(ids.start, ids.stop), side="right").tolist()
    start = 0
    for i, end in zip(ids, ends, strict=True):
        h.update(f"S\t{i % chunk}\t{sources[i]}\n".encode())
        h.update("".join([f"H\t{t}\n" for t in surfaces[start:end]]).encode())
        start = end
    return h.hexdigest()


def _scan(table: NBestTable, sources: Sequence[str], cfg: ScoringConfig) -> _Scan:
    """Count hypotheses, hash each chunk's content, detect the escaping conventions."""
    counts = np.where(table.missing, 0, table.counts).astype(np.int64)
    chunks = _chunk_ids(len(sources), cfg.chunk_sentences)
    hashes = tuple(_chunk_hash(table, sources, ids, cfg.chunk_sentences) for ids in chunks)
    first = np.flatnonzero(table.real)[:DETECT_HYPS].tolist()
    escaped = resolve_escaped(cfg.escaped, token_tuples([table.surfaces[r] for r in first]))
    src_escaped = cfg.src_tokenized and resolve_escaped(
        None, [s.split() for s in sources[:DETECT_HYPS]]
    )
    return _Scan(counts, hashes, escaped, src_escaped)


def _file_key(mkey: str, chunk_hash: str, scan: _Scan, cfg: ScoringConfig) -> str:
    settings = (
        f"{STORE_FORMAT}|{mkey}|{cfg.numeric_key()}|escaped={scan.escaped}|"
        f"src_tokenized={cfg.src_tokenized}|src_escaped={scan.src_escaped}|{chunk_hash}"
    )
    return hashlib.sha256(settings.encode()).hexdigest()


def _chunk_path(cache_dir: Path, mkey: str, key: str) -> Path:
    return cache_dir / mkey[:16] / f"{key[:32]}.npz"


def _load_chunk(path: Path, key: str, n_hyps: int) -> dict[str, np.ndarray] | None:
    """A finished chunk file's arrays, or None when absent, unreadable or not this chunk's."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if str(data.get("key", "")) != key or data["logprob"].shape != (n_hyps,):
        return None
    return data


def _write_chunk(path: Path, key: str, scores: HypScores) -> None:
    st = scores.stats
    with atomic_write(path, "wb", gz=False) as fh:
        np.savez(
            fh,
            key=np.array(key),
            logprob=scores.logprob.astype(np.float64),
            n_tokens=scores.n_tokens.astype(np.int64),
            n_unk=scores.n_unk.astype(np.int64),
            src_counts=np.array([scores.src_tokens, scores.src_unk], dtype=np.int64),
            work=np.array(
                [st.n_hyps, st.n_unique, st.n_target_tokens, st.n_softmax_rows], dtype=np.int64
            ),
        )


def _chunk_hyps(table: NBestTable, ids: range) -> tuple[list[tuple[str, ...]], list[int]]:
    """A chunk's hypotheses as tokens, and each one's sentence position in the chunk."""
    surfaces, sent = _real_surfaces(table, ids)
    return token_tuples(surfaces), (sent - ids.start).tolist()


def _assemble(
    paths: list[list[tuple[Path, str]]], chunk_hyps: list[int], lengths_from: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every model's chunks from the cache, concatenated: log-probs and UNK counts (hyps, models),
    target lengths (hyps,; from model `lengths_from`, a source-to-target one: a target-to-source
    model counts source tokens), source tokens and source UNKs per model."""
    n_hyps, n_models = sum(chunk_hyps), len(paths)
    logprob = np.empty((n_hyps, n_models), dtype=np.float64)
    n_unk = np.empty((n_hyps, n_models), dtype=np.int64)
    n_tokens = np.empty(n_hyps, dtype=np.int64)
    src_tok = np.zeros(n_models, dtype=np.int64)
    src_unk = np.zeros(n_models, dtype=np.int64)
    pos = 0
    for k, size in enumerate(chunk_hyps):
        end = pos + size
        for m in range(n_models):
            data = _load_chunk(*paths[m][k], size)
            if data is None:
                raise RuntimeError(
                    f"chunk {k} of model {m} is missing from the cache: {paths[m][k][0]}"
                )
            logprob[pos:end, m] = data["logprob"]
            n_unk[pos:end, m] = data["n_unk"]
            if m == lengths_from:
                n_tokens[pos:end] = data["n_tokens"]
            src_tok[m] += int(data["src_counts"][0])
            src_unk[m] += int(data["src_counts"][1])
        pos = end
    return logprob, n_unk, n_tokens, src_tok, src_unk


def _score_missing(
    table: NBestTable,
    sources: Sequence[str],
    bundles: Sequence[ModelBundle],
    cfg: ScoringConfig,
    scan: _Scan,
    paths: list[list[tuple[Path, str]]],
    todo: dict[int, list[int]],
    progress: ProgressSettings,
    on_chunk: Callable[[int], None] | None,
) -> tuple[ScoreStats, int]:
    """Score the (chunk, models) of `todo`, in chunk order, and write each result to its cache
    file; returns the work counters and the number of files written."""
    stats = ScoreStats()
    n_scored_files = 0
    written: set[Path] = set()  # a chunk identical to one scored earlier in this run: not again
    chunks = _chunk_ids(len(sources), cfg.chunk_sentences)
    total = sum(int(scan.counts[chunks[k].start : chunks[k].stop].sum()) for k in todo)
    pbar = bar(progress, desc="scoring", total=total, unit="hyp")
    try:
        for k in sorted(todo):
            ids = chunks[k]
            hyps, owner = _chunk_hyps(table, ids)  # only one chunk's tokens are held at a time
            chunk_sources = [sources[i] for i in ids]
            for m in todo[k]:
                if paths[m][k][0] in written:
                    continue
                t2s = bundles[m].direction == "t2s"
                score = score_source_given_hypotheses if t2s else score_hypotheses
                res = score(
                    bundles[m],
                    chunk_sources,
                    hyps,
                    owner,
                    cfg,
                    escaped=scan.escaped,
                    src_escaped=scan.src_escaped,
                )
                stats.add(res.stats)
                _write_chunk(*paths[m][k], res)
                written.add(paths[m][k][0])
                n_scored_files += 1
            release_memory()  # the scorer's freed buffers: the RSS stays that of one chunk
            pbar.update(len(hyps))
            if on_chunk is not None:
                on_chunk(k)
    finally:
        pbar.close()
    return stats, n_scored_files


def score_nbest(
    nbest_path: PathLike,
    sources: Sequence[str],
    bundles: Sequence[ModelBundle],
    cfg: ScoringConfig,
    cache_dir: PathLike | None,
    progress: ProgressSettings = QUIET,
    *,
    max_hyps: int | None = None,
    sources_path: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> NBestScores:
    """`score_table` of the n-best file `nbest_path` (its first `max_hyps` per sentence), read
    here; the list may lack ids but must not exceed the sources (InputError, before scoring)."""
    blocks = read_nbest_blocks(nbest_path, max_hyps=max_hyps)
    table = table_from_blocks(blocks, nbest_path)
    _check_count(table.n_sentences, len(sources), nbest_path, sources_path)
    return score_table(
        table.padded(len(sources)), sources, bundles, cfg, cache_dir, progress, on_chunk=on_chunk
    )


def score_table(
    table: NBestTable,
    sources: Sequence[str],
    bundles: Sequence[ModelBundle],
    cfg: ScoringConfig,
    cache_dir: PathLike | None,
    progress: ProgressSettings = QUIET,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> NBestScores:
    """Score every hypothesis of an n-best list read into `table` (one sentence per source, as
    `NBestTable.padded` gives) with every model, through the chunk cache.

    `sources` are the source lines (raw text, or tokenized with `cfg.src_tokenized`), one per
    sentence id. Under torchrun the chunks are shared out by rank; every rank returns the result.
    `on_chunk(k)` is called after chunk k's files are written (progress hooks, tests).
    `cache_dir=None` scores into a temporary directory (nothing kept; single process only).
    """
    if table.n_sentences != len(sources):
        raise ValueError(f"a table of {table.n_sentences} sentences for {len(sources)} sources")
    if cache_dir is None:
        if distributed.get_world_size() > 1:
            raise ValueError("a distributed run needs a cache_dir shared by all ranks")
        with tempfile.TemporaryDirectory(prefix="nbest-scores-") as tmp:
            return score_table(table, sources, bundles, cfg, tmp, progress, on_chunk=on_chunk)
    if not bundles:
        raise ValueError("score_table needs at least one model")
    t_start = time.perf_counter()
    cache = Path(cache_dir)
    rank, world = distributed.get_rank(), distributed.get_world_size()
    scan = _scan(table, sources, cfg)
    t_scan = time.perf_counter()

    chunks = _chunk_ids(len(sources), cfg.chunk_sentences)
    chunk_hyps = [int(scan.counts[r.start : r.stop].sum()) for r in chunks]
    mkeys = [model_key(b) for b in bundles]
    keys = [[_file_key(mk, ch, scan, cfg) for ch in scan.chunk_hashes] for mk in mkeys]
    paths = [
        [(_chunk_path(cache, mk, key), key) for key in ks]
        for mk, ks in zip(mkeys, keys, strict=True)
    ]
    todo: dict[int, list[int]] = {}  # chunk -> models still to score (this rank's share)
    for k in range(rank, len(chunks), world):
        missing = [
            m for m in range(len(bundles)) if _load_chunk(*paths[m][k], chunk_hyps[k]) is None
        ]
        if missing:
            todo[k] = missing

    stats, n_scored_files = _score_missing(
        table, sources, bundles, cfg, scan, paths, todo, progress, on_chunk
    )
    t_score = time.perf_counter()
    distributed.barrier()
    t_barrier = time.perf_counter()
    first_s2t = next((m for m, b in enumerate(bundles) if b.direction == "s2t"), 0)
    assembled = _assemble(paths, chunk_hyps, first_s2t)
    t_end = time.perf_counter()

    times = {
        "wall_s": t_end - t_start,
        "scan_s": t_scan - t_start,
        "score_s": t_score - t_scan,
        "barrier_s": t_barrier - t_score,
        "assemble_s": t_end - t_barrier,
    }
    return _nbest_scores(scan, mkeys, assembled, stats, n_scored_files, len(chunks), times)


def _nbest_scores(
    scan: _Scan,
    mkeys: Sequence[str],
    assembled: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    stats: ScoreStats,
    n_scored_files: int,
    n_chunks: int,
    times: dict[str, float],
) -> NBestScores:
    """The assembled arrays with OOV rates and the timing record."""
    logprob, n_unk, n_tokens, src_tok, src_unk = assembled
    n_models = len(mkeys)
    words = int((n_tokens - 1).sum())
    offsets = np.concatenate(([0], np.cumsum(scan.counts))).astype(np.int64)
    score_s = times["score_s"]
    timing = {
        **times,
        "encode_s": stats.encode_s,
        "decode_s": stats.decode_s,
        "rank": float(distributed.get_rank()),
        "world_size": float(distributed.get_world_size()),
        "chunks": float(n_chunks),
        "chunk_files": float(n_chunks * n_models),
        "chunk_files_scored": float(n_scored_files),
        "hyps_scored": float(stats.n_hyps),
        "hyps_unique_scored": float(stats.n_unique),
        "target_tokens_scored": float(stats.n_target_tokens),
        "softmax_rows": float(stats.n_softmax_rows),
        "hyps_per_s": stats.n_hyps / score_s if stats.n_hyps and score_s > 0 else 0.0,
    }
    return NBestScores(
        logprob=logprob,
        n_tokens=n_tokens,
        n_unk=n_unk,
        offsets=offsets,
        model_sha256=tuple(mkeys),
        tgt_oov_rate=tuple(float(n_unk[:, m].sum()) / max(words, 1) for m in range(n_models)),
        src_oov_rate=tuple(float(src_unk[m]) / max(int(src_tok[m]), 1) for m in range(n_models)),
        escaped=scan.escaped,
        timing=timing,
    )


def bf16_check(
    table: NBestTable,
    sources: Sequence[str],
    bundles: Sequence[ModelBundle],
    cfg: ScoringConfig,
    *,
    n_sentences: int = 10,
    max_hyps: int = 100,
) -> list[float]:
    """Per model, the largest |bf16 - fp32| log-prob on the first `max_hyps` hypotheses of each
    of the first `n_sentences` sentences of `table`."""
    n = min(n_sentences, len(sources), table.n_sentences)
    surfaces, sent = _real_surfaces(table, range(n))
    first = np.searchsorted(sent, sent, side="left")  # each row's sentence's first row
    keep = np.flatnonzero(np.arange(len(sent)) - first < max_hyps).tolist()
    hyps = token_tuples([surfaces[i] for i in keep])
    owner = sent[keep].tolist()
    escaped = resolve_escaped(cfg.escaped, hyps)
    src_escaped = cfg.src_tokenized and resolve_escaped(None, [s.split() for s in sources])
    out = []
    for b in bundles:
        src = source_tokens(
            sources[:n_sentences], b, tokenized=cfg.src_tokenized, escaped=src_escaped
        )
        src_ids = [b.src_vocab.encode(s) for s in src]
        ids = hypothesis_ids(hyps, b, escaped=escaped)
        out.append(bf16_max_difference(b.model, src_ids, ids, owner, cfg))
    return out
