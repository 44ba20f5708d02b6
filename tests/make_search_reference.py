"""Write tests/data/search_reference.json.gz: the n-best lists that `test_search_reference.py`
compares every later beam search against.

It translates the first 100 lines of data/multi30k/test2016.en.gz with the shipped left-to-right
model (data/models/att-rev-1.pt) at beams 1, 5 and 12, keeping the whole n-best list (nbest = beam),
on one CPU thread, with the search code of the commit it runs on. The stored file was made with the
search of commit e65dfd4 (before issue 26's faster generator), so the test checks the new search
against the old one's output. Rerun only on purpose (a new shipped model, a deliberate change of
the search's output):

    PYTHONPATH=$PWD python tests/make_search_reference.py
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import torch

from nbest_rescore.checkpoint import load_model
from nbest_rescore.ensemble import Ensemble
from nbest_rescore.fileio import read_lines
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, translate_lines

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "data" / "models" / "att-rev-1.pt"
SOURCE = ROOT / "data" / "multi30k" / "test2016.en.gz"
OUT = ROOT / "tests" / "data" / "search_reference.json.gz"
SENTENCES = 100
BEAMS = (1, 5, 12)
BATCH_SIZE = 32


def reference(beam: int, ens: Ensemble, lines: list[str]) -> list[list[dict[str, object]]]:
    """Per sentence, its n-best list (nbest = beam) as ids, ensemble score and model scores."""
    cfg = TranslateConfig(SearchConfig(beam=beam, nbest=beam, batch_size=BATCH_SIZE))
    return [
        [{"ids": list(h.ids), "score": h.score, "model_scores": list(h.model_scores)}
         for h in r.hypotheses]
        for r in translate_lines(ens, lines, cfg)
    ]  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    bundle = load_model(MODEL)
    ens = Ensemble([bundle])
    lines = read_lines(SOURCE)[:SENTENCES]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    payload = {
        "model": MODEL.name,
        "model_sha256": bundle.sha256,
        "source": f"first {SENTENCES} lines of data/multi30k/test2016.en.gz",
        "batch_size": BATCH_SIZE,
        "threads": 1,
        "made_with_commit": commit,
        "beams": {str(k): reference(k, ens, lines) for k in BEAMS},
    }
    with gzip.GzipFile(OUT, "wb", mtime=0) as fh:
        fh.write(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
