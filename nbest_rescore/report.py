"""Reports: tables built once as `Frame`s (pandas DataFrames are taken too), written as Markdown, CSV, JSON and an HTML page
with PNG plots, plus the machine-readable `summary.json` whose keys are stable (README.md).

`report.html` carries its plots inside it (data URIs), so it can be moved or mailed alone;
`report.md` links the PNG files next to it."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbest_rescore import __version__
from nbest_rescore.fileio import atomic_write
from nbest_rescore.frame import Frame
from nbest_rescore.headline import Fact, Headline, Segment, headline

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass
class Report:
    """Everything one job reports; `write_report` turns it into files."""

    title: str
    summary: dict[str, Any]
    tables: dict[str, Frame | pd.DataFrame] = field(default_factory=dict)
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
            "pandas": _version("pandas"),
            "python": platform.python_version(),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.system()}",
        **extra,
    }


def _version(dist: str) -> str | None:
    """An installed distribution's version, read without importing it (pandas costs 0.5 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"


INTEGER_COLUMNS = ("hyp_len", "ref_len", "sentence", "sentences", "k")
SIGNED_COLUMNS = ("delta_bleu",)
BLEU_TABLES = ("systems", "examples", "oracle_at_k", "bleu_by_length")
"""Tables whose other numbers are all BLEU points (scores, n-gram precisions, per-system columns)."""


def format_cell(column: str, v: Any, table: str = "") -> str:
    """A table cell, one format a kind of number: p-values with 4 decimals; BLEU points (every
    other number of a `BLEU_TABLES` table; gains signed) with 2; the brevity penalty with 3;
    counts as integers; weights and other numbers with 4 significant digits (0.0263, 3.3, 0);
    missing values blank."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        return str(v)
    x = float(v)
    if column == "p_value":
        return f"{x:.4f}"
    if column in INTEGER_COLUMNS or isinstance(v, numbers.Integral):
        return f"{x:.0f}"
    if column in SIGNED_COLUMNS:
        return f"{x:+.2f}"
    if column == "bp":
        return f"{x:.3f}"
    if table in BLEU_TABLES:
        return f"{x:.2f}"
    return f"{x:.4g}"


def _output_rows(df: Frame) -> list[bool]:
    """Rows of the output system (a `role` column says `output`), marked in both renderings."""
    if "role" not in df.columns:
        return [False] * len(df)
    return [r == "output" for r in df["role"]]


def _markdown_table(df: Frame, name: str = "") -> str:
    cols = df.columns
    align = [":---" if df.is_text(c) else "---:" for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join(align) + " |"]
    for row, out in zip(df.rows(), _output_rows(df), strict=True):
        cells = [
            format_cell(c, v, name).replace("|", "\\|") for c, v in zip(cols, row, strict=True)
        ]
        if out:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(df: Frame, name: str = "") -> str:
    cols = df.columns
    text = [df.is_text(c) for c in cols]

    def cls(is_text: bool) -> str:
        return ' class="t"' if is_text else ""

    head = "".join(f"<th{cls(t)}>{html.escape(c)}</th>" for c, t in zip(cols, text, strict=True))
    body = [
        ('<tr class="output">' if out else "<tr>")
        + "".join(
            f"<td{cls(t)}>{html.escape(format_cell(c, v, name))}</td>"
            for c, v, t in zip(cols, row, text, strict=True)
        )
        + "</tr>"
        for row, out in zip(df.rows(), _output_rows(df), strict=True)
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _segments_md(line: Sequence[Segment]) -> str:
    return "".join(f"**{s.text}**" if isinstance(s, Fact) else s for s in line)


def _segments_html(line: Sequence[Segment]) -> str:
    return "".join(
        f'<b data-key="{html.escape(s.key)}">{html.escape(s.text)}</b>'
        if isinstance(s, Fact)
        else html.escape(s)
        for s in line
    )


FIRST_TABLES = ("systems", "examples")
"""Tables shown right after the headline, in this order; the others follow the plots."""

TABLE_INTROS = {
    "systems": "Every system's BLEU on this list, in reading order: the baseline, the output "
    "(bold), the other systems, then the oracles (selections made with the reference: bounds, "
    "so no p-value). delta_bleu: the difference to the baseline.",
    "examples": "Sentences where the output's 1-best differs from the baseline's: those whose "
    "smoothed sentence BLEU rose most, then those where it fell most.",
}


def _ordered_tables(tables: Mapping[str, object]) -> list[str]:
    first = [n for n in FIRST_TABLES if n in tables]
    return [*first, *(n for n in tables if n not in first)]


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
    """Write summary.json, report.md, report.html, tables/*.{csv,json} and *.png into `out_dir`.

    Both pages open with the headline (`headline.headline`, from the summary alone), then the
    systems table and the examples, the plots, the other tables, the notes, and the provenance
    folded at the end."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = {**report.summary, "provenance": report.provenance}
    with atomic_write(out_dir / "summary.json") as fh:
        fh.write(to_json(summary))
    written.append(out_dir / "summary.json")
    tables = {name: Frame.of(t) for name, t in report.tables.items()}
    for name, df in tables.items():
        for ext in ("csv", "json"):
            path = out_dir / "tables" / f"{name}.{ext}"
            with atomic_write(path) as fh:
                fh.write(df.to_csv() if ext == "csv" else df.to_json())
            written.append(path)
    pngs = {name: _png(fig) for name, fig in report.figures.items()}
    for name, data in pngs.items():
        path = out_dir / f"{name}.png"
        with atomic_write(path, "wb", gz=False) as fh:
            fh.write(data)
        written.append(path)
    report = replace(report, tables=dict(tables))
    for name, text in (
        ("report.md", _markdown_page(report)),
        ("report.html", _html_page(report, pngs)),
    ):
        with atomic_write(out_dir / name) as fh:
            fh.write(text)
        written.append(out_dir / name)
    return written


def _page_parts(report: Report) -> tuple[Headline | None, str, list[str], list[str]]:
    """The headline, the title, and the tables shown before the plots and after them."""
    head = headline(report.summary)
    title = head.title if head is not None else report.title
    order = _ordered_tables(report.tables)
    first = [n for n in order if n in FIRST_TABLES]
    return head, title, first, [n for n in order if n not in FIRST_TABLES]


def _markdown_page(report: Report) -> str:
    """report.md: the page, with the plots linked as the PNG files beside it."""
    head, title, first, rest = _page_parts(report)
    md = [f"# {title}", ""]
    if head is not None:
        md += [f"- {_segments_md(line)}" for line in head.lines] + ["", f"*{report.title}*", ""]

    def md_table(name: str) -> list[str]:
        intro = [TABLE_INTROS[name], ""] if name in TABLE_INTROS else []
        return [
            f"## {name.replace('_', ' ')}",
            "",
            *intro,
            _markdown_table(Frame.of(report.tables[name]), name),
            "",
        ]

    for name in first:
        md += md_table(name)
    for name in report.figures:
        md += [f"![{name}]({name}.png)", ""]
    for name in rest:
        md += md_table(name)
    if report.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    md += [
        "<details><summary>Provenance (inputs, versions, machine)</summary>",
        "",
        "```json",
        to_json(report.provenance).rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(md)


def _html_page(report: Report, pngs: Mapping[str, bytes]) -> str:
    """report.html: the page, standing alone (plots embedded as data URIs)."""
    head, title, first, rest = _page_parts(report)
    body = ['<section id="headline">', f"<h1>{html.escape(title)}</h1>"]
    if head is not None:
        body += ["<ul>", *(f"<li>{_segments_html(line)}</li>" for line in head.lines), "</ul>"]
        body.append(f'<p class="sub">{html.escape(report.title)}</p>')
    body.append("</section>")

    def html_table(name: str) -> list[str]:
        intro = [f"<p>{html.escape(TABLE_INTROS[name])}</p>"] if name in TABLE_INTROS else []
        return [
            f'<h2 id="{html.escape(name)}">{html.escape(name.replace("_", " "))}</h2>',
            *intro,
            f'<div class="scroll">{_html_table(Frame.of(report.tables[name]), name)}</div>',
        ]

    for name in first:
        body += html_table(name)
    for name, data in pngs.items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        body.append(f'<p><img src="{uri}" alt="{html.escape(name)}"></p>')
    for name in rest:
        body += html_table(name)
    if report.notes:
        body += ["<h2>Notes</h2>", "<ul>", *(f"<li>{html.escape(n)}</li>" for n in report.notes)]
        body.append("</ul>")
    body += [
        "<details><summary>Provenance (inputs, versions, machine)</summary>",
        f"<pre>{html.escape(to_json(report.provenance))}</pre></details>",
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;"
    "line-height:1.4;color:#222}"
    "#headline{border:1px solid #bcd;background:#f4f8fc;border-radius:6px;padding:.2em 1.2em}"
    "#headline h1{font-size:1.6em;margin:.5em 0 .3em}#headline li{margin:.25em 0}"
    ".sub{color:#666;font-size:.9em}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{padding:.2em .6em;border-bottom:1px solid #ccc;text-align:right;vertical-align:top}"
    "td.t,th.t{text-align:left}tr.output td{font-weight:bold;background:#fff6d6}"
    ".scroll{overflow-x:auto}img{max-width:100%}"
    "details{margin:1.5em 0}pre{white-space:pre-wrap;font-size:.85em}"
)


# ---------------------------------------------------------------------------------------------
# Plots (the shapes of the paper's analyses)


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure and its axes without pyplot: nothing global to close, and matplotlib is imported
    only by runs that plot (it costs about half a second of start-up)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def plot_oracle_at_k(
    oracle_at_k: Mapping[int, float],
    baseline: float | None = None,
    output: tuple[str, float] | None = None,
) -> Figure:
    """Oracle BLEU as the n-best list is cut to its top k, with the 1-best and (`output`: name,
    BLEU) the run's output system as horizontal lines; k's ticks are the plain numbers."""
    from matplotlib.ticker import NullLocator

    fig, ax = _figure(6, 4)
    ks = sorted(oracle_at_k)
    ax.plot(ks, [oracle_at_k[k] for k in ks], marker="o", label="corpus oracle @k")
    if output is not None:
        ax.axhline(output[1], color="tab:red", label=f"output: {output[0]} ({output[1]:.2f})")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label=f"1-best ({baseline:.2f})")
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k (top-k hypotheses considered)")
    ax.set_ylabel("BLEU")
    ax.set_title("Oracle BLEU by n-best depth")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_rank_histogram(hist: Frame, title: str = "Rank of the chosen hypotheses") -> Figure:
    """Bar chart of chosen ranks; `hist` has a 'rank' column and one count column per system."""
    fig, ax = _figure(7, 4)
    systems = [c for c in hist.columns if c != "rank"]
    width = 0.8 / max(1, len(systems))
    xs = range(len(hist))
    for i, s in enumerate(systems):
        ax.bar([x + i * width for x in xs], hist[s], width=width, label=s)
    ax.set_xticks([x + 0.4 - width / 2 for x in xs])
    ax.set_xticklabels([str(r) for r in hist["rank"]])
    ax.set_xlabel("rank in the n-best list (1 = decoder's best)")
    ax.set_ylabel("sentences")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_bleu_by_length(by_len: Frame | pd.DataFrame, systems: Sequence[str]) -> Figure:
    """BLEU per source-length bucket for several systems (the paper's Figure 3 shape)."""
    fig, ax = _figure(7, 4)
    frame = Frame.of(by_len)
    for s in systems:
        ax.plot([str(x) for x in frame["length"]], frame[s], marker="o", label=s)
    ax.set_xlabel("source sentence length (tokens)")
    ax.set_ylabel("BLEU")
    ax.set_title("BLEU by sentence length")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig
