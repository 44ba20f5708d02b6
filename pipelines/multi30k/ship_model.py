"""Ship trained models as the package defaults: half-precision weights under data/models/, the
interpolation weights tuned for them on the val n-best list, and a model card.

    python -m pipelines.multi30k.ship_model --model NAME=RUN_DIR [--model NAME=RUN_DIR ...] \\
        --tuned RESCORE_OUT [--command "how the models were trained"] [--int8]
    python -m pipelines.multi30k.ship_model --add NAME=RUN_DIR:FEATURE [--int8]

RUN_DIR is a training run (`rescore train --out`: its checkpoint_best.pt and log.jsonl); RESCORE_OUT
is the `--out` of a `rescore run` with exactly these models (in this order) and `--tune-nbest`: its
weights.json and summary.json are copied and summarised. Other `*.pt` files in data/models/ are
removed, so the directory holds exactly the shipped set (`rescore run` uses all of them,
`rescore translate` the left-to-right ones); training.json keeps each model's training record
(validations, time, configuration) for the study once the run directories are gone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nbest_rescore.checkpoint import ModelBundle, load_model, model_payload, save_checkpoint
from nbest_rescore.fileio import atomic_write, sha256_file
from nbest_rescore.model import count_parameters
from pipelines.multi30k.curves import log_records

ROOT = Path(__file__).resolve().parents[2]
STORAGE = {False: "fp16", True: "int8 with an fp32 scale per row (vectors in fp16)"}
OUT_DIR = ROOT / "data" / "models"
TRAIN_KEYS = (
    "preset", "optimizer", "lr", "lr_schedule", "batch_size", "epochs", "dropout", "patience",
    "vocab_min_count", "seed", "reverse_source", "reverse_target", "attention",
)  # fmt: skip


def _training(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = log_records(run / "log.jsonl")
    return records[0].get("config", {}), [r for r in records if r.get("event") == "valid"]


def _training_record(run: Path, bundle: ModelBundle) -> dict[str, Any]:
    """What the study needs of a shipped model once its run directory is gone (training.json)."""
    cfg, valid = _training(run)
    best = min(valid, key=lambda r: r["valid_ppl"])
    keys = ("epoch", "step", "lr", "valid_ppl", "elapsed_s")
    return {
        "best_valid_ppl": best["valid_ppl"],
        "best_epoch": best["epoch"],
        "epochs_done": max(r["epoch"] for r in valid),
        "elapsed_s": max(r["elapsed_s"] for r in valid),
        # CPU time only where every validation logged it (runs resumed from older checkpoints lack it)
        "cpu_s": valid[-1].get("cpu_s") if all(r.get("cpu_s") is not None for r in valid) else None,
        "finished": (run / "done.json").is_file(),
        "training_checkpoint_sha256": bundle.sha256,
        "config": {k: cfg.get(k) for k in TRAIN_KEYS},
        "validations": [{k: r[k] for k in keys} for r in valid],
    }


def _model_section(
    name: str, dest: Path, bundle: ModelBundle, run: Path, feature: str, int8: bool = False
) -> str:
    cfg, valid = _training(run)
    best = min(valid, key=lambda r: r["valid_ppl"])
    c = bundle.config
    return f"""## `{name}.pt` (feature `{feature}`)

- {c.kind}; {c.layers} x {c.hidden} LSTM, {c.emb_dim}-d embeddings, attention `{c.attention}`;
  {count_parameters(bundle.model):,} parameters; vocabularies {c.src_vocab_size:,}
  ({bundle.src_tok.lang}) / {c.tgt_vocab_size:,} ({bundle.tgt_tok.lang}).
- Training: `{json.dumps({k: cfg.get(k) for k in TRAIN_KEYS})}`.
- Best validation perplexity {best["valid_ppl"]:.2f} at epoch {best["epoch"]:.0f} of
  {max(r["epoch"] for r in valid):.0f} ({len(valid)} validations, {best["elapsed_s"] / 60:.0f} min of
  one CPU thread to the best checkpoint).
- Weights stored in {STORAGE[int8]} (loaded as fp32); sha256 of this file: `{sha256_file(dest)}`
  (training checkpoint `{bundle.sha256}`).
"""


def ship(
    models: list[tuple[str, Path]], tuned: Path, command: str, int8: bool = False
) -> list[Path]:
    summary = json.loads((tuned / "summary.json").read_text())
    features = [m["feature"] for m in summary["models"]]
    if len(features) != len(models):
        raise SystemExit(f"{tuned} was run with {len(features)} models, not {len(models)}")
    keep = {f"{name}.pt" for name, _ in models}
    for old in OUT_DIR.glob("*.pt"):
        if old.name not in keep:
            old.unlink()
    sections, dests, records = [], [], {}
    for (name, run), feature in zip(models, features, strict=True):
        bundle = load_model(run / "checkpoint_best.pt")
        dest = OUT_DIR / f"{name}.pt"
        payload = model_payload(
            bundle.model, bundle.src_vocab, bundle.tgt_vocab, bundle.src_tok, bundle.tgt_tok,
            half=True, int8=int8,
        )  # fmt: skip
        save_checkpoint(dest, payload)
        sections.append(_model_section(name, dest, bundle, run, feature, int8))
        records[name] = _training_record(run, bundle)
        dests.append(dest)
    with atomic_write(OUT_DIR / "training.json") as fh:
        fh.write(json.dumps(records, indent=2) + "\n")
    weights = json.loads((tuned / "weights.json").read_text())
    with atomic_write(OUT_DIR / "weights.json") as fh:
        fh.write(json.dumps(weights, indent=2) + "\n")
    tuning = summary.get("tuning", {})
    depth = summary.get("provenance", {}).get("max_hyps")
    depth_txt = "all hypotheses" if depth is None else f"the top {depth} hypotheses of every list"
    systems = "\n".join(
        f"| {k} | {v['bleu']:.2f} | {summary.get('significance', {}).get(k, {}).get('p_value', '')} |"
        for k, v in summary.get("systems", {}).items()
    )
    card = f"""# Default models

`rescore run` without `-m` scores with every model below (one feature each) and weighs them with
`weights.json`; `rescore translate` without `-m` uses the left-to-right source-to-target ones.
Data: Multi30k task 1 English->French, the 29,000 training pairs, validated on its 1,014 val
pairs; tokenisation sacremoses, no escaping, case kept (saved in each checkpoint). How they were
trained: `{command}`.

{chr(10).join(sections)}
## `weights.json`

Weights over {", ".join(f"`{f}`" for f in weights["weights"])}, tuned by MERT on the Multi30k val
Moses n-best list ({depth_txt}): dev BLEU {tuning.get("dev_bleu", float("nan")):.2f} against
{tuning.get("dev_bleu_even_average", float("nan")):.2f} for the scale-aware even average.
`rescore run` without `-m` uses them and calls that system `given`.

## Test2016 scores of that run ({depth_txt}, `rescore run`, {summary.get("signature")})

The `tuned` row is what `rescore run` reports as `given` with the shipped weights; p-values are
paired bootstrap against the Moses 1-best.

| system | BLEU | p-value |
| --- | --- | --- |
{systems}

Licence: trained on Multi30k, non-commercial research data (see `data/README.md`).
"""
    with atomic_write(OUT_DIR / "MODEL_CARD.md") as fh:
        fh.write(card)
    return dests


def add(name: str, run: Path, feature: str, int8: bool) -> Path:
    """Add one trained model to the shipped set, leaving the others as they are: its file, its
    training record in training.json and its section in the model card (before `weights.json`'s;
    the weights, rerank.json and the card's tables are then retuned and rewritten separately)."""
    bundle = load_model(run / "checkpoint_best.pt")
    dest = OUT_DIR / f"{name}.pt"
    save_checkpoint(dest, model_payload(
        bundle.model, bundle.src_vocab, bundle.tgt_vocab, bundle.src_tok, bundle.tgt_tok,
        half=True, int8=int8,
    ))  # fmt: skip
    records = json.loads((OUT_DIR / "training.json").read_text())
    records[name] = _training_record(run, bundle)
    with atomic_write(OUT_DIR / "training.json") as fh:
        fh.write(json.dumps(records, indent=2) + "\n")
    card = (OUT_DIR / "MODEL_CARD.md").read_text()
    head = f"## `{name}.pt`"
    if head in card:  # replace the model's old section
        before, rest = card.split(head, 1)
        card = before + rest[rest.index("\n## ") + 1 :]
    section = _model_section(name, dest, bundle, run, feature, int8)
    marker = "## `weights.json`"
    card = card.replace(marker, section + "\n" + marker, 1)
    with atomic_write(OUT_DIR / "MODEL_CARD.md") as fh:
        fh.write(card)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", help="NAME=RUN_DIR, in run order")
    p.add_argument("--tuned", type=Path)
    p.add_argument(
        "--add", help="NAME=RUN_DIR:FEATURE: add one model to the shipped set (nothing else)"
    )
    p.add_argument("--command", default="python -m pipelines.multi30k (see RESULTS.md)")
    p.add_argument("--int8", action="store_true", help="store weight matrices as int8")
    a = p.parse_args()
    if a.add:
        name, rest = a.add.split("=", 1)
        run, feature = rest.rsplit(":", 1)
        print(add(name, Path(run), feature, a.int8))
        return
    if not a.model or a.tuned is None:
        p.error("--model and --tuned are needed (or --add)")
    models = [(spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in a.model]
    for dest in ship(models, a.tuned, a.command, a.int8):
        print(dest)


if __name__ == "__main__":
    main()
