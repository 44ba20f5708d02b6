"""Report files: a page that carries its own plots, readable cells, full hashes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd

from nbest_rescore.report import Report, plot_oracle_at_k, provenance, write_report


def test_html_embeds_its_plots_and_stands_alone(tmp_path: Path) -> None:
    report = Report(
        title="t",
        summary={"n_sentences": 2},
        tables={
            "systems": pd.DataFrame(
                {"system": ["a", "b"], "bleu": [1.0, 2.5], "p_value": [None, 0.000999]}
            )
        },
        figures={"oracle_at_k": plot_oracle_at_k({1: 10.0, 2: 12.0}, 10.0)},
        provenance=provenance({"input": __file__}),
    )
    write_report(report, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    png = (tmp_path / "out" / "oracle_at_k.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| b | 2.50 | 0.0010 |" in md and "| a | 1.00 |  |" in md
    assert "<td>0.0010</td>" in html and "<td>nan</td>" not in html and "None" not in md
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(s["provenance"]["inputs"]["input"]["sha256"]) == 64
