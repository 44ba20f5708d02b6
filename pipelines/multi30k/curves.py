"""Learning curves: validation perplexity per epoch of training runs, from their log.jsonl.

    python -m pipelines.multi30k.curves RUN_DIR [RUN_DIR ...] --out curves.png

Also returns (and the study embeds) a table of each run's validations: epoch, lr, perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def log_records(log: Path) -> list[dict[str, Any]]:
    """Every record of a training run's log.jsonl, in file order."""
    return [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]


def validations(log: Path) -> pd.DataFrame:
    """The `valid` records of one run's log.jsonl (epoch, step, lr, valid_ppl, elapsed_s)."""
    keys = ["epoch", "step", "lr", "valid_ppl", "elapsed_s"]
    rows = [{k: r[k] for k in keys} for r in log_records(log) if r.get("event") == "valid"]
    return pd.DataFrame(rows, columns=keys)


def active_seconds(log: Path, outlier: float = 3.0) -> float:
    """Training time of a run whose log has no CPU time (`cpu_s`), without the time it spent
    paused: its wall clock (`elapsed_s`) summed between consecutive records, where a stretch
    slower than `outlier` times the run's median seconds per step (a stopped or starved process)
    counts at the median instead. Steps a resume discarded (logged after the checkpoint it
    resumed from) are not counted, as the resumed clock does not count them either."""
    spans: list[tuple[int, int, float]] = []  # (step before, step after, seconds)
    prev: tuple[int, float | None] = (0, 0.0)  # None: resumed, the clock at that step unknown
    for rec in log_records(log):
        if rec.get("event") == "resume":
            spans = [sp for sp in spans if sp[1] <= rec["step"]]
            prev = (rec["step"], None)
        elif rec.get("event") in ("train", "valid"):
            since = prev[1]
            # the stretch after a resume is counted at the median (math.inf marks it an outlier)
            spans.append(
                (prev[0], rec["step"], math.inf if since is None else rec["elapsed_s"] - since)
            )
            prev = (rec["step"], rec["elapsed_s"])
    stepping = [(b - a, t) for a, b, t in spans if b > a]
    validating = [t for a, b, t in spans if b == a]
    per_step = _median([t / n for n, t in stepping])
    per_valid = _median(validating)
    total = sum(per_step * n if t > outlier * per_step * n else t for n, t in stepping)
    return total + sum(per_valid if t > outlier * per_valid else t for t in validating)


def _median(xs: list[float]) -> float:
    finite = [x for x in xs if math.isfinite(x)]
    return float(np.median(finite)) if finite else 0.0


def line_looks(n: int) -> list[tuple[str, str]]:
    """(colour, line style) for `n` lines: ten colours, then the next line style, so no two
    runs of a crowded plot look alike (up to 30)."""
    styles = ("-", "--", ":")
    return [(f"C{i % 10}", styles[(i // 10) % len(styles)]) for i in range(n)]


def plot_curves(runs: dict[str, pd.DataFrame], out: Path) -> Path:
    """Validation perplexity against epochs, one line per run (log scale), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, df), (colour, style) in zip(runs.items(), line_looks(len(runs)), strict=True):
        ax.plot(
            df["epoch"],
            df["valid_ppl"],
            color=colour,
            linestyle=style,
            marker="o",
            markersize=3,
            label=name,
        )
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
