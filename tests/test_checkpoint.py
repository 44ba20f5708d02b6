"""Checkpoints: round trip with the full file hash, safe loading, and config, vocabularies and
weights checked against each other."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nbest_rescore.checkpoint import load_model, read_checkpoint, save_checkpoint
from nbest_rescore.errors import CheckpointError


def _cut_target_vocab(p: dict[str, Any]) -> None:
    p["tgt_vocab"] = p["tgt_vocab"][:-5]


def _wider_config(p: dict[str, Any]) -> None:
    p["model_config"]["hidden"] *= 2


def _nan_weight(p: dict[str, Any]) -> None:
    p["model"]["out.bias"][3] = float("nan")


def _inf_weight(p: dict[str, Any]) -> None:
    p["model"]["decoder.weight_hh_l0"][5, 2] = float("-inf")


def _missing_weight(p: dict[str, Any]) -> None:
    del p["model"]["out.weight"]


def _unknown_attention(p: dict[str, Any]) -> None:
    p["model_config"]["attention"] = "dot"


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "cut vocabulary": (_cut_target_vocab, r"target vocabulary has \d+ entries, the model \d+"),
    "wider config": (_wider_config, r"has shape .* the config implies"),
    "NaN weight": (_nan_weight, r"out\.bias holds NaN"),
    "infinite weight": (_inf_weight, r"decoder\.weight_hh_l0 holds NaN or infinite"),
    "missing weight": (_missing_weight, r"weights missing: out\.weight"),
    "unknown attention": (_unknown_attention, r"unknown attention 'dot'"),
}


def test_a_config_claiming_a_huge_model_is_refused_before_it_is_built(
    slice_checkpoint: Path, tmp_path: Path
) -> None:
    """Sizes within the config's bounds that the weights do not back (4.4 trillion parameters:
    building the model first would try to allocate 17 TB) are compared as shapes only."""
    payload = read_checkpoint(slice_checkpoint)
    payload["model_config"].update(layers=64, hidden=1 << 16, emb_dim=1 << 16)
    bad = tmp_path / "huge.pt"
    save_checkpoint(bad, payload)
    with pytest.raises(CheckpointError, match=r"weights missing: .*_l63|config implies"):
        load_model(bad)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_inconsistent_checkpoint_is_refused_with_what_disagrees(
    slice_checkpoint: Path, tmp_path: Path, case: str
) -> None:
    mutate, message = BROKEN[case]
    payload = read_checkpoint(slice_checkpoint)
    mutate(payload)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, payload)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(bad)
    assert str(bad) in str(err.value)


def test_cli_exits_2_on_a_cut_vocabulary(slice_checkpoint: Path, tmp_path: Path) -> None:
    payload = read_checkpoint(slice_checkpoint)
    _cut_target_vocab(payload)
    bad = tmp_path / "cut.pt"
    save_checkpoint(bad, payload)
    proc = subprocess.run(
        [sys.executable, "-m", "nbest_rescore", "translate", "-m", str(bad), "--quiet"],
        input="a man .\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cut.pt" in proc.stderr and "target vocabulary" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pickled_code_never_runs(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path(tmp_path / "pwned").touch, ())

    path = tmp_path / "evil.pt"
    torch.save({"format": "nbest_rescore/checkpoint/1", "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def test_load_records_the_full_file_hash(slice_checkpoint: Path) -> None:
    bundle = load_model(slice_checkpoint)
    assert bundle.sha256 == hashlib.sha256(slice_checkpoint.read_bytes()).hexdigest()
    again = load_model(slice_checkpoint)
    for (k, a), (_, b) in zip(
        bundle.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert bundle.src_vocab.itos == again.src_vocab.itos


def test_bad_checkpoints_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"missing\.pt"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_model(junk)


def _python_stdout(code: str) -> str:
    """What a fresh interpreter running `code` prints (the imports of one process, unshared)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def _cli_loads(module: str, argv: list[str]) -> bool:
    """Whether `rescore argv`, run to its end in a fresh interpreter, imported `module`."""
    code = (
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: print({module!r} in sys.modules))\n"
        f"sys.argv = {['rescore', *argv]!r}\n"
        "runpy.run_module('nbest_rescore', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] == "True"


def test_loading_builds_no_random_weights_and_imports_no_compiler(slice_checkpoint: Path) -> None:
    """A load is every weight from the file, and start-up stays free of what it need not import:
    torch._dynamo (the meta-device shell's normal init pulled it in, seconds) and matplotlib."""
    code = (
        "import sys, torch\n"
        "from nbest_rescore.checkpoint import load_model, read_checkpoint\n"
        f"p = {str(slice_checkpoint)!r}\n"
        "b = load_model(p)\n"
        "saved = read_checkpoint(p)['model']\n"
        "state = b.model.state_dict()\n"
        "assert set(state) == set(saved)\n"
        "assert all(torch.equal(state[k], saved[k].float()) for k in saved)\n"
        "import nbest_rescore.run_job, nbest_rescore.translate\n"
        "print(sorted(m for m in ('torch._dynamo', 'matplotlib') if m in sys.modules))\n"
    )
    assert _python_stdout(code).strip() == "[]"


def test_translating_imports_neither_pandas_nor_sacrebleu() -> None:
    """`rescore translate`, reranking included, needs no tables and no BLEU unless it tunes or
    scores a reference: pandas and sacrebleu (about a second of start-up together) stay out."""
    code = (
        "import sys\n"
        "import nbest_rescore.cli, nbest_rescore.translate, nbest_rescore.translate_rerank\n"
        "print(sorted(m for m in ('pandas', 'sacrebleu') if m in sys.modules))\n"
    )
    assert _python_stdout(code).strip() == "[]"


def test_translating_tokenized_text_to_tokens_never_loads_sacremoses(
    slice_checkpoint: Path, tmp_path: Path
) -> None:
    """`rescore translate --src-tokenized --tokenized-output` neither tokenizes nor detokenizes,
    so sacremoses (half a second of regex compiling on import) stays out; the output is the
    model's tokens, and the same command on raw text does load it."""
    src = tmp_path / "src.tok.en"
    src.write_text("a man is riding a bike .\ntwo dogs play in the snow .\n", encoding="utf-8")
    for extra, loads in ((["--src-tokenized", "--tokenized-output"], False), ([], True)):
        out = tmp_path / f"out{len(extra)}.txt"
        argv = ["translate", "--quiet", "--device", "cpu", "-m", str(slice_checkpoint),
                "--beam", "3", "-i", str(src), "-o", str(out), *extra]  # fmt: skip
        assert _cli_loads("sacremoses", argv) is loads
        assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_a_whole_run_with_its_report_imports_no_pandas(
    slice_checkpoint: Path, slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    """`rescore run` end to end (tuning, BLEU report, tables, plots, scores.parquet) on the real
    slice, in a fresh interpreter: pandas (half a second of start-up) is never imported, and the
    outputs are all there."""
    out = tmp_path / "out"
    argv = ["run", "--quiet", "--device", "cpu", "-m", str(slice_checkpoint),
            "--nbest", str(slice_paths["nbest"]), "--src", str(slice_paths["src"]),
            "--ref", str(slice_paths["ref"]), "--out", str(out)]  # fmt: skip
    assert not _cli_loads("pandas", argv)
    for name in ("scores.parquet", "report.html", "tables/systems.csv", "tables/examples.json"):
        assert (out / name).stat().st_size > 0, name


def test_int8_storage_round_trips_within_half_a_step_and_scores_alike(
    slice_checkpoint: Path, slice_paths: dict[str, Path], tmp_path: Path
) -> None:
    """int8 storage: each weight matrix within half a quantization step of the fp32 one, about
    a quarter of the file, and scores of the real slice's hypotheses close to fp32's; broken
    scales are refused naming the tensor."""
    from nbest_rescore.checkpoint import model_payload
    from nbest_rescore.fileio import read_lines
    from nbest_rescore.nbest_reader import read_nbest
    from nbest_rescore.scoring import ScoringConfig, score_hypotheses

    b = load_model(slice_checkpoint)
    args = (b.model, b.src_vocab, b.tgt_vocab, b.src_tok, b.tgt_tok)
    full, small = tmp_path / "fp32.pt", tmp_path / "int8.pt"
    save_checkpoint(full, model_payload(*args))
    save_checkpoint(small, model_payload(*args, int8=True))
    assert small.stat().st_size < 0.35 * full.stat().st_size
    q = load_model(small)
    payload = read_checkpoint(small)
    for name, w in b.model.state_dict().items():
        got = q.model.state_dict()[name]
        assert got.dtype == torch.float32
        if name in payload["int8_row_scales"]:
            step = payload["int8_row_scales"][name][:, None]
            assert bool(((got - w).abs() <= step / 2 + 1e-7).all()), name
        else:  # vectors stay fp16
            assert torch.equal(got, w.half().float()), name
    groups = list(read_nbest(slice_paths["nbest"]))[:10]
    hyps = [h.tokens for g in groups for h in g.hyps]
    src = read_lines(slice_paths["src"])[: len(groups)]  # the slice's ids are 0, 1, 2, ...
    hyp_src = [i for i, g in enumerate(groups) for _ in g.hyps]
    cfg = ScoringConfig()
    a = score_hypotheses(b, src, hyps, hyp_src, cfg, escaped=False).logprob
    c = score_hypotheses(q, src, hyps, hyp_src, cfg, escaped=False).logprob
    assert abs(a - c).max() < 0.05 * abs(a).mean()
    assert (a != c).any()  # it is quantized

    for change, match in (
        (lambda p: p["int8_row_scales"].pop("out.weight"), "out.weight is stored as int8"),
        (lambda p: p["int8_row_scales"]["out.weight"].mul_(-1), "out.weight: a row scale"),
        (lambda p: p["int8_row_scales"].update({"out.bias": torch.ones(3)}), "out.bias"),
    ):
        p = read_checkpoint(small)
        change(p)
        bad = tmp_path / "bad.pt"
        save_checkpoint(bad, p)
        with pytest.raises(CheckpointError, match=match):
            load_model(bad)
