"""Reports: tables built once as pandas DataFrames, written as Markdown, CSV, JSON and an HTML page
with PNG plots, plus the machine-readable `summary.json` whose keys are stable (README.md).

`report.html` carries its plots inside it (data URIs), so it can be moved or mailed alone;
`report.md` links the PNG files next to it."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from nbest_rescore import __version__
from nbest_rescore.fileio import atomic_write


@dataclass
class Report:
    """Everything one job reports; `write_report` turns it into files."""

    title: str
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def provenance(
    inputs: Mapping[str, str | None], *, sha256: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """What produced a report: input file hashes (`sha256`: those taken as the inputs were read,
    by input name; the others are hashed here), package versions, time, machine."""
    import sacrebleu
    import torch

    from nbest_rescore.fileio import sha256_file

    def digest(name: str, p: str) -> str | None:
        known = (sha256 or {}).get(name)
        return known or (sha256_file(p) if p != "-" else None)

    return {
        "inputs": {
            name: {"path": str(p), "sha256": digest(name, p)}
            for name, p in inputs.items()
            if p is not None
        },
        "versions": {
            "nbest_rescore": __version__,
            "sacrebleu": sacrebleu.__version__,
            "torch": torch.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.system()}",
        **extra,
    }


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def format_cell(column: str, v: Any) -> str:
    """A table cell: p-values with 4 decimals, floats with 2 (4 significant digits below 1, so
    weights like 0.0263 stay readable), missing values blank."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if column == "p_value":
            return f"{v:.4f}"
        return f"{v:.4g}" if 0 < abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [format_cell(c, v) for c, v in zip(cols, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = [
        "<tr>"
        + "".join(
            f"<td>{html.escape(format_cell(c, v))}</td>" for c, v in zip(cols, row, strict=True)
        )
        + "</tr>"
        for row in df.itertuples(index=False)
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


REPORT_FILES = (
    "summary.json",
    "report.md",
    "report.html",
    "*.png",
    "tables/*.csv",
    "tables/*.json",
)
"""What `write_report` writes into its directory (glob patterns), for `output_guard.OutDir`."""


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write summary.json, report.md, report.html, tables/*.{csv,json} and *.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = {**report.summary, "provenance": report.provenance}
    with atomic_write(out_dir / "summary.json") as fh:
        fh.write(to_json(summary))
    written.append(out_dir / "summary.json")
    for name, df in report.tables.items():
        for ext in ("csv", "json"):
            path = out_dir / "tables" / f"{name}.{ext}"
            with atomic_write(path) as fh:
                fh.write(
                    df.to_csv(index=False)
                    if ext == "csv"
                    else df.to_json(orient="records", indent=2)
                )
            written.append(path)
    pngs = {name: _png(fig) for name, fig in report.figures.items()}
    for name, data in pngs.items():
        path = out_dir / f"{name}.png"
        with atomic_write(path, "wb", gz=False) as fh:
            fh.write(data)
        written.append(path)

    md = [f"# {report.title}", ""]
    md += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
    for name, df in report.tables.items():
        md += [f"## {name.replace('_', ' ')}", "", _markdown_table(df), ""]
    for name in report.figures:
        md += [f"![{name}]({name}.png)", ""]
    md += ["## Provenance", "", "```json", to_json(report.provenance).rstrip(), "```", ""]
    with atomic_write(out_dir / "report.md") as fh:
        fh.write("\n".join(md))
    written.append(out_dir / "report.md")

    body = [f"<h1>{html.escape(report.title)}</h1>"]
    body += [f"<p>{html.escape(n)}</p>" for n in report.notes]
    for name, df in report.tables.items():
        body += [
            f"<h2>{html.escape(name.replace('_', ' '))}</h2>",
            _html_table(df),
        ]
    for name, data in pngs.items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        body.append(f'<p><img src="{uri}" alt="{html.escape(name)}"></p>')
    body += ["<h2>Provenance</h2>", f"<pre>{html.escape(to_json(report.provenance))}</pre>"]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.title)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ccc;text-align:right}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    with atomic_write(out_dir / "report.html") as fh:
        fh.write(page)
    written.append(out_dir / "report.html")
    return written


# ---------------------------------------------------------------------------------------------
# Plots (the shapes of the paper's analyses)


def plot_oracle_at_k(oracle_at_k: Mapping[int, float], baseline: float | None = None) -> Figure:
    """Oracle BLEU as the n-best list is cut to its top k."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted(oracle_at_k)
    ax.plot(ks, [oracle_at_k[k] for k in ks], marker="o", label="corpus oracle @k")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="1-best")
    ax.set_xscale("log")
    ax.set_xlabel("k (top-k hypotheses considered)")
    ax.set_ylabel("BLEU")
    ax.set_title("Oracle BLEU by n-best depth")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_rank_histogram(hist: pd.DataFrame, title: str = "Rank of the chosen hypotheses") -> Figure:
    """Bar chart of chosen ranks; `hist` has a 'rank' column and one count column per system."""
    fig, ax = plt.subplots(figsize=(7, 4))
    systems = [c for c in hist.columns if c != "rank"]
    width = 0.8 / max(1, len(systems))
    xs = range(len(hist))
    for i, s in enumerate(systems):
        ax.bar([x + i * width for x in xs], hist[s], width=width, label=s)
    ax.set_xticks([x + 0.4 - width / 2 for x in xs])
    ax.set_xticklabels(hist["rank"].astype(str))
    ax.set_xlabel("rank in the n-best list (1 = decoder's best)")
    ax.set_ylabel("sentences")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_bleu_by_length(by_len: pd.DataFrame, systems: Sequence[str]) -> Figure:
    """BLEU per source-length bucket for several systems (the paper's Figure 3 shape)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in systems:
        ax.plot(by_len["length"].astype(str), by_len[s], marker="o", label=s)
    ax.set_xlabel("source sentence length (tokens)")
    ax.set_ylabel("BLEU")
    ax.set_title("BLEU by sentence length")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig
