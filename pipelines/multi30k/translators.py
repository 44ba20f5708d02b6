"""Which translator to ship: `rescore translate` settings side by side on val and test2016.

`python -m pipelines.multi30k.translators --data-dir DIR --work-dir WORK --system NAME=SPEC ...`
translates val and test2016 at beam 12 with each system and writes WORK/translators.json and the
`translators` section of RESULTS.md. A SPEC is `+`-joined checkpoints, optionally followed by
`@int8` (the checkpoints stored as int8 with a scale per row, `checkpoint.model_payload`) and
`:rerank=CKPT` (the beam's 12-best reranked with that model and `Length0`,
`translate_rerank.py`). Reranking weights are tuned by MERT on val; the val BLEU of a reranked
system is then reported two ways: tuned on all of val (in-sample) and two-fold (each half of val
reranked with weights tuned on the other half), the fair figure to choose by. The choice is made
on val only; test2016 is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbest_rescore.checkpoint import assign_directions, load_model, model_payload, save_checkpoint
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig, compute_hyp_stats, corpus_bleu, signature
from nbest_rescore.rerank import select_best
from nbest_rescore.scoring import ScoringConfig
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, translate_lines
from nbest_rescore.translate_rerank import feature_names, feature_table, write_rerank_weights
from nbest_rescore.tune import MertConfig, tune
from pipelines.multi30k.beyond import _commit, _halves, run_record

BEGIN, END = "<!-- translators:begin -->", "<!-- translators:end -->"
BEAM = 12


@dataclass(frozen=True)
class System:
    name: str
    models: tuple[Path, ...]
    int8: bool = False
    rerank: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> System:
        name, rest = spec.split("=", 1)
        rerank = None
        if ":rerank=" in rest:
            rest, r = rest.split(":rerank=", 1)
            rerank = Path(r)
        int8 = rest.endswith("@int8")
        rest = rest.removesuffix("@int8")
        return cls(name, tuple(Path(p) for p in rest.split("+")), int8, rerank)


def stored(path: Path, int8: bool, work: Path) -> Path:
    """The checkpoint as shipped: itself, or an int8-stored copy under `work`."""
    if not int8:
        return path
    dest = work / "int8" / path.name
    if not dest.exists():
        b = load_model(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        args = (b.model, b.src_vocab, b.tgt_vocab, b.src_tok, b.tgt_tok)
        save_checkpoint(dest, model_payload(*args, int8=True))
    return dest


def _storage(path: Path) -> str:
    """How a checkpoint file stores its weights: int8 (with row scales), fp16 or fp32."""
    from nbest_rescore.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("int8_row_scales"):
        return "int8"
    floats = [v for v in payload["model"].values() if v.is_floating_point()]
    return "fp16" if floats and floats[0].dtype == torch.float16 else "fp32"


def measure(
    system: System, sets: dict[str, tuple[list[str], list[str]]], work: Path
) -> dict[str, Any]:
    """BLEU, empty outputs and seconds of `system` on each set; with a reranker its weights."""
    bleu = BleuConfig(tokenize="13a", tgt_lang="fr")
    paths = [stored(p, system.int8, work) for p in system.models]
    ens = Ensemble([load_model(p) for p in paths])
    row: dict[str, Any] = {
        "system": system.name,
        "models": [p.name for p in system.models],
        "storage": "+".join(sorted({_storage(p) for p in paths})),
        "megabytes": sum(p.stat().st_size for p in paths) / 1e6,
    }
    search = SearchConfig(beam=BEAM, nbest=BEAM if system.rerank else 1)
    cfg = TranslateConfig(search)
    scorers = []
    if system.rerank is not None:
        rpath = stored(system.rerank, system.int8, work)
        row["megabytes"] += rpath.stat().st_size / 1e6
        row["rerank_model"] = system.rerank.name
        scorers = assign_directions([*ens.bundles, load_model(rpath)], None)[len(paths) :]
    scoring = ScoringConfig()
    weights = None
    for split in ("val", "test2016"):
        src, ref = sets[split]
        t0 = time.perf_counter()
        results = list(translate_lines(ens, src, cfg))
        if scorers:
            table = feature_table(results, scorers, scoring, escaped=ens.tgt_tok.escape)
            if weights is None:  # val: tune on it, and two-fold on its halves
                t_tune = time.perf_counter()
                stats = compute_hyp_stats(table.sentences(), ref, bleu).stats
                search_names, _ = feature_names(len(paths), scorers)
                start = {n: float(n in search_names) for n in table.names}
                res = tune(table, stats, start, MertConfig())
                weights = res.weights
                row["rerank_weights"] = weights
                row["val_search_bleu"] = res.start_bleu
                fold_stats = np.zeros(stats.shape[1], dtype=np.int64)
                a, b = _halves(table.n_sentences, seed=7)
                for on, off in ((a, b), (b, a)):
                    t_on, r_on = table.subset(on)
                    t_off, r_off = table.subset(off)
                    w = tune(t_on, stats[r_on], start, MertConfig()).weights
                    wv = np.array([w[n] for n in t_off.names])
                    pick = t_off.rows_of(select_best(t_off.values @ wv, t_off.offsets))
                    fold_stats += stats[r_off][pick].sum(axis=0)
                from nbest_rescore.metrics import corpus_bleu_from_stats

                row["val_bleu_two_fold"] = corpus_bleu_from_stats(fold_stats)
                write_rerank_weights(
                    work / f"{system.name}.rerank.json", weights,
                    {"dev_bleu": res.dev_bleu, "dev_bleu_search": res.start_bleu,
                     "dev_bleu_two_fold": row["val_bleu_two_fold"],
                     "dev_sentences": len(src), "beam": BEAM, "nbest": BEAM,
                     "mert": asdict(MertConfig()), "signature": signature(bleu)},
                    {"search": [str(p) for p in system.models], "rerank": [str(system.rerank)]},
                )  # fmt: skip
                t0 += time.perf_counter() - t_tune  # the seconds are translation's
            wv = np.array([weights[n] for n in table.names])
            choice = select_best(table.values @ wv, table.offsets)
            hyps = [
                r.hypotheses[c] if r.hypotheses else None
                for r, c in zip(results, choice, strict=True)
            ]
            from nbest_rescore.text import detokenize

            texts = [detokenize(list(h.tokens), ens.tgt_tok) if h else "" for h in hyps]
        else:
            texts = [r.text for r in results]
        row[f"{split}_seconds"] = time.perf_counter() - t0
        row[f"{split}_bleu"] = corpus_bleu(texts, ref, bleu).score
        row[f"{split}_empty"] = sum(not t for t in texts)
        (work / f"{system.name}.{split}.txt").write_text("".join(t + "\n" for t in texts))
    return row


def section(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        BEGIN,
        "## Which translator to ship: direct translation, beam 12",
        "",
        f"Produced by `{result['command']}` at commit `{result['commit']}` on "
        f"{result['machine']}, {result['date']}. BLEU `{result['signature']}`. Reranked systems "
        "rerank the beam's 12 hypotheses with the right-to-left model and `Length0` "
        "(`rescore translate --rerank`), weights tuned by MERT on val; their val BLEU is given "
        "in-sample and two-fold (each half of val reranked with weights tuned on the other), "
        "the figure the choice is made by. Sizes are the files' as shipped (int8: a scale per "
        "row). Seconds are in translators.json only: the machine was shared with training.",
        "",
        "| system | storage | MB | val BLEU | val BLEU two-fold | test2016 BLEU | empty |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        fold = f"{r['val_bleu_two_fold']:.2f}" if "val_bleu_two_fold" in r else ""
        lines.append(
            f"| {r['system']} | {r['storage']} | {r['megabytes']:.0f} | {r['val_bleu']:.2f} | "
            f"{fold} | {r['test2016_bleu']:.2f} | {r['test2016_empty']} |"
        )
    lines += ["", result.get("reading", ""), END]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    from pipelines.multi30k.beyond import splice

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--system", action="append", required=True, help="NAME=SPEC (see above)")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    d = args.data_dir
    sets = {
        "val": (read_lines(d / "val.en.gz"), read_lines(d / "val.fr.gz")),
        "test2016": (read_lines(d / "test_2016_flickr.en.gz"),
                     read_lines(d / "test_2016_flickr.fr.gz")),
    }  # fmt: skip
    args.work_dir.mkdir(parents=True, exist_ok=True)
    out = args.work_dir / "translators.json"
    done = {r["system"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}
    rows = []
    for spec in args.system:
        system = System.parse(spec)
        row = done.get(system.name) or measure(system, sets, args.work_dir)
        rows.append(row)
        done[system.name] = row
        out.write_text(json.dumps({"rows": list(done.values())}, indent=1))
        print(json.dumps(row), flush=True)
    result = {
        "rows": rows,
        **run_record("pipelines.multi30k.translators", argv, _commit(), threads=1),
        "signature": signature(BleuConfig(tokenize="13a", tgt_lang="fr")),
    }
    out.write_text(json.dumps(result, indent=1))
    splice(args.results, section(result), BEGIN, END)
    print(section(result))


if __name__ == "__main__":
    main()
