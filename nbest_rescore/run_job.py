"""The job behind `rescore run`, in stages that read top to bottom in `run_rescore_job`:

1. read and check every input before any expensive work (`read_list`, `validate.py`): `--out`
   writable, each list read once into an `NBestTable` (finite numbers, one dense layout,
   hypotheses within `--max-len`, errors naming file:line), sources and references parallel to
   it, then the models (the shipped ones, with their tuned weights, when none is given; checked on
   load) and a `--weights` file against the run's feature names; a `-` input is spooled once.
   Every input file is read once, and hashed by that read for the report; only the writer of
   the augmented list (stage 5) reads the n-best list again, for its feature text as written;
2. score each list (`score_list`): the table's hypotheses through the chunk cache
   (`nbest_scorer.score_table`), the LSTM log-probs added to the table as `Baseline0` (the
   decoder's total), one column per model (`LSTM0`, `LSTM1`, ...) and `Length0`;
3. weigh (`weigh`): the baseline, the models alone, the even averages, the `--weights`
   file (`given`) and MERT on the dev list (`tuned`);
4. select: every system's 1-best (`rerank.rerank`, also in `weigh`);
5. write the outputs (`write_run_outputs`): 1-best files, `weights.json`, the augmented n-best list
   the per-hypothesis scores;
6. report (`write_run_report`): the BLEU section shared with `rescore oracle`, weights, models,
   and the warnings (sentences without hypotheses, models that know too few of the list's
   target tokens) that the console shows too.

The paper's "even average" of the baseline and LSTM scores assumes one scale. Moses' total is on
MERT's scale (around -2) while an LSTM log-prob is around -20, so a literal average lets the LSTM
dominate. Our `even_average` therefore divides each score by its pooled within-list standard
deviation before averaging (`rerank.within_list_scale`); the literal average is reported too, as
`even_average_raw`.

Feature names round-trip: `weights.json`, the labels of `nbest.with-lstm.gz` and the report use
the same names (`features.py`), and the numbers the run weighs are rounded as the list writes
them, so `rescore rerank --nbest OUT/nbest.with-lstm.gz --weights OUT/weights.json` reproduces
the run's 1-best exactly. An unlabelled input list gets unlabelled columns appended; weights.json
then also says which column (F<n>) holds each added feature, and `rerank` weighs by that.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import KW_ONLY, asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nbest_rescore import distributed
from nbest_rescore.bleu_report import (
    add_bleu_section,
    bleu_section,
    changed_examples,
    check_parallel,
    model_free_selections,
    source_lengths,
)
from nbest_rescore.checkpoint import ModelBundle, assign_directions, load_model
from nbest_rescore.errors import InputError
from nbest_rescore.features import (
    BASELINE,
    LENGTH,
    MBR,
    check_free_labels,
    ensemble_features,
    model_features,
    model_kind,
)
from nbest_rescore.fileio import atomic_write, read_lines_hashed, spooled_inputs
from nbest_rescore.frame import Frame
from nbest_rescore.mbr import MbrConfig, mbr_feature
from nbest_rescore.memory import release_memory
from nbest_rescore.metrics import BleuConfig, HypStats, compute_hyp_stats, signature
from nbest_rescore.nbest_reader import Feature, NBestGroup, read_nbest
from nbest_rescore.nbest_scorer import NBestScores, bf16_check, score_table
from nbest_rescore.nbest_writer import write_nbest
from nbest_rescore.output_guard import OutDir, check_outputs
from nbest_rescore.outputs import (
    check_out_dir,
    missing_note,
    selection_files,
    write_scores_table,
    write_selection,
)
from nbest_rescore.progress import QUIET, ProgressSettings
from nbest_rescore.quantize import maybe_int8
from nbest_rescore.report import REPORT_FILES, Report, provenance, to_json, write_report
from nbest_rescore.rerank import (
    Weights,
    expand_weights,
    parse_weights,
    rerank,
    weight_vector,
    within_list_scale,
)
from nbest_rescore.scoring import ScoringConfig
from nbest_rescore.shipped import shipped_models
from nbest_rescore.table import TOTAL, NBestTable, as_written, read_table_hashed, spare_view
from nbest_rescore.tune import MertConfig, tune
from nbest_rescore.validate import (
    DEFAULT_MAX_LEN,
    check_source_lengths,
    line_of,
    option_at_least,
)

LSTM = "lstm"
"""The system that ranks by the models' mean log-prob alone."""

LOW_COVERAGE = 0.2
"""Share of unknown target tokens above which a model's coverage of the list is warned about."""


@dataclass(frozen=True)
class RunJob:
    """Settings of `rescore run`. No `models`: the shipped ones, and (without `weights` or a dev
    list) the shipped `weights.json` tuned for them."""

    nbest: str
    src: str
    models: tuple[str, ...]
    out: Path
    _: KW_ONLY
    ref: str | None = None
    weights: str | None = None
    tune_nbest: str | None = None
    tune_src: str | None = None
    tune_ref: str | None = None
    bleu: BleuConfig = BleuConfig()
    scoring: ScoringConfig = ScoringConfig()
    mert: MertConfig = MertConfig()
    max_hyps: int | None = None
    src_lang: str = "en"
    workers: int | None = None
    cache_dir: Path | None = None
    """Score chunk cache (shareable between runs); default OUT/cache."""
    max_len: int = DEFAULT_MAX_LEN
    """Longest hypothesis/source in tokens; a longer one is an error (see `validate.py`)."""
    mbr: MbrConfig | None = None
    """Add the consensus feature `MBR0` (see `mbr.py`); None: not computed."""

    def __post_init__(self) -> None:
        option_at_least("--max-hyps", self.max_hyps, 1)
        option_at_least("--max-len", self.max_len, 1)


@dataclass
class Weighed:
    """Every system's weights and 1-best choices, and how the given/tuned weights came about."""

    sets: dict[str, Weights]
    choices: dict[str, np.ndarray]
    tuning: dict[str, Any]

    @property
    def final(self) -> str:
        """The system whose choices are the run's output: tuned, else given, else even average."""
        return next(s for s in ("tuned", "given", "even_average") if s in self.sets)

    @property
    def final_weights(self) -> Weights:
        return self.sets[self.final]


@dataclass
class ScoredList:
    """One n-best list as a table with the model features, its source lines, and with a reference
    its BLEU stats."""

    table: NBestTable
    scores: NBestScores
    sources: list[str]
    sha256: dict[str, str]
    """The hashes of the list's files as read, by option (`nbest`, `src`, `ref`)."""
    stats: HypStats | None = None
    refs: list[str] | None = None


def free_features(mbr: MbrConfig | None) -> list[str]:
    """The model-free features the run adds after the models': `Length0`, and `MBR0` with --mbr."""
    return [LENGTH] + ([MBR] if mbr is not None else [])


# --------------------------------------------------------------------- 1. read: models and inputs


def resolve_job(job: RunJob) -> RunJob:
    """Check options that go together; fill in the shipped models (and their weights)."""
    if job.tune_nbest is not None and (job.tune_src is None or job.tune_ref is None):
        raise InputError("--tune-nbest needs --tune-src and --tune-ref")
    if job.models:
        return job
    shipped = shipped_models()
    weights, mbr = job.weights, job.mbr
    if weights is None and job.tune_nbest is None and shipped.weights is not None:
        weights = str(shipped.weights)
        mbr = mbr or shipped_mbr(shipped.weights)
    models = tuple(str(p) for p in shipped.run_models)
    return replace(job, models=models, weights=weights, mbr=mbr)


def shipped_mbr(path: Path) -> MbrConfig | None:
    """The MBR0 settings the shipped weights were tuned with (None: they weigh no MBR0)."""
    import json

    record = json.loads(path.read_text(encoding="utf-8")).get("tuning") or {}
    return MbrConfig(**record["mbr"]) if record.get("mbr") else None


# ------------------------------------------------------------------------------------ 2. score


def add_model_features(
    table: NBestTable, scores: NBestScores, names: Sequence[str], mbr: MbrConfig | None = None
) -> NBestTable:
    """`Baseline0` (the decoder's total, in its column), the list's features, one log-prob
    column per model, `Length0` (words) and with `mbr` `MBR0` (from the decoder's total), all
    rounded as the augmented list writes them. The table is consumed: its spare columns
    (`read_list`) take the new ones, without a copy."""
    real = table.real
    if not np.array_equal(np.diff(scores.offsets), table.counts - table.missing):
        raise InputError("n-best list changed while it was being scored")
    k = len(table.names)
    free = free_features(mbr)
    width = k + len(names) + len(free)
    values = spare_view(table.values, width)
    if values is None:
        values = np.empty((len(table.values), width), dtype=np.float64)
        for j in range(k):  # column by column: no second copy of the whole table
            values[:, j] = table.values[:, j]
    total = table.names.index(TOTAL)
    values[:, total] = as_written(values[:, total])
    for m in range(len(names)):
        logprob = np.zeros(len(table.values))
        logprob[real] = scores.logprob[:, m]
        values[:, k + m] = as_written(logprob)
    values[:, k + len(names)] = table.surfaces.n_tokens()
    if mbr is not None:
        values[:, -1] = as_written(mbr_feature(table, values[:, total], mbr))
    return NBestTable(
        (*(BASELINE if n == TOTAL else n for n in table.names), *names, *free),
        values,
        table.offsets,
        table.missing,
        table.surfaces,
        table.labeled,
    )


@dataclass
class ListInput:
    """One n-best list with its source (and reference) lines, read and checked, not scored."""

    table: NBestTable | None
    """Handed over to the scored list by `take_table` (None after)."""
    sources: list[str]
    refs: list[str] | None
    sha256: dict[str, str]
    """The hashes of the files as read (each file is read once), by option."""

    def take_table(self) -> NBestTable:
        """The table, no longer held here: the scored list's table replaces it, and the old one's
        memory goes as soon as the new one is built."""
        table, self.table = self.table, None
        if table is None:
            raise RuntimeError("this list's table was already taken")
        return table


def read_list(nbest: str, src: str, ref: str | None, job: RunJob) -> ListInput:
    """Stage 1, before any scoring: read and validate a list, its source and its reference
    (`table.read_table`, `validate.py`), each file once; a mismatch blames the file that is short."""
    sha256: dict[str, str] = {}
    sources, sha256["src"] = read_lines_hashed(src)
    check_source_lengths(sources, job.max_len, src)
    # Room for the model features and the free ones: scoring adds them without copying the table.
    spare = len(job.models) + len(free_features(job.mbr))
    table, sha256["nbest"] = read_table_hashed(
        nbest, max_hyps=job.max_hyps, max_len=job.max_len, spare_columns=spare
    )
    check_free_labels(table.names, TOTAL, nbest)
    check_parallel("source", src, len(sources), table.n_sentences, nbest)
    table = table.padded(len(sources))
    refs = None
    if ref is not None:
        refs, sha256["ref"] = read_lines_hashed(ref)
        if len(refs) != len(sources):
            raise InputError(f"has {len(refs)} lines but the source {src} has {len(sources)}", ref)
    return ListInput(table, sources, refs, sha256)


def score_list(
    inp: ListInput,
    bundles: Sequence[ModelBundle],
    names: Sequence[str],
    job: RunJob,
    progress: ProgressSettings,
) -> ScoredList | None:
    """Stage 2: score a list read by `read_list` (sharded under torchrun), add the model
    features to its table, compute its BLEU statistics; None on non-main ranks."""
    cache_dir = job.cache_dir or job.out / "cache"
    assert inp.table is not None  # taken only here
    scores = score_table(inp.table, inp.sources, bundles, job.scoring, cache_dir, progress)
    release_memory()  # the scorer's freed buffers, before the list-sized arrays below
    if not distributed.is_main():
        return None
    table = add_model_features(inp.take_table(), scores, names, job.mbr)
    stats = None
    if inp.refs is not None:
        stats = compute_hyp_stats(
            table.sentences(), inp.refs, job.bleu, progress_settings=progress, workers=job.workers
        )
    return ScoredList(table, scores, inp.sources, inp.sha256, stats, inp.refs)


def coverage_warnings(scores: NBestScores, names: Sequence[str]) -> list[str]:
    """A warning per model whose target vocabulary misses more than `LOW_COVERAGE` of the
    list's tokens (a model for another language pair, or a cut vocabulary, scores noise)."""
    return [
        f"model {n}: {rate:.0%} of the n-best list's target tokens are outside its vocabulary "
        f"(more than {LOW_COVERAGE:.0%}); its scores say little about these hypotheses"
        for n, rate in zip(names, scores.tgt_oov_rate, strict=True)
        if rate > LOW_COVERAGE
    ]


# ---------------------------------------------------------------------------- 3. weigh, 4. select


def even_average(table: NBestTable, names: Sequence[str]) -> Weights:
    """Scale-aware even average of `Baseline0` and the left-to-right models' mean log-prob (the
    paper's ensemble; other model kinds get weight 0): each divided by its within-list spread,
    weighted 1/2; the mean's weight is spread over the model columns."""
    names = ensemble_features(names)
    mean = table.values[:, [table.names.index(n) for n in names]].mean(axis=1)
    w_mean = 0.5 / within_list_scale(mean, table.offsets)
    weights = {BASELINE: 0.5 / within_list_scale(table.column(BASELINE), table.offsets)}
    weights.update({n: w_mean / len(names) for n in names})
    return weights


def tune_weights(
    dev: ScoredList, names: Sequence[str], cfg: MertConfig, free: Sequence[str] = (LENGTH,)
) -> tuple[Weights, dict]:
    """MERT on the dev list over `Baseline0`, each model and the `free` features (`Length0`,
    `MBR0`), from the even average; returns the weights and the record of the tuning."""
    assert dev.stats is not None
    table = dev.table.select([BASELINE, *names, *free])
    result = tune(table, dev.stats.stats, even_average(dev.table, names), cfg)
    return result.weights, {
        "dev_bleu": result.dev_bleu,
        "dev_bleu_even_average": result.start_bleu,
        "mert": asdict(cfg),
    }


def weight_sets(table: NBestTable, names: Sequence[str]) -> dict[str, Weights]:
    """The systems every run reports: the baseline, the models alone and the two even averages."""
    ens = ensemble_features(names)
    sets: dict[str, Weights] = {
        "baseline": {BASELINE: 1.0},
        LSTM: {n: 1.0 / len(ens) for n in ens},
        "even_average": even_average(table, names),
        "even_average_raw": {BASELINE: 0.5, **{n: 0.5 / len(ens) for n in ens}},
    }
    if len(names) > 1:
        sets.update({n: {n: 1.0} for n in names})
    return sets


def given_weights(
    path: str, names: Sequence[str], mbr: MbrConfig | None = None
) -> tuple[Weights, dict[str, Any]]:
    """A `--weights` file over the features `names` (read once), and its tuning record if it
    has one; a file tuned with MBR0 needs the run's `mbr` settings to be the same."""
    import json

    lines, sha256 = read_lines_hashed(path)
    record: dict[str, Any] = {"weights_file": {"name": Path(path).name, "sha256": sha256}}
    text = "\n".join(lines).strip()
    if text.startswith("{"):
        record.update(json.loads(text).get("tuning") or {})
    check_given_mbr(record, mbr, path)
    return expand_weights(parse_weights(lines, path), names, path), record


def check_given_mbr(record: dict[str, Any], mbr: MbrConfig | None, path: str) -> None:
    """A weights file tuned with MBR0 weighs it as computed then: the run needs the same settings."""
    tuned = record.get("mbr")
    if tuned and (mbr is None or asdict(mbr) != tuned):
        opts = f"--mbr --mbr-top-k {tuned['top_k']} --mbr-scale {tuned['scale']}"
        raise InputError(f"these weights were tuned with the MBR0 feature as `{opts}` computes it; "
                         "run with those options", path)  # fmt: skip


def weigh(
    job: RunJob,
    test: ScoredList,
    dev: ScoredList | None,
    names: Sequence[str],
    given: tuple[Weights, dict[str, Any]] | None,
) -> Weighed:
    """Stages 3 and 4: every system's weights (with the record of how the `given` (`--weights`)
    and tuned ones came about), and every system's 1-best."""
    sets = weight_sets(test.table, names)
    tuning: dict[str, Any] = {}
    if given is not None:
        sets["given"], tuning = given
    if dev is not None and job.tune_nbest is not None:
        sets["tuned"], tuning = tune_weights(dev, names, job.mert, free_features(job.mbr))
        tuning["tune_nbest"] = {"name": Path(job.tune_nbest).name, "sha256": dev.sha256["nbest"]}
        if job.mbr is not None:
            tuning["mbr"] = asdict(job.mbr)
    choices = {name: rerank(test.table, w) for name, w in sets.items()}
    return Weighed(sets, choices, tuning)


# ------------------------------------------------------------------------------------ 5. write


def write_augmented(
    nbest: str,
    out: Path,
    table: NBestTable,
    added: Sequence[str],
    weights: Weights,
    max_hyps: int | None,
) -> None:
    """The input list with the run's features appended (`LSTM0= ... Length0= ... Baseline0= ...`)
    and its 4th field replaced by the run's total under the final weights. Works one list at a
    time on its block of table rows: nothing per hypothesis beyond the table is held."""
    w = weight_vector(weights, table.names)
    idx = [table.names.index(n) for n in added]
    counts = table.counts
    feats: deque[list[Feature]] = deque()  # one group's, handed to the writer line by line

    def groups() -> Any:
        for g in read_nbest(nbest, n_sentences=table.n_sentences, max_hyps=max_hyps):
            n = len(g.hyps)
            if bool(table.missing[g.sent_id]) != (n == 0) or (n and int(counts[g.sent_id]) != n):
                raise InputError(
                    f"sentence {g.sent_id}: n-best list changed while it was being rescored",
                    nbest,
                    line_of(nbest, g.sent_id, 0),
                )
            if n == 0:
                yield g
                continue
            lo = int(table.offsets[g.sent_id])
            block = table.values[lo : lo + n]
            hyps = []
            for h, t, row in zip(g.hyps, (block @ w).tolist(), block[:, idx].tolist(), strict=True):
                feats.append([Feature(n, (v,)) for n, v in zip(added, row, strict=True)])
                hyps.append(replace(h, total=t))
            yield NBestGroup(g.sent_id, tuple(hyps))

    write_nbest(out, groups(), lambda _h: feats.popleft())


def write_weights(
    path: Path,
    system: str,
    weights: Weights,
    tuning: dict[str, Any],
    columns: dict[str, str] | None = None,
) -> None:
    """`weights.json`: the final system's weights by feature name (reusable with `--weights` in
    `run`, or in `rerank` on the augmented list) and how they were obtained; `columns` (for an
    unlabelled list) names the augmented list's column of each added feature."""
    record: dict[str, Any] = {"system": system, "weights": weights, "tuning": tuning}
    if columns:
        record["columns"] = columns
    with atomic_write(path) as fh:
        fh.write(to_json(record))


def unlabelled_columns(table: NBestTable, added: Sequence[str]) -> dict[str, str] | None:
    """Where the features `added` land in the augmented list of an unlabelled input (F<n> after
    the input's own columns), for `rerank` to apply weights.json by; None for a labelled list."""
    if table.labeled:
        return None
    first = len(table.names) - len(added)
    return {name: f"F{first + i}" for i, name in enumerate(added)}


def write_run_outputs(job: RunJob, test: ScoredList, w: Weighed, names: Sequence[str]) -> list[str]:
    """Stage 5: the final system's 1-best and weights, the augmented list, the scores table;
    returns the notes the report gives about them."""
    final = w.final
    table = test.table
    write_selection(job.out, "best", table.chosen_surfaces(w.choices[final]), job.bleu)
    added = [*names, *free_features(job.mbr), BASELINE]
    columns = unlabelled_columns(table, added)
    write_weights(job.out / "weights.json", final, w.final_weights, w.tuning, columns)
    augmented = job.out / "nbest.with-lstm.gz"
    write_augmented(job.nbest, augmented, table, added, w.final_weights, job.max_hyps)
    release_memory()  # the parser's freed buffers, before the scores table's
    n_unk = {f"n_unk.{n}": test.scores.n_unk[:, i] for i, n in enumerate(names)}
    scores_path = write_scores_table(job.out / "scores", table, w.choices, n_unk)
    return [
        f"{table.n_sentences} sentences, {table.n_hypotheses} hypotheses, {len(names)} "
        f"model(s) ({', '.join(names)}); best.*.txt hold the '{final}' system's choices; "
        f"weights.json holds its weights.",
        f"{augmented.name}: the input list with {', '.join(f'{n}=' for n in added)} appended "
        f"and its total replaced by the '{final}' system's score.",
        f"per-hypothesis scores: {scores_path.name}",
    ]


# ------------------------------------------------------------------------------------ 6. report


def model_info(bundles: Sequence[ModelBundle], names: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "feature": n,
            "kind": b.kind,
            "path": b.path,
            "sha256": b.sha256,
            "config": b.config.to_dict(),
        }
        for n, b in zip(names, bundles, strict=True)
    ]


def input_hashes(
    test: ScoredList, dev: ScoredList | None, given: tuple[Weights, dict[str, Any]] | None
) -> dict[str, str]:
    """The SHA-256 of every input file by option, as taken when it was read (the report's
    provenance reads no file again)."""
    sha256 = dict(test.sha256)
    if dev is not None:
        sha256.update({f"tune_{k}": v for k, v in dev.sha256.items()})
    if given is not None:
        sha256["weights"] = given[1]["weights_file"]["sha256"]
    return sha256


def write_run_report(
    job: RunJob,
    test: ScoredList,
    w: Weighed,
    summary: dict[str, Any],
    notes: list[str],
    sha256: dict[str, str],
) -> None:
    """Stage 6: report.md/html, summary.json, tables and plots of the run; `sha256`: the input
    files' hashes (`input_hashes`)."""
    report = Report(
        title=f"Rescoring {job.nbest} with {len(summary['models'])} LSTM model(s)",
        summary=summary,
        provenance=provenance(
            {
                "nbest": job.nbest,
                "src": job.src,
                "ref": job.ref,
                "tune_nbest": job.tune_nbest,
                "tune_src": job.tune_src,
                "tune_ref": job.tune_ref,
                "weights": job.weights,
            },
            sha256=sha256,
            models=summary["models"],
            signature=signature(job.bleu),
            scoring=asdict(job.scoring),
            max_hyps=job.max_hyps,
        ),
        notes=notes,
    )
    features = list(dict.fromkeys(n for ws in w.sets.values() for n in ws))
    report.tables["weights"] = Frame.from_records(
        [{"system": s, **{n: ws.get(n, 0.0) for n in features}} for s, ws in w.sets.items()]
    )
    if test.stats is not None:
        selections = {
            **w.choices,
            **{n: s for n, s in model_free_selections(test.stats).items() if n != "baseline"},
        }
        src_len = source_lengths(test.sources, test.table.n_sentences, job.src_lang)
        section = bleu_section(test.stats, selections, src_len)
        add_bleu_section(report, section, ["baseline", w.final, LSTM, "oracle"], output=w.final)
        if test.refs is not None:
            examples, changed = changed_examples(
                test.stats,
                w.choices["baseline"],
                w.choices[w.final],
                test.table.chosen_surfaces,
                test.sources,
                test.refs,
                job.bleu,
            )
            report.tables["examples"] = examples
            summary["changed_vs_baseline"] = changed
    write_report(report, job.out)


RUN_FILES = (*REPORT_FILES, *selection_files("best"), "weights.json", "nbest.with-lstm.gz",
             "scores.parquet", "scores.csv")  # fmt: skip
"""What a run writes into `--out` (glob patterns), besides the score cache."""

CACHE_FILES = ("*/*.npz",)
"""The score cache's chunk files, relative to its directory (`nbest_scorer._chunk_path`)."""


def run_out_dirs(job: RunJob) -> list[OutDir]:
    """The directories a run writes into, with what it writes there."""
    if job.cache_dir is None:
        return [OutDir("--out", job.out, (*RUN_FILES, *(f"cache/{f}" for f in CACHE_FILES)))]
    return [OutDir("--out", job.out, RUN_FILES), OutDir("--cache-dir", job.cache_dir, CACHE_FILES)]


def run_rescore_job(job: RunJob, progress: ProgressSettings = QUIET) -> dict[str, Any] | None:
    """Run the whole job and write `--out`; returns `summary.json`'s content (None off rank 0).
    One input may be `-` (stdin, spooled to a temp file: the augmented list re-reads the list)."""
    job = resolve_job(job)
    inputs = {"nbest": job.nbest, "src": job.src, "ref": job.ref, "weights": job.weights}
    inputs.update(tune_nbest=job.tune_nbest, tune_src=job.tune_src, tune_ref=job.tune_ref)
    check_outputs(
        {**{f"--{k.replace('_', '-')}": v for k, v in inputs.items()}, "--model": job.models},
        dirs=run_out_dirs(job),
    )
    check_out_dir(job.out)  # before any scoring
    if job.cache_dir is not None:
        check_out_dir(job.cache_dir, "--cache-dir")
    with spooled_inputs(**inputs) as p:
        return _run(replace(job, **p), progress)  # type: ignore[arg-type]


class _Stages:
    """Wall time and peak RSS at the end of each stage, for summary.json (`timing`)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.record: dict[str, dict[str, float]] = {}

    def done(self, name: str) -> None:
        release_memory()
        now = time.perf_counter()
        self.record[name] = {"seconds": round(now - self.t, 3), "peak_rss_mib": peak_rss_mib()}
        self.t = now


def _run(job: RunJob, progress: ProgressSettings) -> dict[str, Any] | None:
    stages = _Stages()
    # Every input is read and checked before the models score anything.
    dev_in = None
    if job.tune_nbest is not None and job.tune_src is not None:
        dev_in = read_list(job.tune_nbest, job.tune_src, job.tune_ref, job)
    test_in = read_list(job.nbest, job.src, job.ref, job)
    stages.done("read")
    # The first model's source language is the list's: models that read the other side score
    # p(source | hypothesis).
    loaded = maybe_int8(
        [load_model(m, device=job.scoring.device) for m in job.models], job.scoring.int8
    )
    bundles = assign_directions(loaded, None)
    names = model_features([model_kind(b) for b in bundles])
    given = None
    if job.weights is not None:
        assert test_in.table is not None  # taken only when scored
        others = [n for n in test_in.table.names if n != TOTAL]
        given = given_weights(
            job.weights, [*others, BASELINE, *names, *free_features(job.mbr)], job.mbr
        )
    stages.done("load_models")

    dev = None if dev_in is None else score_list(dev_in, bundles, names, job, progress)
    del dev_in
    test = score_list(test_in, bundles, names, job, progress)
    stages.done("score")
    if test is None:
        return None

    weighed = weigh(job, test, dev, names, given)
    if "tuned" in weighed.sets:  # the models the weights are for: the shipped set reads this
        weighed.tuning["models"] = [
            {"feature": n, "name": Path(b.path).name, "sha256": b.sha256}
            for n, b in zip(names, bundles, strict=True)
        ]
    sha256 = input_hashes(test, dev, given)
    del dev
    stages.done("weigh")
    notes = write_run_outputs(job, test, weighed, names)
    stages.done("write")
    warnings = [w for w in [missing_note(test.table.missing)] if w] + coverage_warnings(
        test.scores, names
    )
    notes.extend(warnings)

    summary: dict[str, Any] = {
        "n_sentences": test.table.n_sentences,
        "n_hypotheses": test.table.n_hypotheses,
        "n_missing": int(test.table.missing.sum()),
        "signature": signature(job.bleu),
        "final_system": weighed.final,
        "features": [*names, *free_features(job.mbr), BASELINE],
        "weights": weighed.sets,
        "tuning": weighed.tuning,
        "models": model_info(bundles, names),
        "scoring": scoring_info(test.scores, job.scoring),
        "warnings": warnings,
        "systems": {},
        "timing": stages.record,
    }
    if job.scoring.bf16:
        summary["scoring"]["bf16_max_abs_diff_vs_fp32"] = bf16_check(
            test.table, test.sources, bundles, job.scoring
        )
    write_run_report(job, test, weighed, summary, notes, sha256)
    return summary


def peak_rss_mib() -> float:
    """This process' peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)


def scoring_info(scores: NBestScores, cfg: ScoringConfig) -> dict[str, Any]:
    """What the report says about scoring: settings, OOV rates, escaping, timings."""
    return {
        "config": asdict(cfg),
        "numeric_key": cfg.numeric_key(),
        "model_sha256": list(scores.model_sha256),
        "tgt_oov_rate": list(scores.tgt_oov_rate),
        "src_oov_rate": list(scores.src_oov_rate),
        "nbest_escaped": scores.escaped,
        "timing": scores.timing,
    }
