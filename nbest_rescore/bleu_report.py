"""The BLEU section shared by the `oracle` and `run` reports: every system's BLEU with its paired
bootstrap p-value, oracle@k, the ranks chosen and BLEU by source length, with a definition of
every system so that a report read alone says what each row means."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nbest_rescore import oracle as orc
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.frame import Frame
from nbest_rescore.headline import ORACLES, ordered_rows
from nbest_rescore.metrics import (
    BleuConfig,
    HypStats,
    bleu_of_selection,
    hypothesis_text,
    paired_bootstrap,
    sentence_bleu_many,
)
from nbest_rescore.report import Report, plot_bleu_by_length, plot_oracle_at_k, plot_rank_histogram
from nbest_rescore.text import TokenizerConfig, tokenize

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345
AGAINST = "baseline"

DEFINITIONS = {
    "baseline": "the decoder's 1-best (its highest total, the first line of every list)",
    "lstm": "the hypothesis with the highest mean log-probability of the left-to-right "
    "source-to-target LSTM model(s) alone (LSTM0, LSTM1, ...; right-to-left R2L and "
    "target-to-source T2S features enter only weighted systems)",
    "even_average": "the paper's even average of the baseline total and the LSTM log-prob, made "
    "scale-aware: each score divided by its pooled within-list standard deviation, then weighted "
    "equally",
    "even_average_raw": "the literal 0.5 x baseline total + 0.5 x LSTM log-prob",
    "given": "the weights of a weights file: --weights, or without -m the shipped model's "
    "weights.json (summary.json's tuning says how they were found)",
    "tuned": "weights tuned by MERT (Och 2003) on the --tune-* dev list, starting from the even "
    "average",
    "oracle": "the selection with the highest corpus BLEU (greedy hill-climbing on BLEU "
    "statistics): an upper bound for any reranker of this list",
    "oracle_sentence": "per sentence, the hypothesis with the best smoothed sentence BLEU",
    "anti_oracle": "the selection with the lowest corpus BLEU found: a floor",
}


def definition(system: str) -> str:
    """What a system of the report is (`LSTM1` etc.: one model of the ensemble alone)."""
    if system in DEFINITIONS:
        return DEFINITIONS[system]
    return f"the hypothesis with the highest {system} score alone (one model of the ensemble)"


def depth_limited(edges: Sequence[int], depth: int) -> tuple[int, ...]:
    """`edges` below the list depth, then the depth itself: k's and rank bins that exist."""
    depth = max(depth, 1)
    return (*[k for k in edges if k < depth], depth)


def check_parallel(
    name: str, path: str, n_lines: int, n_ids: int, nbest: str | None = None
) -> None:
    """A reference/source must have one line per n-best sentence id (trailing ids may be absent);
    the message names both files, as either may be the wrong one."""
    if n_lines < n_ids:
        listed = "the n-best list" if nbest is None else f"the n-best list {nbest}"
        raise InputError(
            f"has {n_lines} lines but {listed} has sentence ids up to {n_ids - 1}: "
            f"the {name} must have one line per source sentence",
            path,
        )


def source_lengths(lines: Sequence[str], n: int, lang: str = "en") -> np.ndarray:
    """The first `n` source lines' lengths in Moses tokens (for the BLEU-by-length analysis)."""
    cfg = TokenizerConfig(lang=lang)
    return np.asarray([len(tokenize(line, cfg)) for line in lines[:n]], dtype=np.int64)


def read_source_lengths(src: str | None, n: int, lang: str = "en") -> np.ndarray | None:
    """`source_lengths` of the file `src`, which needs a line per sentence (None without one)."""
    if src is None:
        return None
    lines = read_lines(src)
    check_parallel("source", src, len(lines), n)
    return source_lengths(lines, n, lang)


def model_free_selections(hs: HypStats) -> dict[str, np.ndarray]:
    """The systems that need no model: the 1-best, the oracles and the anti-oracle."""
    return {
        "baseline": hs.one_best(),
        "oracle": orc.corpus_oracle(hs),
        "oracle_sentence": orc.sentence_oracle(hs),
        "anti_oracle": orc.anti_oracle(hs),
    }


def significance_test(n_samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
    """How the p-values were computed, for `summary.json` and the report."""
    return {
        "test": "paired bootstrap resampling of sentences (sacrebleu --paired-bs)",
        "against": AGAINST,
        "resamples": n_samples,
        "seed": BOOTSTRAP_SEED,
        "direction": "two-sided: p is the chance of a BLEU difference at least this large, in "
        f"either direction, if the system were no different from the {AGAINST}; the sign of "
        "delta_bleu says which is better",
        "p_floor": 1.0 / (n_samples + 1),
    }


@dataclass
class BleuSection:
    systems: Frame
    significance: dict[str, dict[str, float]]
    oracle_at_k: dict[str, float]
    rank_histogram: Frame
    by_length: Frame | None

    def summary(self) -> dict[str, Any]:
        """The `summary.json` keys of this section."""
        return {
            "systems": {r["system"]: {"bleu": r["bleu"]} for r in self.systems.records()},
            "oracle_at_k": self.oracle_at_k,
            "significance": self.significance,
            "significance_test": significance_test(),
        }


def _system_row(name: str, hs: HypStats, selection: np.ndarray) -> dict[str, Any]:
    sc = bleu_of_selection(hs, selection)
    return {
        "system": name,
        "bleu": float(sc.score),
        "1-gram": sc.precisions[0],
        "2-gram": sc.precisions[1],
        "3-gram": sc.precisions[2],
        "4-gram": sc.precisions[3],
        "bp": sc.bp,
        "hyp_len": sc.sys_len,
        "ref_len": sc.ref_len,
    }


def _rank_histogram(hs: HypStats, selections: dict[str, np.ndarray], depth: int) -> Frame:
    bins = depth_limited(orc.DEFAULT_RANK_BINS, depth)
    hist: dict[str, Any] = {}
    for n, s in selections.items():
        h = orc.rank_histogram(s, bins, missing=hs.missing)
        h.pop(f">{bins[-1]}")  # empty by construction: no list is deeper than `depth`
        hist.setdefault("rank", list(h))
        hist[n] = list(h.values())
    return Frame(hist)


def _by_length(hs: HypStats, selections: dict[str, np.ndarray], src_len: np.ndarray) -> Frame:
    cols: dict[str, Any] = {}
    for n, s in selections.items():
        rows = orc.bleu_by_length(hs, s, src_len)
        cols.setdefault("length", [r[0] for r in rows])
        cols.setdefault("sentences", [r[1] for r in rows])
        cols[n] = [r[2] for r in rows]
    return Frame(cols)


def bleu_section(
    hs: HypStats, selections: dict[str, np.ndarray], src_len: np.ndarray | None
) -> BleuSection:
    """BLEU of every selection (with p-value and BLEU difference against the baseline), oracle@k up
    to the list depth, rank histogram, and BLEU by source length when lengths are given."""
    rows = [_system_row(n, hs, s) for n, s in selections.items()]
    base_rows = hs.rows(selections[AGAINST])
    base_bleu = next(r["bleu"] for r in rows if r["system"] == AGAINST)
    sig: dict[str, dict[str, float]] = {}
    for r, (n, s) in zip(rows, selections.items(), strict=True):
        r["delta_bleu"] = r["bleu"] - base_bleu
        r["p_value"] = None
        # an oracle chooses with the reference: a bound, whose p-value would mean nothing
        if n != AGAINST and n not in ORACLES:
            p = paired_bootstrap(base_rows, hs.rows(s), BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
            r["p_value"] = p
            sig[n] = {"p_value": p, "delta_bleu": r["delta_bleu"]}
    depth = int(hs.counts.max()) if hs.n_sentences else 1
    ks = depth_limited(orc.DEFAULT_KS, depth)
    at_k = {str(k): float(v) for k, v in orc.oracle_at_k(hs, ks).items()}
    return BleuSection(
        systems=Frame.from_records(rows),
        significance=sig,
        oracle_at_k=at_k,
        rank_histogram=_rank_histogram(hs, selections, depth),
        by_length=None if src_len is None else _by_length(hs, selections, src_len),
    )


def add_bleu_section(
    report: Report,
    section: BleuSection,
    shown: Sequence[str],
    hist_title: str | None = None,
    output: str | None = None,
) -> None:
    """Tables, plots and definitions of the section; `shown` are the systems plotted, `output` the
    run's output system (marked, listed after the baseline, drawn on the oracle@k plot)."""
    shown = list(dict.fromkeys(s for s in shown if s in section.systems["system"]))
    section = replace(
        section, systems=Frame.from_records(ordered_rows(section.systems.records(), output))
    )
    report.summary.update(section.summary())
    test = significance_test()
    report.notes.append(
        f"p_value: {test['test']} against the {AGAINST}, {test['resamples']} resamples (seed "
        f"{test['seed']}), {test['direction']}. The smallest possible value is "
        f"1/{test['resamples'] + 1} = {test['p_floor']:.4f}."
    )
    report.tables["systems"] = section.systems
    report.tables["definitions"] = Frame(
        {
            "system": section.systems["system"],
            "definition": [definition(s) for s in section.systems["system"]],
        }
    )
    at_k = section.oracle_at_k
    report.tables["oracle_at_k"] = Frame({"k": [int(k) for k in at_k], "bleu": list(at_k.values())})
    report.tables["rank_histogram"] = section.rank_histogram
    systems = report.summary["systems"]
    report.figures["oracle_at_k"] = plot_oracle_at_k(
        {int(k): v for k, v in at_k.items()},
        systems[AGAINST]["bleu"],
        None if output is None else (output, systems[output]["bleu"]),
    )
    hist = section.rank_histogram
    report.figures["chosen_ranks"] = plot_rank_histogram(
        hist[["rank", *shown]], hist_title or "Rank of the chosen hypotheses"
    )
    if section.by_length is not None:
        report.tables["bleu_by_length"] = section.by_length
        report.figures["bleu_by_length"] = plot_bleu_by_length(section.by_length, shown)


EXAMPLES = 5
"""Sentences shown each way (rescoring made sentence BLEU better, made it worse)."""


def changed_examples(
    hs: HypStats,
    baseline: np.ndarray,
    chosen: np.ndarray,
    texts: Callable[[np.ndarray], Sequence[str]],
    sources: Sequence[str],
    refs: Sequence[str],
    config: BleuConfig,
    n: int = EXAMPLES,
) -> tuple[Frame, dict[str, int]]:
    """Where the chosen 1-best differs from the baseline's, as compare-mt shows them: the `n`
    sentences whose smoothed sentence BLEU rose most and the `n` where it fell most, with source,
    both hypotheses (detokenized as BLEU sees them) and reference; plus how many sentences
    changed, rose and fell. `texts(selection)` gives every sentence's chosen hypothesis tokens."""
    before = sentence_bleu_many(hs.rows(baseline))
    after = sentence_bleu_many(hs.rows(chosen))
    changed = np.flatnonzero(np.asarray(baseline) != np.asarray(chosen))
    delta = after - before
    order = changed[np.argsort(-delta[changed], kind="stable")]
    better = [int(i) for i in order if delta[i] > 0][:n]
    worse = [int(i) for i in order[::-1] if delta[i] < 0][:n]
    base_text, chosen_text = texts(baseline), texts(chosen)
    rows = [
        {
            "sentence": i,
            "change": "better" if delta[i] > 0 else "worse",
            "source": sources[i],
            "baseline": hypothesis_text(base_text[i].split(), config),
            "chosen": hypothesis_text(chosen_text[i].split(), config),
            "reference": refs[i],
            "baseline sentence BLEU": float(before[i]),
            "chosen sentence BLEU": float(after[i]),
        }
        for i in [*better, *worse]
    ]
    counts = {
        "sentences": len(changed),
        "better": int((delta[changed] > 0).sum()),
        "worse": int((delta[changed] < 0).sum()),
    }
    columns = ["sentence", "change", "source", "baseline", "chosen", "reference",
               "baseline sentence BLEU", "chosen sentence BLEU"]  # fmt: skip
    return Frame.from_records(rows, columns), counts
