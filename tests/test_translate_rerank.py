"""`rescore translate --rerank`: a weak copier's beam lists reranked with a strong right-to-left
copier, weights tuned on a dev set by MERT, and the reranked output copies more sentences."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.checkpoint import load_model, model_payload, save_checkpoint
from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines
from nbest_rescore.search import SearchConfig
from nbest_rescore.translate import TranslateConfig, translate_lines
from tests.test_translate import SRC_TOK, TGT_TOK, VOCAB, WORDS, train_copy_model

torch.set_num_threads(1)
runner = CliRunner()


def lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A weak left-to-right copier (few steps) and a strong right-to-left one."""
    out = tmp_path_factory.mktemp("rerank")
    paths = {}
    for name, steps, over in (("weak", 120, {}), ("r2l", 900, {"reverse_target": True})):
        model = train_copy_model(11, steps, VOCAB, **over)
        paths[name] = out / f"{name}.pt"
        save_checkpoint(paths[name], model_payload(model, VOCAB, VOCAB, SRC_TOK, TGT_TOK))
    for split, seed in (("dev", 1), ("test", 2)):
        paths[split] = out / f"{split}.txt"
        paths[split].write_text("\n".join(lines(40, seed)) + "\n")
    return paths


def translate(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["translate", "--beam", "6", "--tokenize", "none", "--quiet", *args])
    return res.exit_code, res.stderr


def test_tuned_reranking_beats_the_search_and_round_trips(
    models: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "rerank.json"
    m = ["-m", str(models["weak"])]
    code, err = translate(
        *m, "--rerank", "--rerank-model", str(models["r2l"]), "--tune-src", str(models["dev"]),
        "--tune-ref", str(models["dev"]), "--rerank-weights", str(weights),
        "-i", str(models["test"]), "-o", str(tmp_path / "reranked.txt"),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(weights.read_text())
    assert set(doc["weights"]) == {"LSTM0", "R2L0", "Length0"}
    assert doc["tuning"]["dev_bleu"] > doc["tuning"]["dev_bleu_search"]
    assert doc["tuning"]["nbest"] == doc["tuning"]["beam"] == 6
    assert [m["name"] for m in doc["models"]["rerank"]] == ["r2l.pt"]

    src = read_lines(models["test"])
    plain = tmp_path / "plain.txt"
    assert translate(*m, "-i", str(models["test"]), "-o", str(plain))[0] == 0
    reranked = read_lines(tmp_path / "reranked.txt")
    exact = sum(a == b for a, b in zip(reranked, src, strict=True))
    before = sum(a == b for a, b in zip(read_lines(plain), src, strict=True))
    assert exact > before, (exact, before)
    # Every output is one of the search's own hypotheses.
    beam = list(translate_lines([load_model(models["weak"])], src,
                                TranslateConfig(SearchConfig(beam=6, nbest=6))))  # fmt: skip
    assert all(out in {" ".join(h.tokens) for h in r.hypotheses}
               for out, r in zip(reranked, beam, strict=True))  # fmt: skip

    # The written weights give the same output when read back.
    again = tmp_path / "again.txt"
    code, err = translate(
        *m, "--rerank", "--rerank-model", str(models["r2l"]), "--rerank-weights", str(weights),
        "-i", str(models["test"]), "-o", str(again),
    )  # fmt: skip
    assert code == 0, err
    assert again.read_text() == (tmp_path / "reranked.txt").read_text()


def test_rerank_errors_name_the_problem(models: dict[str, Path], tmp_path: Path) -> None:
    m = ["-m", str(models["weak"]), "-i", str(models["test"]), "-o", str(tmp_path / "o.txt")]
    code, err = translate(*m, "--rerank", "--rerank-model", str(models["r2l"]))
    assert code == 2 and "--rerank-weights" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"weights": {"LSTM0": 1.0, "T2S0": 0.5, "Length0": 0.1}}))
    code, err = translate(
        *m, "--rerank", "--rerank-model", str(models["r2l"]), "--rerank-weights", str(other)
    )
    assert code == 2 and "T2S0" in err and "R2L0" in err
    code, err = translate(*m, "--rerank-weights", str(other))
    assert code == 2 and "need --rerank" in err
    code, err = translate(*m, "--rerank", "--nbest", "3", "--rerank-weights", str(other))
    assert code == 2 and "--nbest" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, err = translate(
        *m, "--rerank", "--rerank-model", str(models["r2l"]), "--rerank-weights", str(bad)
    )
    assert code == 2 and "bad.json" in err
    assert not (tmp_path / "o.txt").exists()


def test_shipped_models_rerank_by_default_with_their_rerank_json(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -m, translate reranks with the shipped rerank.json (and --no-rerank does not);
    a shipped directory without one translates as before."""
    from nbest_rescore.shipped import ENV_VAR

    shipped = tmp_path / "models"
    shipped.mkdir()
    (shipped / "a.pt").write_bytes(models["weak"].read_bytes())
    (shipped / "b-r2l.pt").write_bytes(models["r2l"].read_bytes())
    monkeypatch.setenv(ENV_VAR, str(shipped))
    io = ["-i", str(models["test"]), "-o"]
    assert translate(*io, str(tmp_path / "plain.txt"))[0] == 0
    assert translate(*io, str(tmp_path / "plain-m.txt"), "-m", str(shipped / "a.pt"))[0] == 0
    assert (tmp_path / "plain.txt").read_text() == (tmp_path / "plain-m.txt").read_text()

    code, err = translate(
        *io, str(tmp_path / "tuned.txt"), "--rerank", "--tune-src", str(models["dev"]),
        "--tune-ref", str(models["dev"]), "--rerank-weights", str(shipped / "rerank.json"),
    )  # fmt: skip
    assert code == 0, err
    assert translate(*io, str(tmp_path / "default.txt"))[0] == 0
    assert (tmp_path / "default.txt").read_text() == (tmp_path / "tuned.txt").read_text()
    assert (tmp_path / "default.txt").read_text() != (tmp_path / "plain.txt").read_text()
    assert translate(*io, str(tmp_path / "off.txt"), "--no-rerank")[0] == 0
    assert (tmp_path / "off.txt").read_text() == (tmp_path / "plain.txt").read_text()
