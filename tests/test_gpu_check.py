"""`python -m bench.gpu_check` runs on the CPU (tiny sizes): CUDA-only parts are skipped and say so, the
CPU checks pass, and its JSON holds the figures of every part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from nbest_rescore.nbest_reader import read_nbest

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "tests" / "data" / "test2016.head30.top20.nbest.gz"


def test_gpu_check_runs_on_cpu_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, "-m", "bench.gpu_check", "--presets", "tiny",
           "--check-preset", "tiny", "--sentences", "2", "--train-steps", "1", "--beam", "2",
           "--matmul-size", "256", "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["git"]["commit"] and data["date"] and data["machine"]["cpu_count"]
    assert data["cuda"] == torch.cuda.is_available() and data["failed"] == []
    parts = data["parts"]
    for attention in ("attention_none", "attention_luong"):
        assert parts["scores"][attention]["cpu_trie_vs_padded_max_abs"] <= 1e-4
    if not data["cuda"]:
        assert "no CUDA" in data["skipped"]["scores"] and "no CUDA" in data["skipped"]["sharding"]
        assert parts["sharding"]["status"] == "skipped" and "skipped" in proc.stdout
        assert data["device"].startswith("cpu")
    # the scoring runs covered every token (+ EOS) of the first two sentences of the real slice
    groups = list(read_nbest(SLICE))[:2]
    tokens = sum(len(h.tokens) + 1 for g in groups for h in g.hyps)
    score = parts["score"]["runs"]
    assert [(r["preset"], r["share_prefixes"]) for r in score] == [("tiny", False), ("tiny", True)]
    assert all(r["target_tokens"] == tokens and r["target_tokens_per_s"] > 0 for r in score)
    assert all(r["fraction_of_flop_bound"] > 0 for r in score)
    (train,) = parts["train"]["runs"]
    assert train["preset"] == "tiny" and train["tgt_tokens_per_s"] > 0
    assert 0 < train["fraction_of_flop_bound"] < 1
    (translate,) = parts["translate"]["runs"]
    assert translate["sentences"] == 2 and translate["sentences_per_s"] > 0
