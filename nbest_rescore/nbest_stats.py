"""What `rescore stats` says about an n-best list: sizes, missing ids, feature labels, oddities."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from nbest_rescore.fileio import PathLike
from nbest_rescore.nbest_reader import NBestReader


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
    unlabelled_features: bool  # the feature lists carry no labels (named F0, F1, ... here)
    labels_consistent: bool  # every line has the first line's dense label sequence
    first_label_change_line: int | None  # 1-based line where the dense labels first differ
    n_sparse_lines: int  # hypotheses with sparse features
    n_empty_surfaces: int
    n_with_extra_fields: int  # hypotheses with fields after TOTAL (segmentation, alignment)


def nbest_stats(path: PathLike) -> NBestStats:
    """Read an n-best list once (streaming column blocks, no per-line objects) and summarise it."""
    reader = NBestReader(path, n_sentences=None, max_hyps=None, labeled=None)
    counts: list[int] = []  # hypotheses of every id 0..last
    n_distinct = n_sparse = n_empty = n_extra = 0
    cur, distinct = -1, set[str]()
    for block in reader:
        n_sparse += sum(map(bool, block.sparse))
        n_empty += block.surfaces.count("")
        n_extra += sum(map(bool, block.extra))
        for sid, surface in zip(block.sent_ids.tolist(), block.surfaces, strict=True):
            if sid != cur:
                n_distinct += len(distinct)
                counts.extend([0] * (sid - cur))  # ids the file skips, then this one
                cur, distinct = sid, set()
            counts[-1] += 1
            distinct.add(surface)  # a surface is its tokens joined by single spaces
    n_distinct += len(distinct)
    missing = [i for i, n in enumerate(counts) if n == 0]
    n_hyps = sum(counts)
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
        unlabelled_features=reader.labeled is False and n_hyps > 0,
        labels_consistent=reader.first_label_change_line is None,
        first_label_change_line=reader.first_label_change_line,
        n_sparse_lines=n_sparse,
        n_empty_surfaces=n_empty,
        n_with_extra_fields=n_extra,
    )
