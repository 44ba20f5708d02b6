"""Ship a trained model as the package default: half-precision weights under data/models/, the
interpolation weights tuned on the val n-best list, and a model card.

    python -m pipelines.multi30k.ship_model CKPT TUNE_SUMMARY_DIR [--name NAME]

TUNE_SUMMARY_DIR is the `--out` of a `rescore run` with `--tune-nbest` (its weights.json and
summary.json are copied and summarised).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nbest_rescore.checkpoint import load_model, model_payload, save_checkpoint
from nbest_rescore.fileio import atomic_write, sha256_file
from nbest_rescore.model import count_parameters

ROOT = Path(__file__).resolve().parents[2]


def ship(ckpt: Path, tuned: Path, name: str, log: Path | None) -> Path:
    bundle = load_model(ckpt)
    out_dir = ROOT / "data" / "models"
    dest = out_dir / f"{name}.pt"
    save_checkpoint(
        dest,
        model_payload(
            bundle.model,
            bundle.src_vocab,
            bundle.tgt_vocab,
            bundle.src_tok,
            bundle.tgt_tok,
            half=True,
        ),
    )
    weights = json.loads((tuned / "weights.json").read_text())
    with atomic_write(out_dir / "weights.json") as fh:
        fh.write(json.dumps(weights, indent=2) + "\n")
    summary = json.loads((tuned / "summary.json").read_text())
    systems = "\n".join(f"| {k} | {v['bleu']:.2f} |" for k, v in summary.get("systems", {}).items())
    train_info = ""
    if log is not None and log.is_file():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        valid = [r for r in records if r.get("event") == "valid"]
        cfg = records[0].get("config", {})
        train_info = (
            f"- Training: {json.dumps({k: cfg.get(k) for k in ('optimizer', 'lr', 'batch_size', 'epochs', 'dropout', 'lr_decay_start', 'lr_decay_every', 'vocab_min_count', 'seed', 'reverse_source')})}\n"
            f"- Best validation perplexity: {min(r['valid_ppl'] for r in valid):.2f} "
            f"(val, {len(valid)} validations)\n"
        )
    c = bundle.config
    depth = summary.get("provenance", {}).get("max_hyps")
    depth_txt = "all hypotheses" if depth is None else f"the top {depth} hypotheses of every list"
    card = f"""# Default model: `{name}.pt`

- Architecture: the 2014 LSTM encoder-decoder, `small` preset: {c.layers} x {c.hidden} LSTM, {c.emb_dim}-d
  embeddings, {"reversed" if c.reverse_source else "forward"} source, no attention;
  {count_parameters(bundle.model):,} parameters; vocabularies {c.src_vocab_size:,} (en) / {c.tgt_vocab_size:,} (fr).
- Data: Multi30k task 1 English->French, the 29,000 training pairs; validated on its 1,014 val pairs.
  Tokenisation: sacremoses, no escaping, case kept (saved in the checkpoint).
{train_info}- Weights stored in fp16 (loaded as fp32); sha256 of this file: `{sha256_file(dest)}`
  (training checkpoint `{bundle.sha256}`).
- `weights.json`: interpolation weights over `Baseline0` (the Moses total), `LSTM0` (the model's
  log-prob) and `Length0` (words), tuned by MERT on the Multi30k val Moses n-best list
  ({depth_txt}); `rescore run` without `-m` uses them and calls that system `given`. Dev BLEU
  {summary.get("tuning", {}).get("dev_bleu", float("nan")):.2f} against
  {summary.get("tuning", {}).get("dev_bleu_even_average", float("nan")):.2f} for the scale-aware even average.

## Test2016 scores of that run ({depth_txt}, `rescore run`, {summary.get("signature")})

The `tuned` row is what `rescore run` reports as `given` with the shipped weights.

| system | BLEU |
| --- | --- |
{systems}

Licence: trained on Multi30k, non-commercial research data (see `data/README.md`).
"""
    with atomic_write(out_dir / "MODEL_CARD.md") as fh:
        fh.write(card)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("tuned", type=Path)
    p.add_argument("--name", default="small-rev")
    p.add_argument("--log", type=Path, default=None)
    a = p.parse_args()
    print(ship(a.checkpoint, a.tuned, a.name, a.log))


if __name__ == "__main__":
    main()
