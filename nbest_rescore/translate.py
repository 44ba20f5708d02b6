"""The library behind `rescore translate`: raw lines in, translations (text, tokens or n-best) out.

Lines are read lazily in windows, sorted by length within a window so batches hold similar
lengths, searched in batches, and yielded in input order as soon as the in-order prefix is done.
Each model tokenises the source with its own saved settings and vocabulary. N-best lines are
`ID ||| tokens ||| LSTM0= <model 1> LSTM1= <model 2> ... ||| <ensemble score>` (the feature names
of `rescore run`, see `features.py`), scores being summed log-probs including EOS. UNK copying pairs the i-th output UNK with the i-th source OOV token
(no attention means no alignment to follow).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from itertools import islice
from typing import IO, TYPE_CHECKING, Literal

import torch

from nbest_rescore.checkpoint import ModelBundle, assign_directions, load_model
from nbest_rescore.ensemble import Ensemble, EnsembleConfig, SourceIds
from nbest_rescore.errors import InputError
from nbest_rescore.features import model_features, model_kind
from nbest_rescore.fileio import PathLike, atomic_write, iter_text_lines, read_lines
from nbest_rescore.memory import reuse_freed_memory
from nbest_rescore.model import target_order
from nbest_rescore.output_guard import check_outputs
from nbest_rescore.progress import QUIET, ProgressSettings, bar
from nbest_rescore.quantize import check_int8_device, maybe_int8
from nbest_rescore.scoring import ScoringConfig, source_tokens
from nbest_rescore.search import BeamHypothesis, SearchConfig, search_batch
from nbest_rescore.shipped import shipped_models
from nbest_rescore.text import TokenizerConfig, detokenize, looks_escaped
from nbest_rescore.vocab import UNK

if TYPE_CHECKING:  # pandas, pyarrow and sacrebleu load only for n-best output or BLEU
    from nbest_rescore.nbest_reader import Hypothesis
    from nbest_rescore.translate_rerank import Reranker

OutputMode = Literal["text", "tokens", "nbest"]
OUTPUT_MODES: tuple[str, ...] = ("text", "tokens", "nbest")


@dataclass(frozen=True)
class TranslateConfig:
    """Everything `translate_lines` needs besides the models.

    `src_tokenized`: input lines are already tokenized (split on spaces, mapped to each model's
    escaping/casing) instead of raw text. `copy_unk`: replace output UNKs by source OOV tokens
    (see `copy_unknowns`). `window`: lines read ahead and sorted by length (at least one batch).
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    _: KW_ONLY
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    src_tokenized: bool = False
    copy_unk: bool = False
    window: int = 512


@dataclass(frozen=True)
class Translation:
    """One output hypothesis: target tokens (after UNK copying), ids and scores (see BeamHypothesis)."""

    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    score: float
    model_scores: tuple[float, ...]


@dataclass(frozen=True)
class TranslationResult:
    """The translations of one input line (0-based `index`), best first; `tgt_tok` detokenizes
    the 1-best into `text`."""

    index: int
    source: str
    src_tokens: tuple[str, ...]
    hypotheses: tuple[Translation, ...]
    tgt_tok: TokenizerConfig

    @property
    def best(self) -> Translation | None:
        return self.hypotheses[0] if self.hypotheses else None

    @functools.cached_property
    def text(self) -> str:
        """The detokenized 1-best ("" without one); computed on first use, so output that is
        written as tokens never loads the detokenizer."""
        best = self.best
        return detokenize(list(best.tokens), self.tgt_tok) if best else ""


def load_ensemble(
    paths: Sequence[PathLike],
    config: EnsembleConfig | None = None,
    device: str | torch.device = "cpu",
) -> Ensemble:
    """Load checkpoints onto `device` and check they can decode together."""
    return Ensemble([load_model(p, device=device) for p in paths], config)


def copy_unknowns(tokens: Sequence[str], ids: Sequence[int], src_oov: Sequence[str]) -> list[str]:
    """Replace the i-th output UNK by the i-th source OOV token (in source order).

    The model has no attention, so there is no alignment to follow: this order heuristic is right
    for monotone copies (names, numbers). Surplus UNKs stay as the UNK token.
    """
    out = list(tokens)
    oov = iter(src_oov)
    for i, tid in enumerate(ids):
        if tid == UNK:
            out[i] = next(oov, out[i])
    return out


@dataclass(frozen=True)
class _Prepared:
    index: int
    source: str
    tokens: tuple[str, ...]
    ids: SourceIds
    oov: tuple[str, ...]


def _prepare(ens: Ensemble, index: int, line: str, cfg: TranslateConfig) -> _Prepared:
    line = line.rstrip("\n").rstrip("\r")
    by_tok: dict[TokenizerConfig, list[str]] = {}
    ids: list[list[int]] = []
    for b in ens.bundles:
        if b.src_tok not in by_tok:
            escaped = cfg.src_tokenized and looks_escaped(line.split())
            by_tok[b.src_tok] = source_tokens(
                [line], b, tokenized=cfg.src_tokenized, escaped=escaped
            )[0]
        ids.append(b.src_vocab.encode(by_tok[b.src_tok]))
    first = ens.bundles[0]
    toks = by_tok[first.src_tok]
    oov = tuple(t for t, i in zip(toks, ids[0], strict=True) if i == UNK)
    return _Prepared(index, line, tuple(toks), tuple(ids), oov)


def _result(
    ens: Ensemble, p: _Prepared, hyps: list[BeamHypothesis], copy_unk: bool
) -> TranslationResult:
    itos = ens.tgt_vocab.itos
    out: list[Translation] = []
    for h in hyps:
        ids = target_order(h.tokens, ens.bundles[0].config)
        toks = [itos[i] for i in ids]
        if copy_unk:
            toks = copy_unknowns(toks, ids, p.oov)
        out.append(Translation(tuple(toks), ids, h.score, h.model_scores))
    return TranslationResult(p.index, p.source, p.tokens, tuple(out), ens.tgt_tok)


def translate_lines(
    models: Ensemble | Sequence[ModelBundle],
    lines: Iterable[str],
    cfg: TranslateConfig | None = None,
    progress: ProgressSettings = QUIET,
    *,
    total: int | None = None,
) -> Iterator[TranslationResult]:
    """Translate `lines` lazily; results come in input order, each as soon as its prefix is done.

    `models` is a ready `Ensemble` or checkpoints to combine with `cfg.ensemble`; `total` (the
    number of lines, when known) sizes the progress bar.
    """
    cfg = cfg or TranslateConfig()
    ens = models if isinstance(models, Ensemble) else Ensemble(models, cfg.ensemble)
    bs = cfg.search.batch_size
    window = max(cfg.window, bs)
    numbered = enumerate(lines)
    pending: dict[int, TranslationResult] = {}
    next_out = 0
    with bar(progress, desc="translate", total=total, unit="sent") as pbar:
        while chunk := list(islice(numbered, window)):
            prepared = [_prepare(ens, i, line, cfg) for i, line in chunk]
            order = sorted(prepared, key=lambda p: len(p.tokens))
            for start in range(0, len(order), bs):
                batch = order[start : start + bs]
                hyps = search_batch(ens, [p.ids for p in batch], cfg.search)
                for p, h in zip(batch, hyps, strict=True):
                    pending[p.index] = _result(ens, p, h, cfg.copy_unk)
                while next_out in pending:
                    yield pending.pop(next_out)
                    next_out += 1
                    pbar.update(1)


def nbest_hypothesis(index: int, hyp: Translation) -> Hypothesis:
    """One translation as an n-best line: a feature per model (`LSTM0`, `LSTM1`, ...), the
    ensemble score as the total."""
    from nbest_rescore.nbest_reader import Feature, Hypothesis

    names = model_features(["lstm"] * len(hyp.model_scores))
    feats = tuple(Feature(n, (s,)) for n, s in zip(names, hyp.model_scores, strict=True))
    return Hypothesis(index, hyp.tokens, feats, (), hyp.score)


def format_output(result: TranslationResult, mode: OutputMode = "text") -> str:
    """The output text of one result, newline-terminated: detokenized 1-best, tokens, or n-best lines."""
    if mode == "text":
        return result.text + "\n"
    if mode == "tokens":
        best = result.best
        return (" ".join(best.tokens) if best else "") + "\n"
    if mode == "nbest":
        from nbest_rescore.nbest_writer import format_hypothesis

        return "".join(
            format_hypothesis(nbest_hypothesis(result.index, h)) + "\n" for h in result.hypotheses
        )
    raise InputError(f"unknown output mode {mode!r}; choose from {OUTPUT_MODES}")


def write_outputs(
    results: Iterable[TranslationResult],
    out: IO[str],
    mode: OutputMode = "text",
    *,
    keep_text: bool = True,
) -> list[str]:
    """Stream formatted results to `out`; returns the detokenized 1-best lines (for `--ref`
    BLEU), or nothing with `keep_text=False` (tokens written, no detokenizer loaded)."""
    best: list[str] = []
    for r in results:
        out.write(format_output(r, mode))
        if keep_text:
            best.append(r.text)
    return best


def shipped_translation_models(device: str | torch.device = "cpu") -> list[ModelBundle]:
    """The shipped models that translate: the left-to-right source-to-target ones (the shipped
    right-to-left and target-to-source models are rescoring features only)."""
    bundles = assign_directions([load_model(p, device) for p in shipped_models().models], None)
    return [b for b in bundles if model_kind(b) == "lstm"]


@dataclass(frozen=True, kw_only=True)
class TranslateJob:
    """Settings of `rescore translate`; no `models`: the shipped ones."""

    models: tuple[str, ...] = ()
    config: TranslateConfig = field(default_factory=TranslateConfig)
    input: str = "-"
    output: str = "-"
    mode: OutputMode = "text"
    ref: str | None = None
    tokenize: str = "13a"
    """BLEU tokenisation against `ref` (see `metrics.BleuConfig`)."""
    device: str = "cpu"
    int8: bool = False
    """Dynamic int8 quantization of the models (CPU only, see `quantize`)."""
    rerank: bool | None = None
    """Rerank the beam's n-best list (all `config.search.beam` hypotheses; `translate_rerank.py`).
    None: rerank when translating with the shipped models and their shipped `rerank.json`."""
    rerank_models: tuple[str, ...] = ()
    """The reranking models (default with no `models`: the shipped right-to-left and
    target-to-source ones)."""
    rerank_weights: str | None = None
    """The reranking weights (default with shipped models: the shipped `rerank.json`); with
    `tune_src` the file the tuned weights are written to."""
    tune_src: str | None = None
    tune_ref: str | None = None

    def __post_init__(self) -> None:
        if self.int8:
            check_int8_device(self.device)
        reranking = (self.rerank_models, self.rerank_weights, self.tune_src, self.tune_ref)
        if not self.rerank and any(reranking):
            raise InputError(
                "--rerank-model, --rerank-weights, --tune-src and --tune-ref need --rerank"
            )
        if self.rerank is True and self.mode == "nbest":
            raise InputError("--rerank writes the reranked 1-best: it does not go with --nbest")
        if (self.tune_src is None) != (self.tune_ref is None):
            raise InputError("--tune-src and --tune-ref go together")
        if self.tune_src is not None and self.rerank_weights is None:
            raise InputError("--tune-src needs --rerank-weights FILE: where the tuned weights go")


def run_translate_job(job: TranslateJob, progress: ProgressSettings = QUIET) -> str | None:
    """Translate `input` into `output` (`-`: stdin/stdout); returns a BLEU line with `ref`.

    With `ref`, the input is read whole first and its line count checked against the reference
    before any model is loaded: an error writes nothing. The job owns its process: the search's
    step-sized buffers are kept for reuse (`memory.reuse_freed_memory`)."""
    job = resolve_rerank(job)
    models = job.models or tuple(str(m) for m in shipped_models().models)
    outputs: dict[str, str | None] = {"--output": job.output}
    if job.tune_src is not None:
        outputs["--rerank-weights"] = job.rerank_weights
    check_outputs(
        {"--input": job.input, "--ref": job.ref, "--model": models,
         "--rerank-model": job.rerank_models, "--tune-src": job.tune_src,
         "--tune-ref": job.tune_ref},
        outputs,
    )  # fmt: skip
    refs = read_lines(job.ref) if job.ref is not None else None
    lines = read_lines(job.input) if job.input != "-" or refs is not None else iter_text_lines("-")
    total = len(lines) if isinstance(lines, list) else None
    if refs is not None and len(refs) != total:
        source = "<stdin>" if job.input == "-" else job.input
        raise InputError(f"has {len(refs)} lines but the input {source} has {total}", job.ref)
    bundles = (
        [load_model(p, device=job.device) for p in job.models]
        if job.models
        else shipped_translation_models(job.device)
    )
    ens = Ensemble(maybe_int8(bundles, job.int8), job.config.ensemble)
    reuse_freed_memory()
    results = translate_lines(ens, lines, job.config, progress, total=total)
    if job.rerank:
        from nbest_rescore.translate_rerank import rerank_results

        reranker, scoring = reranker_of(job, ens, progress)
        results = rerank_results(ens, results, reranker, scoring)
    with atomic_write(job.output) as fh:
        best = write_outputs(results, fh, job.mode, keep_text=refs is not None)
    if refs is None:
        return None
    from nbest_rescore.metrics import BleuConfig, corpus_bleu

    bleu_cfg = BleuConfig(tokenize=job.tokenize, tgt_lang=ens.tgt_tok.lang)
    return f"{corpus_bleu(best, refs, bleu_cfg)} ({bleu_cfg.tokenize})"


def resolve_rerank(job: TranslateJob) -> TranslateJob:
    """`job` with `rerank` decided (by default: on for the shipped models when their
    `rerank.json` is shipped and no n-best list is asked for) and, when on, a search that keeps
    every hypothesis of the beam."""
    rerank = job.rerank
    if rerank is None:
        auto = not job.models and job.mode != "nbest"
        if auto:
            from nbest_rescore.translate_rerank import shipped_rerank_file

            rerank = shipped_rerank_file(shipped_models().directory) is not None
        else:
            rerank = False
    if not rerank:
        return replace(job, rerank=False)
    search = replace(job.config.search, nbest=job.config.search.beam)
    return replace(job, rerank=True, config=replace(job.config, search=search))


def reranker_of(
    job: TranslateJob, ens: Ensemble, progress: ProgressSettings
) -> tuple[Reranker, ScoringConfig]:
    """The reranking models and weights of `job`: given, shipped, or tuned on its dev set
    (and then written to `job.rerank_weights`)."""
    from nbest_rescore.translate_rerank import (
        Reranker,
        feature_names,
        read_rerank_weights,
        shipped_rerank_file,
        tune_reranker,
        write_rerank_weights,
    )

    shipped = None if job.models or job.rerank_models else shipped_models()
    if shipped is not None:
        every = assign_directions([load_model(p, job.device) for p in shipped.models], None)
        scorers = [b for b in every if model_kind(b) != "lstm"]
        paths = [str(b.path) for b in scorers]
    else:
        loaded = [load_model(p, job.device) for p in job.rerank_models]
        scorers = assign_directions([*ens.bundles, *loaded], None)[len(ens.bundles) :]
        paths = list(job.rerank_models)
    scorers = maybe_int8(scorers, job.int8)
    scoring = ScoringConfig(device=job.device, src_tokenized=job.config.src_tokenized)
    search_names, scorer_names = feature_names(len(ens.bundles), scorers)
    if job.tune_src is not None and job.tune_ref is not None and job.rerank_weights is not None:
        from nbest_rescore.metrics import BleuConfig
        from nbest_rescore.tune import MertConfig

        weights, record = tune_reranker(
            ens, scorers, read_lines(job.tune_src), read_lines(job.tune_ref), job.config,
            scoring, MertConfig(), BleuConfig(tokenize=job.tokenize, tgt_lang=ens.tgt_tok.lang),
            progress,
        )  # fmt: skip
        search = [str(b.path) for b in ens.bundles]
        write_rerank_weights(
            job.rerank_weights, weights, record, {"search": search, "rerank": paths}
        )
    else:
        path = job.rerank_weights or (shipped and shipped_rerank_file(shipped.directory))
        if not path:
            raise InputError(
                "--rerank with your own models needs weights tuned for them: --rerank-weights "
                "FILE, or --tune-src DEV --tune-ref REF --rerank-weights NEW.json to tune them"
            )
        weights, _ = read_rerank_weights(path)
    return Reranker(tuple(scorers), search_names, scorer_names, weights), scoring
