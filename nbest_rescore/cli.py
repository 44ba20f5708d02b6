"""The `rescore` command line: parse options, call one library function, print.

Exit codes: 0 success, 2 bad input (message names file, line and problem), 1 internal error.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.core

from nbest_rescore.errors import InputError
from nbest_rescore.headline import cache_note, console_table
from nbest_rescore.progress import ProgressSettings
from nbest_rescore.validate import (
    DEFAULT_MAX_LEN,
    MAX_THREADS,
    option_above,
    option_at_least,
    option_at_most,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Moses n-best rescoring with deep LSTM encoder-decoders (Sutskever et al. 2014).",
)

F = TypeVar("F", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from nbest_rescore import __version__

        typer.echo(f"rescore (nbest_rescore) {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Moses n-best rescoring with deep LSTM encoder-decoders (Sutskever et al. 2014)."""


class _Command(typer.core.TyperCommand):
    """A command whose help writes an argument as CLI.md does (`rescore stats FILE`): some typer
    versions write a required argument as `{FILE}` in the usage line and add its Python type
    (`FILE <str>`) in the arguments list."""

    # typer vendors its own click, whose types differ by version: the context is passed through
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}$", r"\1", p) for p in super().collect_usage_pieces(ctx)]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        formatter.buffer[:] = [re.sub(r"(\b[A-Z]+) <str>", r"\1", s) for s in formatter.buffer]


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]
Tokenize = Annotated[
    str,
    typer.Option(
        help="BLEU tokenisation: 13a = detokenize hypotheses, score against raw references "
        "(sacrebleu default); none = tokenized hypotheses against tokenized references.",
        metavar="13a|none",
    ),
]
Models = Annotated[
    list[Path] | None,
    typer.Option(
        "--model",
        "-m",
        help="Model checkpoint (repeat for an ensemble). Default: shipped model.",
        metavar="CKPT",
    ),
]
Threads = Annotated[
    str,
    typer.Option(
        metavar="N|auto",
        help="CPU threads for the models, at most 1024 (default 1: on a machine shared with other work, "
        "more threads than free cores make scoring many times slower; bench/bench_threads.py). "
        "On an otherwise idle machine, --threads auto (all cores) or --threads N is faster. "
        "torchrun: 1 per rank. Scores can differ in the last bits between thread counts; the "
        "cache keeps them apart.",
    ),
]
DEFAULT_THREADS = "1"
"""`--threads` of `run` and `translate`: one per process, the choice that does not collapse when
other processes share the cores (bench/results/threads.json)."""
Device = Annotated[
    str,
    typer.Option(
        help="auto (CUDA when available, else CPU), cpu or cuda[:N].", metavar="auto|cpu|cuda[:N]"
    ),
]
Int8 = Annotated[
    bool,
    typer.Option(
        help="Dynamic int8 quantization of the LSTM and linear layers (CPU only: --device auto "
        "picks the CPU). Scores change slightly; see the README's performance paragraph."
    ),
]


def _int8_device(device: str, int8: bool) -> str:
    """`--device auto` means the CPU under `--int8` (its kernels are CPU only)."""
    return "cpu" if int8 and device == "auto" else device


def _fail(code: int, message: str) -> None:
    typer.echo(f"rescore: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Map bad input to exit 2 with its message, anything unexpected to exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except InputError as exc:
            _fail(2, str(exc))
        except KeyboardInterrupt:
            typer.echo("rescore: interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception as exc:
            if os.environ.get("NBEST_RESCORE_DEBUG"):
                traceback.print_exc()
            _fail(1, f"internal error: {type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _progress(quiet: bool) -> ProgressSettings:
    return ProgressSettings(enabled=False) if quiet else ProgressSettings()


def _set_threads(threads: str | int | None) -> None:
    """Torch's CPU threads for this process (a process-wide setting, so set here at the edge):
    a count, or `auto` for torch's own choice (all cores)."""
    if threads is None or threads == "auto":
        return
    try:
        count = int(threads)
    except ValueError:
        raise InputError(f"--threads {threads!r}: expected a count or auto") from None
    option_at_least("--threads", count, 1)
    option_at_most("--threads", count, MAX_THREADS)
    import torch

    torch.set_num_threads(count)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        typer.echo(message, err=True)


def _warn(warnings: list[str] | tuple[str, ...]) -> None:
    """Warnings go to stderr even with --quiet: they say an output may not be what it seems."""
    for w in warnings:
        typer.echo(f"rescore: warning: {w}", err=True)


# ---------------------------------------------------------------------------------------------


@app.command(cls=_Command)
@handle_errors
def stats(
    file: Annotated[
        str, typer.Argument(help="Moses n-best list (plain, .gz or - for stdin).", metavar="FILE")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    quiet: Quiet = False,
) -> None:
    """Sentences, hypotheses per sentence, feature labels, distinct ratio, missing ids.

    Example: rescore stats data/multi30k/test2016.moses.top100.nbest.gz
    """
    from dataclasses import asdict

    from nbest_rescore.nbest_stats import nbest_stats
    from nbest_rescore.report import to_json

    st = nbest_stats(file)
    d = asdict(st)
    if as_json:
        typer.echo(to_json(d), nl=False)
        return
    for k, v in d.items():
        typer.echo(f"{k:>24}: {_plain(v)}")


def _plain(v: Any) -> str:
    """A value for the terminal: sequences as comma-separated items, whole numbers as integers
    (a median of 100 hypotheses is `100`, not `100.000`), other floats with 3 decimals."""
    if isinstance(v, tuple | list):
        return ", ".join(map(str, v)) if v else "none"
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() else f"{v:.3f}"
    return "none" if v is None else str(v)


@app.command()
@handle_errors
def oracle(
    nbest: Annotated[str, typer.Option(help="Moses n-best list.", metavar="FILE")],
    ref: Annotated[
        str, typer.Option(help="Reference translations, one per sentence.", metavar="FILE")
    ],
    src: Annotated[
        str | None, typer.Option(help="Source sentences (for length buckets).", metavar="FILE")
    ] = None,
    out: Annotated[Path, typer.Option(help="Report directory.", metavar="DIR")] = Path(
        "oracle-report"
    ),
    tokenize: Tokenize = "13a",
    tgt_lang: Annotated[
        str, typer.Option(help="Target language (detokenizer).", metavar="LANG")
    ] = "fr",
    max_hyps: Annotated[
        int | None, typer.Option(help="Use only the top N of every list.", metavar="N")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Oracle analysis of an n-best list (no model needed): 1-best, oracles, oracle@k, ranks.

    Example: rescore oracle --nbest val.1000best.gz --ref val.fr.gz --src val.en.gz --out rep/
    """
    from nbest_rescore.metrics import BleuConfig
    from nbest_rescore.oracle_job import OracleJob, run_oracle_job

    job = OracleJob(
        nbest=nbest,
        ref=ref,
        src=src,
        out=out,
        bleu=BleuConfig(tokenize=tokenize, tgt_lang=tgt_lang),
        max_hyps=max_hyps,
    )
    summary = run_oracle_job(job, _progress(quiet))
    _warn(summary.get("warnings", []))
    typer.echo(console_table(summary))
    _say(quiet, f"report written to {out}/")


@app.command()
@handle_errors
def rerank(
    nbest: Annotated[str, typer.Option(help="Moses n-best list.", metavar="FILE")],
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Weights file: JSON (e.g. a run's weights.json) or Moses 'Name= v ...' lines; "
            "features it does not name weigh 0.",
            metavar="FILE",
        ),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE[,VALUE..] (repeatable): sets that one weight on top of --weights "
            "(or of the default total=1), e.g. --weight LM0=0.5.",
            metavar="NAME=VALUE",
        ),
    ] = None,
    ref: Annotated[
        str | None, typer.Option(help="Reference: print BLEU of the selection.", metavar="FILE")
    ] = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Where the 1-best goes (- = stdout).", metavar="FILE"),
    ] = "-",
    tokenized_output: Annotated[
        bool,
        typer.Option("--tokenized-output", help="Write the n-best tokens, not detokenized text."),
    ] = False,
    tokenize: Tokenize = "13a",
    tgt_lang: Annotated[
        str, typer.Option(help="Target language (detokenizer).", metavar="LANG")
    ] = "fr",
    quiet: Quiet = False,
) -> None:
    """1-best of every list by a linear combination of features (default: the decoder's total).

    Example: rescore rerank --nbest rescore-out/nbest.with-lstm.gz --weights
    rescore-out/weights.json -o best.txt
    """
    from nbest_rescore.metrics import BleuConfig
    from nbest_rescore.rerank_job import RerankJob, run_rerank_job

    job = RerankJob(
        nbest=nbest,
        weights_file=weights,
        weight_options=tuple(weight or ()),
        ref=ref,
        output=output,
        tokenized_output=tokenized_output,
        bleu=BleuConfig(tokenize=tokenize, tgt_lang=tgt_lang),
    )
    result = run_rerank_job(job, _progress(quiet))
    if result.missing_note:
        _warn([result.missing_note])
    used = " ".join(f"{n}={w:g}" for n, w in result.weights.items())
    _say(quiet, f"weights: {used}")
    if result.bleu is not None:
        typer.echo(result.bleu, err=True)


def main() -> None:
    """Console-script entry point."""
    app()


# Long only by its option declarations (typer reads the options from the signature); the
# body is 45 lines.
@app.command()
@handle_errors
def run(
    nbest: Annotated[str, typer.Option(help="Moses n-best list to rescore.", metavar="FILE")],
    src: Annotated[
        str, typer.Option(help="Source sentences (raw text), one per sentence id.", metavar="FILE")
    ],
    ref: Annotated[
        str | None,
        typer.Option(help="References: BLEU table, oracles, significance.", metavar="FILE"),
    ] = None,
    model: Models = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Weights file (a run's weights.json, or Moses 'Name= v' lines) over Baseline0 "
            "(decoder total), LSTM0.. (one per -m), Length0 and the list's features: the "
            "'given' system.",
            metavar="FILE",
        ),
    ] = None,
    tune_nbest: Annotated[
        str | None, typer.Option(help="Dev n-best list for MERT tuning.", metavar="FILE")
    ] = None,
    tune_src: Annotated[str | None, typer.Option(help="Dev source.", metavar="FILE")] = None,
    tune_ref: Annotated[str | None, typer.Option(help="Dev reference.", metavar="FILE")] = None,
    tokenize: Tokenize = "13a",
    device: Device = "auto",
    threads: Threads = DEFAULT_THREADS,
    bf16: Annotated[
        bool, typer.Option(help="bf16 autocast on CUDA (reports max diff vs fp32).")
    ] = False,
    int8: Int8 = False,
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Target tokens per scoring batch [default: 8192].", metavar="N"),
    ] = None,
    max_hyps: Annotated[
        int | None, typer.Option(help="Use only the top N of every list.", metavar="N")
    ] = None,
    max_len: Annotated[
        int,
        typer.Option(
            help="Longest hypothesis (and source) in tokens: a longer one is an error naming "
            "its line (scoring memory grows with hypotheses x this length).",
            metavar="N",
        ),
    ] = DEFAULT_MAX_LEN,
    prefix_sharing: Annotated[
        bool, typer.Option(help="Score each list's shared prefixes once (prefix trie).")
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Score cache (resume, reuse across runs). Default OUT/cache.", metavar="DIR"
        ),
    ] = None,
    escaped: Annotated[
        bool | None,
        typer.Option("--escaped/--unescaped", help="n-best XML-escaped? (default: detect)"),
    ] = None,
    src_tokenized: Annotated[bool, typer.Option(help="--src is already tokenized.")] = False,
    src_lang: Annotated[
        str, typer.Option(help="Source language (length buckets).", metavar="LANG")
    ] = "en",
    tgt_lang: Annotated[
        str, typer.Option(help="Target language (detokenizer).", metavar="LANG")
    ] = "fr",
    restarts: Annotated[
        int, typer.Option(help="MERT random restarts (0 to 1000).", metavar="N")
    ] = 10,
    seed: Annotated[int, typer.Option(help="MERT seed.", metavar="N")] = 1,
    tune_bootstrap: Annotated[
        int,
        typer.Option(
            help="0: one MERT on the dev list. N: the mean of the weights MERT finds on N "
            "bootstrap resamples of the dev list (N full MERTs; weights that transfer better).",
            metavar="N",
        ),
    ] = 0,
    mbr: Annotated[
        bool,
        typer.Option(
            help="Add the consensus feature MBR0: each hypothesis' expected sentence BLEU "
            "against its list's top hypotheses (weighed like the others)."
        ),
    ] = False,
    mbr_top_k: Annotated[
        int, typer.Option(help="MBR0 evidence: the top N of each list by its total.", metavar="N")
    ] = 50,
    mbr_scale: Annotated[
        float,
        typer.Option(help="MBR0 posterior: softmax(SCALE x the list's total).", metavar="SCALE"),
    ] = 1.0,
    out: Annotated[Path, typer.Option(help="Output directory.", metavar="DIR")] = Path(
        "rescore-out"
    ),
    quiet: Quiet = False,
) -> None:
    """Score every hypothesis with the LSTM ensemble, interpolate, pick the 1-best, report.

    Without -m: the shipped model, weighed by its shipped weights.json unless --weights or a dev
    list is given.

    Example: rescore run --nbest test.1000best.gz --src test.en --ref test.fr -m a.pt -m b.pt
    --tune-nbest val.1000best.gz --tune-src val.en --tune-ref val.fr --out out/
    """
    from nbest_rescore import distributed
    from nbest_rescore.mbr import MbrConfig
    from nbest_rescore.metrics import BleuConfig
    from nbest_rescore.run_job import RunJob, run_rescore_job
    from nbest_rescore.scoring import ScoringConfig
    from nbest_rescore.tune import MertConfig

    _set_threads(threads)
    device = distributed.resolve_device(_int8_device(device, int8))
    job = RunJob(
        nbest=nbest,
        src=src,
        ref=ref,
        models=tuple(str(m) for m in model or ()),
        out=out,
        weights=weights,
        tune_nbest=tune_nbest,
        tune_src=tune_src,
        tune_ref=tune_ref,
        bleu=BleuConfig(tokenize=tokenize, tgt_lang=tgt_lang),
        scoring=ScoringConfig(
            **({} if max_tokens is None else {"max_tokens": max_tokens}),
            device=device,
            bf16=bf16,
            escaped=escaped,
            src_tokenized=src_tokenized,
            share_prefixes=prefix_sharing,
            int8=int8,
        ),
        mert=MertConfig(restarts=restarts, seed=seed, bootstrap=tune_bootstrap),
        max_hyps=max_hyps,
        src_lang=src_lang,
        cache_dir=cache_dir,
        max_len=max_len,
        mbr=MbrConfig(top_k=mbr_top_k, scale=mbr_scale) if mbr else None,
    )
    with distributed.process_group(device) as info:
        summary = run_rescore_job(job, _progress(quiet or not info.is_main))
    if summary is None:
        return
    _warn(summary.get("warnings", []))
    note = cache_note(summary, cache_dir or out / "cache")
    if note is not None:
        _say(quiet, note)
    if summary["systems"]:
        typer.echo(console_table(summary))
    _say(quiet, f"outputs written to {out}/ (1-best: {out}/best.detok.txt)")


TrainSrc = Annotated[
    str, typer.Option(help="Training source (raw text, plain or .gz).", metavar="FILE")
]
TrainTgt = Annotated[
    str, typer.Option(help="Training target, line-aligned with the source.", metavar="FILE")
]
ValidSrc = Annotated[str, typer.Option(help="Validation source.", metavar="FILE")]
ValidTgt = Annotated[str, typer.Option(help="Validation target.", metavar="FILE")]
SrcLang = Annotated[
    str | None, typer.Option(help="Source language (tokeniser) [default: en].", metavar="LANG")
]
TgtLang = Annotated[
    str | None, typer.Option(help="Target language (tokeniser) [default: fr].", metavar="LANG")
]
Tokenized = Annotated[bool, typer.Option(help="Inputs are already tokenized.")]
Workers = Annotated[
    int, typer.Option(help="Tokenising processes when preparing (1: in this process).", metavar="N")
]
MaxLen = Annotated[
    int | None,
    typer.Option(
        help="Drop training pairs with a side longer than this [default: 80].", metavar="N"
    ),
]


@app.command()
@handle_errors
def prepare(
    train_src: TrainSrc,
    train_tgt: TrainTgt,
    valid_src: ValidSrc,
    valid_tgt: ValidTgt,
    out: Annotated[Path, typer.Option(help="The prepared-data directory to write.", metavar="DIR")],
    src_lang: SrcLang = None,
    tgt_lang: TgtLang = None,
    tokenized: Tokenized = False,
    src_vocab_size: Annotated[
        int,
        typer.Option(
            help="Source vocabulary: the N most frequent words (the paper's 160k).", metavar="N"
        ),
    ] = 160_000,
    tgt_vocab_size: Annotated[
        int,
        typer.Option(
            help="Target vocabulary: the N most frequent words (the paper's 80k).", metavar="N"
        ),
    ] = 80_000,
    vocab_min_count: Annotated[int, typer.Option(help="Minimum word count.", metavar="N")] = 1,
    max_len: Annotated[
        int, typer.Option(help="Drop training pairs with a side longer than this.", metavar="N")
    ] = 80,
    workers: Workers = max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    ),
    quiet: Quiet = False,
) -> None:
    """Tokenize, build vocabularies and write the training corpus as flat id arrays once.

    `rescore train --data OUT ...` trains from it; the same inputs and settings again are a
    no-op. On several machines, put OUT on a filesystem they share.

    Example: rescore prepare --train-src train.en.gz --train-tgt train.fr.gz --valid-src
    val.en.gz --valid-tgt val.fr.gz --out data/en-fr
    """
    from nbest_rescore.corpus import DataSettings
    from nbest_rescore.prepare import PrepareConfig
    from nbest_rescore.prepare import prepare as run_prepare

    settings = DataSettings(
        src_lang=src_lang or "en",
        tgt_lang=tgt_lang or "fr",
        tokenized=tokenized,
        src_vocab_size=src_vocab_size,
        tgt_vocab_size=tgt_vocab_size,
        vocab_min_count=vocab_min_count,
        max_len=max_len,
    )
    cfg = PrepareConfig(
        train_src=train_src, train_tgt=train_tgt, valid_src=valid_src, valid_tgt=valid_tgt,
        out=str(out), settings=settings, workers=workers,
    )  # fmt: skip
    res = run_prepare(cfg, _progress(quiet))
    rep = res.report
    if res.up_to_date:
        typer.echo(f"{out} is up to date (same inputs and settings): nothing to do")
        return
    f = rep["train_filter"]
    typer.echo(
        f"prepared {f['kept']} of {f['total']} training pairs ({f['empty']} empty, "
        f"{f['too_long']} longer than {rep['max_len']} dropped), {rep['valid_pairs']} "
        f"validation pairs, vocabularies {rep['src_vocab']} / {rep['tgt_vocab']}, in "
        f"{res.seconds:.0f} s: {out}"
    )


# Long only by its option declarations (typer reads the options from the signature); the
# body is 79 lines.
@app.command()
@handle_errors
def train(
    out: Annotated[
        Path, typer.Option(help="Run directory (checkpoints, log.jsonl).", metavar="DIR")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Prepared-data directory (rescore prepare); with --train-src etc.: where to "
            "prepare them [default: OUT/data].",
            metavar="DIR",
        ),
    ] = None,
    train_src: Annotated[
        str | None, typer.Option(help="Training source (raw text, plain or .gz).", metavar="FILE")
    ] = None,
    train_tgt: Annotated[
        str | None,
        typer.Option(help="Training target, line-aligned with the source.", metavar="FILE"),
    ] = None,
    valid_src: Annotated[
        str | None, typer.Option(help="Validation source.", metavar="FILE")
    ] = None,
    valid_tgt: Annotated[
        str | None, typer.Option(help="Validation target.", metavar="FILE")
    ] = None,
    src_lang: SrcLang = None,
    tgt_lang: TgtLang = None,
    preset: Annotated[
        str,
        typer.Option(
            help="multi30k (attention, trains to convergence: the recipe for small data on a CPU) "
            "| paper (the paper's SGD recipe, 384M parameters, for GPUs) | small | tiny: model "
            "and training recipe.",
            metavar="multi30k|paper|small|tiny",
        ),
    ] = "multi30k",
    attention: Annotated[
        str | None,
        typer.Option(
            help="none | luong | bahdanau (overrides the preset).", metavar="none|luong|bahdanau"
        ),
    ] = None,
    reverse_target: Annotated[
        bool, typer.Option(help="Right-to-left model: the target is read reversed.")
    ] = False,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="epochs (the paper's fixed halving) | plateau (halve when valid stalls).",
            metavar="epochs|plateau",
        ),
    ] = None,
    reverse: Annotated[
        bool,
        typer.Option(
            "--reverse/--no-reverse", help="Feed the source reversed (the paper's trick)."
        ),
    ] = True,
    epochs: Annotated[
        float | None,
        typer.Option(
            help="Epochs (fractional allowed; however few, at least one step is taken).",
            metavar="X",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Sentences per (global) batch.", metavar="N")
    ] = None,
    batch_tokens: Annotated[
        int | None, typer.Option(help="Token budget per batch instead.", metavar="N")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.", metavar="X")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd (paper) or adam.", metavar="sgd|adam")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help="Dropout (0 in the paper).", metavar="X")
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing (0 in the paper).", metavar="X")
    ] = None,
    clip_norm: Annotated[
        float | None, typer.Option(help="Clip the gradient's L2 norm (paper: 5).", metavar="X")
    ] = None,
    lr_decay_start: Annotated[
        float | None, typer.Option(help="Epoch of the first lr halving.", metavar="X")
    ] = None,
    lr_decay_every: Annotated[
        float | None, typer.Option(help="Epochs between halvings.", metavar="X")
    ] = None,
    emb_dim: Annotated[
        int | None, typer.Option(help="Embedding size (overrides the preset).", metavar="N")
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="LSTM cells per layer.", metavar="N")] = None,
    layers: Annotated[int | None, typer.Option(help="LSTM layers.", metavar="N")] = None,
    src_vocab_size: Annotated[
        int | None, typer.Option(help="Source vocabulary size.", metavar="N")
    ] = None,
    tgt_vocab_size: Annotated[
        int | None, typer.Option(help="Target vocabulary size.", metavar="N")
    ] = None,
    vocab_min_count: Annotated[
        int | None, typer.Option(help="Minimum word count for the vocabularies.", metavar="N")
    ] = None,
    tokenized: Tokenized = False,
    max_len: MaxLen = None,
    workers: Workers = 1,
    patience: Annotated[
        int | None,
        typer.Option(help="Early stopping after N validations without gain.", metavar="N"),
    ] = None,
    valid_every: Annotated[
        int | None, typer.Option(help="Validate every N steps (0: per epoch).", metavar="N")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps.", metavar="N")
    ] = None,
    log_every: Annotated[int | None, typer.Option(help="Log every N steps.", metavar="N")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (init and batch order).", metavar="N")] = 1,
    device: Device = "auto",
    bf16: Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (at most 1024).", metavar="N")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint_last.pt.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a deep LSTM encoder-decoder (DDP under torchrun).

    From a prepared directory (--data, see rescore prepare), or from text files, which are first
    prepared into OUT/data (or --data). The data settings (languages, --tokenized, vocabulary
    sizes, --max-len) belong to the preparation: with --data alone they come from the directory.
    Example: rescore train --train-src train.en.gz --train-tgt train.fr.gz --valid-src val.en.gz
    --valid-tgt val.fr.gz --preset small --out runs/small
    """
    from nbest_rescore import distributed
    from nbest_rescore.train import TrainConfig
    from nbest_rescore.train import train as run_training

    texts = {"--train-src": train_src, "--train-tgt": train_tgt, "--valid-src": valid_src,
             "--valid-tgt": valid_tgt}  # fmt: skip
    for name, path in texts.items():
        if path == "-":
            raise InputError(f"{name} -: training reads its files several times; give a file")
    if train_src is None and data is not None:
        fixed = {"--src-lang": src_lang, "--tgt-lang": tgt_lang, "--tokenized": tokenized or None,
                 "--src-vocab-size": src_vocab_size, "--tgt-vocab-size": tgt_vocab_size,
                 "--vocab-min-count": vocab_min_count, "--max-len": max_len}  # fmt: skip
        given = [name for name, value in fixed.items() if value is not None]
        if given:
            raise InputError(
                f"{', '.join(given)}: settings of the prepared directory {data}; prepare "
                "again (rescore prepare) to change them"
            )
    overrides = {
        k: v
        for k, v in dict(
            epochs=epochs,
            batch_size=batch_size,
            batch_tokens=batch_tokens,
            lr=lr,
            optimizer=optimizer,
            dropout=dropout,
            label_smoothing=label_smoothing,
            lr_decay_start=lr_decay_start,
            lr_decay_every=lr_decay_every,
            emb_dim=emb_dim,
            attention=attention,
            lr_schedule=lr_schedule,
            hidden=hidden,
            layers=layers,
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            vocab_min_count=vocab_min_count,
            patience=patience,
            valid_every=valid_every,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            clip_norm=clip_norm,
            num_threads=threads,
            max_len=max_len,
        ).items()
        if v is not None
    }
    option_above("--lr", lr, 0)  # the library allows 0 (a frozen model); a user means > 0
    cfg = TrainConfig.preset_config(
        preset,
        train_src=train_src,
        train_tgt=train_tgt,
        valid_src=valid_src,
        valid_tgt=valid_tgt,
        out_dir=str(out),
        data_dir=None if data is None else str(data),
        prepare_workers=workers,
        src_lang=src_lang or "en",
        tgt_lang=tgt_lang or "fr",
        reverse_source=reverse,
        reverse_target=reverse_target,
        tokenized=tokenized,
        seed=seed,
        device=distributed.resolve_device(device),
        bf16=bf16,
        resume=resume,
        **overrides,
    )
    with distributed.process_group(cfg.device) as info:
        result = run_training(cfg, _progress(quiet or not info.is_main))
    if info.is_main:
        typer.echo(
            f"best valid ppl {result.best_valid_ppl:.2f} after {result.epochs_done:.2f} epochs "
            f"({result.steps} steps, {result.elapsed_s:.0f} s"
            + ("" if result.cpu_s is None else f", {result.cpu_s:.0f} CPU s")
            + f"): {result.best_checkpoint}"
        )


# Long only by its option declarations (typer reads the options from the signature); the
# body is 60 lines.
@app.command()
@handle_errors
def translate(
    model: Models = None,
    beam: Annotated[
        int | None,
        typer.Option(
            help="Beam size (1 = greedy) [default: 12, or --nbest if larger].", metavar="N"
        ),
    ] = None,
    nbest: Annotated[
        int | None,
        typer.Option(help="Write an N-best list in Moses format (N <= --beam).", metavar="N"),
    ] = None,
    input: Annotated[
        str, typer.Option("--input", "-i", help="Raw source text (- = stdin).", metavar="FILE")
    ] = "-",
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Where translations go (- = stdout).", metavar="FILE"),
    ] = "-",
    ref: Annotated[
        str | None,
        typer.Option(help="Reference: print BLEU (sacrebleu) at the end.", metavar="FILE"),
    ] = None,
    tokenized_output: Annotated[
        bool, typer.Option("--tokenized-output", help="Write model tokens, not detokenized text.")
    ] = False,
    src_tokenized: Annotated[bool, typer.Option(help="Input is already tokenized.")] = False,
    combine: Annotated[
        str,
        typer.Option(
            help="Ensemble: prob (mean of probabilities) or logprob.", metavar="prob|logprob"
        ),
    ] = "prob",
    ensemble_weights: Annotated[
        str | None, typer.Option(help="Per-model weights, comma separated.", metavar="W,W,...")
    ] = None,
    length_penalty: Annotated[
        float,
        typer.Option(
            help="Length normalisation, GNMT alpha: rank by score / ((5 + length) / 6) ** alpha; "
            "0 = summed log-probs (paper), 1 is close to the mean log-prob per token.",
            metavar="X",
        ),
    ] = 0.0,
    min_len: Annotated[
        int,
        typer.Option(
            help="No EOS before this many tokens for a non-empty source (0 allows empty output).",
            metavar="N",
        ),
    ] = 1,
    max_len_a: Annotated[
        float, typer.Option(help="Max output length = a * source length + b.", metavar="X")
    ] = 2.0,
    max_len_b: Annotated[int, typer.Option(help="See --max-len-a.", metavar="N")] = 10,
    forbid_unk: Annotated[bool, typer.Option(help="Never output UNK.")] = False,
    copy_unk: Annotated[
        bool, typer.Option(help="Replace output UNKs by source OOV words, in order.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Sentences decoded together.", metavar="N")] = 32,
    rerank: Annotated[
        bool | None,
        typer.Option(
            "--rerank/--no-rerank",
            help="Rerank the beam's n-best list (all --beam hypotheses) with the right-to-left "
            "and target-to-source models and a length feature, by tuned weights (without -m: "
            "the shipped ones). Default: on for the shipped models (with their rerank.json), "
            "off with -m.",
        ),
    ] = None,
    rerank_model: Annotated[
        list[Path] | None,
        typer.Option(help="A reranking model (repeatable).", metavar="CKPT"),
    ] = None,
    rerank_weights: Annotated[
        str | None,
        typer.Option(
            help="Reranking weights (a rerank.json); with --tune-src, where to write them.",
            metavar="FILE",
        ),
    ] = None,
    tune_src: Annotated[
        str | None,
        typer.Option(help="--rerank: tune the weights on this dev source first.", metavar="FILE"),
    ] = None,
    tune_ref: Annotated[
        str | None, typer.Option(help="--rerank: the dev reference.", metavar="FILE")
    ] = None,
    tokenize: Tokenize = "13a",
    device: Device = "auto",
    threads: Threads = DEFAULT_THREADS,
    int8: Int8 = False,
    quiet: Quiet = False,
) -> None:
    """Translate raw text with an LSTM (ensemble) by beam search; default model when no -m.

    Example: echo "A man in an orange hat." | rescore translate --beam 12

    Reranked: rescore translate --rerank -i test.en (shipped models and weights); your own:
    rescore translate -m a.pt --rerank --rerank-model r2l.pt --tune-src dev.en --tune-ref dev.fr
    --rerank-weights rerank.json -i test.en
    """
    from nbest_rescore.distributed import resolve_device
    from nbest_rescore.ensemble import EnsembleConfig
    from nbest_rescore.search import SearchConfig
    from nbest_rescore.translate import TranslateConfig, TranslateJob, run_translate_job

    weights = None
    if ensemble_weights:
        try:
            weights = tuple(float(w) for w in ensemble_weights.split(","))
        except ValueError:
            raise InputError(f"--ensemble-weights {ensemble_weights!r}: expected numbers") from None
    if input == "-" and ref == "-":
        raise InputError("only one input can be - (stdin), got --input, --ref")
    _set_threads(threads)
    if tokenize != "13a":  # an unknown --tokenize is an error before any work (13a is known)
        from nbest_rescore.metrics import BleuConfig

        BleuConfig(tokenize=tokenize)
    option_at_least("--nbest", nbest, 1)  # before it sets the default beam
    cfg = TranslateConfig(
        search=SearchConfig(
            beam=beam if beam is not None else max(12, nbest or 1),
            nbest=nbest or 1,
            length_penalty=length_penalty,
            min_len=min_len,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            forbid_unk=forbid_unk,
            batch_size=batch_size,
        ),
        ensemble=EnsembleConfig(combine=combine, weights=weights),  # type: ignore[arg-type]
        src_tokenized=src_tokenized,
        copy_unk=copy_unk,
    )
    job = TranslateJob(
        models=tuple(str(m) for m in model or ()),
        config=cfg,
        input=input,
        output=output,
        mode="nbest" if nbest else "tokens" if tokenized_output else "text",
        ref=ref,
        tokenize=tokenize,
        device=resolve_device(_int8_device(device, int8)),
        int8=int8,
        rerank=rerank,
        rerank_models=tuple(str(m) for m in rerank_model or ()),
        rerank_weights=rerank_weights,
        tune_src=tune_src,
        tune_ref=tune_ref,
    )
    bleu = run_translate_job(job, _progress(quiet))
    if bleu is not None:
        typer.echo(bleu, err=True)
