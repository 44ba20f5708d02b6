"""Learning curves: validation perplexity per epoch of training runs, from their log.jsonl.

    python -m pipelines.multi30k.curves RUN_DIR [RUN_DIR ...] --out curves.png

Also returns (and the study embeds) a table of each run's validations: epoch, lr, perplexity.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def validations(log: Path) -> pd.DataFrame:
    """The `valid` records of one run's log.jsonl (epoch, step, lr, valid_ppl, elapsed_s)."""
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("event") == "valid":
            rows.append({k: rec[k] for k in ("epoch", "step", "lr", "valid_ppl", "elapsed_s")})
    return pd.DataFrame(rows, columns=["epoch", "step", "lr", "valid_ppl", "elapsed_s"])


def plot_curves(runs: dict[str, pd.DataFrame], out: Path) -> Path:
    """Validation perplexity against epochs, one line per run (log scale), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, df in runs.items():
        ax.plot(df["epoch"], df["valid_ppl"], marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity (Multi30k val)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="training run directories")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs = {d.name: validations(d / "log.jsonl") for d in a.runs}
    print(plot_curves(runs, a.out))
    for name, df in runs.items():
        print(f"{name}: best {df['valid_ppl'].min():.2f} after {len(df)} validations")


if __name__ == "__main__":
    main()
