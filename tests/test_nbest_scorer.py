"""The on-disk chunk store: cached, resumable after SIGKILL, and sharded under torchrun."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nbest_rescore.checkpoint import ModelBundle, load_model, model_payload, save_checkpoint
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.model import ModelConfig, Seq2Seq
from nbest_rescore.nbest_reader import read_nbest
from nbest_rescore.nbest_scorer import NBestScores, bf16_check, score_nbest
from nbest_rescore.scoring import ScoringConfig, hypothesis_ids, naive_scores, source_tokens
from nbest_rescore.table import read_table
from nbest_rescore.text import TokenizerConfig, escape_token, tokenize
from nbest_rescore.vocab import Vocab

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"
SRC = DATA / "test2016.head30.en.gz"
SCRIPT = Path(__file__).parent / "score_shard_script.py"
CHUNK = 3  # sentences per chunk: 10 chunks on the 30-sentence slice
ARRAYS = ("logprob", "n_tokens", "n_unk", "offsets")


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sources() -> list[str]:
    return read_lines(SRC)


@pytest.fixture(scope="module")
def groups(sources: list[str]) -> list[list[tuple[str, ...]]]:
    return [[h.tokens for h in g.hyps] for g in read_nbest(NBEST, n_sentences=len(sources))]


@pytest.fixture(scope="module")
def model_paths(
    tmp_path_factory: pytest.TempPathFactory, sources: list[str], groups: list
) -> list[Path]:
    """Two tiny random models (different seeds, one not reversing the source), saved to disk."""
    src_tok, tgt_tok = TokenizerConfig("en"), TokenizerConfig("fr")
    src_vocab = Vocab.build([tokenize(s, src_tok) for s in sources], max_size=120)
    tgt_vocab = Vocab.build([h for g in groups for h in g], max_size=150)
    out = []
    for seed, reverse in ((1, True), (2, False)):
        torch.manual_seed(seed)
        config = ModelConfig.preset(
            "tiny",
            src_vocab_size=len(src_vocab),
            tgt_vocab_size=len(tgt_vocab),
            layers=2,
            reverse_source=reverse,
        )
        path = tmp_path_factory.mktemp("models") / f"m{seed}.pt"
        payload = model_payload(Seq2Seq(config), src_vocab, tgt_vocab, src_tok, tgt_tok)
        save_checkpoint(path, payload)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def bundles(model_paths: list[Path]) -> list[ModelBundle]:
    return [load_model(p) for p in model_paths]


def _cfg() -> ScoringConfig:
    return ScoringConfig(max_tokens=400, chunk_sentences=CHUNK)


def _n_files(cache: Path) -> int:
    return len(list(cache.rglob("*.npz")))


def test_scores_in_file_order_match_the_naive_scorer(
    tmp_path: Path, sources: list[str], groups: list, bundles: list[ModelBundle]
) -> None:
    res = score_nbest(NBEST, sources, bundles, _cfg(), tmp_path / "cache")
    hyps = [h for g in groups for h in g]
    owner = [i for i, g in enumerate(groups) for _ in g]
    assert res.logprob.shape == (len(hyps), 2) and res.logprob.dtype == np.float64
    assert res.n_sentences == len(sources) == 30
    np.testing.assert_array_equal(np.diff(res.offsets), [len(g) for g in groups])
    np.testing.assert_array_equal(res.n_tokens, [len(h) + 1 for h in hyps])
    for m, b in enumerate(bundles):
        src_ids = [b.src_vocab.encode(t) for t in source_tokens(sources, b, tokenized=False)]
        ref = naive_scores(b.model, src_ids, hypothesis_ids(hyps, b, escaped=False), owner)
        np.testing.assert_allclose(res.logprob[:, m], ref, rtol=0, atol=1e-5)
        assert res.tgt_oov_rate[m] == pytest.approx(b.tgt_vocab.oov_rate(hyps))
        src_tok = [tokenize(s, b.src_tok) for s in sources]
        assert res.src_oov_rate[m] == pytest.approx(b.src_vocab.oov_rate(src_tok))
    assert 0 < res.tgt_oov_rate[0] < 1
    assert not res.escaped
    assert res.timing["chunk_files_scored"] == res.timing["chunk_files"] == 20
    assert _n_files(tmp_path / "cache") == 20


def _same(a: NBestScores, b: NBestScores) -> bool:
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in ARRAYS)


def test_cache_reuses_models_and_unchanged_chunks(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    cache = tmp_path / "cache"
    one = score_nbest(NBEST, sources, bundles[:1], _cfg(), cache)
    both = score_nbest(NBEST, sources, bundles, _cfg(), cache)
    assert both.timing["chunk_files_scored"] == 10  # only the second model's chunks
    assert both.logprob[:, 0].tobytes() == one.logprob[:, 0].tobytes()
    again = score_nbest(NBEST, sources, bundles, _cfg(), cache)
    assert again.timing["chunk_files_scored"] == 0 and _same(both, again)
    assert _same(both, score_nbest(NBEST, sources, bundles, _cfg(), None))  # no cache kept

    # Change one hypothesis of sentence 13 (chunk 4): only that chunk is scored again.
    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    i = next(j for j, line in enumerate(lines) if line.startswith("13 |||"))
    parts = lines[i].split(" ||| ")
    parts[1] = "une toute autre phrase ."
    lines[i] = " ||| ".join(parts)
    changed_path = tmp_path / "changed.nbest"
    changed_path.write_text("".join(lines), encoding="utf-8")
    changed = score_nbest(changed_path, sources, bundles, _cfg(), cache)
    assert changed.timing["chunk_files_scored"] == 2
    chunk = slice(int(both.offsets[12]), int(both.offsets[15]))  # sentences 12-14
    outside = np.ones(len(both.logprob), dtype=bool)
    outside[chunk] = False
    assert changed.logprob[outside].tobytes() == both.logprob[outside].tobytes()
    assert (np.abs(changed.logprob[i] - both.logprob[i]) > 1e-3).all()
    others = np.arange(chunk.start, chunk.stop) != i
    np.testing.assert_allclose(
        changed.logprob[chunk][others], both.logprob[chunk][others], rtol=0, atol=1e-5
    )


def test_other_settings_do_not_reuse_chunks(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    cache = tmp_path / "cache"
    score_nbest(NBEST, sources, bundles[:1], _cfg(), cache)
    other = ScoringConfig(max_tokens=200, chunk_sentences=CHUNK)
    assert score_nbest(NBEST, sources, bundles[:1], other, cache).timing["chunk_files_scored"] == 10


def test_escaped_nbest_is_detected_and_scores_the_same(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    plain = score_nbest(NBEST, sources, bundles[:1], _cfg(), tmp_path / "c")
    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    escaped_path = tmp_path / "escaped.nbest"
    with open(escaped_path, "w", encoding="utf-8") as fh:
        for line in lines:
            parts = line.split(" ||| ")
            parts[1] = " ".join(escape_token(t) for t in parts[1].split())
            fh.write(" ||| ".join(parts))
    assert "&apos;" in escaped_path.read_text(encoding="utf-8")
    res = score_nbest(escaped_path, sources, bundles[:1], _cfg(), tmp_path / "c")
    assert res.escaped and not plain.escaped
    assert res.timing["chunk_files_scored"] > 0 and _same(res, plain)
    forced = ScoringConfig(max_tokens=400, chunk_sentences=CHUNK, escaped=False)
    wrong = score_nbest(escaped_path, sources, bundles[:1], forced, tmp_path / "c")
    assert wrong.tgt_oov_rate[0] > plain.tgt_oov_rate[0]


def test_bf16_check_reports_the_largest_difference(
    sources: list[str], bundles: list[ModelBundle]
) -> None:
    diffs = bf16_check(read_table(NBEST), sources, bundles, _cfg(), n_sentences=3)
    assert len(diffs) == 2 and all(0 < d < 1 for d in diffs)


def test_source_count_mismatch_fails_before_scoring(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        score_nbest(NBEST, sources[:25], bundles, _cfg(), cache, sources_path="short.en")
    msg = str(err.value)
    assert str(NBEST) in msg and "short.en" in msg and "29" in msg and "25" in msg
    assert not cache.exists() or _n_files(cache) == 0


def test_missing_ids_and_extra_sources(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    full = score_nbest(NBEST, sources, bundles[:1], _cfg(), tmp_path / "c")
    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    gap = tmp_path / "gap.nbest"
    gap.write_text("".join(x for x in lines if not x.startswith("4 |||")), encoding="utf-8")
    res = score_nbest(gap, [*sources, "an extra source ."], bundles[:1], _cfg(), tmp_path / "c")
    assert res.n_sentences == 31
    assert res.sentence(4).start == res.sentence(4).stop and res.sentence(30).stop == len(
        res.logprob
    )
    keep = np.r_[0 : full.offsets[4], full.offsets[5] : full.offsets[30]]
    np.testing.assert_allclose(res.logprob[:, 0], full.logprob[keep, 0], rtol=0, atol=1e-5)
    # Chunks other than the changed first (ids 3-5) and last were read from the cache.
    assert res.timing["chunk_files_scored"] == 2


def _run_script(cache: Path, out: Path, models: list[Path], *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(SCRIPT), *_script_args(cache, out, models), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())


def _script_args(cache: Path, out: Path, models: list[Path]) -> list[str]:
    args = ["--nbest", str(NBEST), "--src", str(SRC), "--cache", str(cache), "--out", str(out)]
    args += ["--chunk-sentences", str(CHUNK), "--max-tokens", "400"]
    for m in models:
        args += ["--model", str(m)]
    return args


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in ARRAYS}
        data["timing"] = json.loads(str(z["timing"]))
    return data


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, model_paths: list[Path]) -> dict:
    """An uninterrupted single-process run in its own cache directory."""
    d = tmp_path_factory.mktemp("reference")
    _finish(_run_script(d / "cache", d / "out", model_paths))
    return _load(d / "out.rank0.npz")


def _assert_identical(a: dict, b: dict) -> None:
    for k in ARRAYS:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def test_killed_run_resumes_to_identical_results(
    tmp_path: Path, model_paths: list[Path], reference_run: dict
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    proc = _run_script(cache, out, model_paths, "--sleep", "0.4")
    deadline = time.monotonic() + 90
    while _n_files(cache) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = _n_files(cache)
    assert 4 <= done < 20
    assert not Path(f"{out}.rank0.npz").exists()

    _finish(_run_script(cache, out, model_paths))
    resumed = _load(Path(f"{out}.rank0.npz"))
    assert resumed["timing"]["chunk_files_scored"] == 20 - done
    _assert_identical(resumed, reference_run)


def test_torchrun_two_ranks_match_one_process(
    tmp_path: Path, model_paths: list[Path], reference_run: dict
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(SCRIPT), *_script_args(cache, out, model_paths)]
    proc = subprocess.run(cmd, capture_output=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    for rank in (0, 1):
        res = _load(Path(f"{out}.rank{rank}.npz"))
        _assert_identical(res, reference_run)
        assert res["timing"]["world_size"] == 2
        assert res["timing"]["chunk_files_scored"] == 10  # 5 chunks x 2 models per rank


def test_target_to_source_model_through_the_store(
    tmp_path: Path, model_paths: list[Path], sources: list[str], groups: list
) -> None:
    """A model trained fr->en beside an en->fr one: it is recognised as target-to-source by its
    languages, scores p(source | hypothesis) through the cache, and keeps its own cache key."""
    from nbest_rescore.checkpoint import assign_directions
    from nbest_rescore.errors import CheckpointError
    from nbest_rescore.scoring import score_source_given_hypotheses

    s2t = load_model(model_paths[0])
    torch.manual_seed(5)
    config = ModelConfig.preset(
        "tiny", src_vocab_size=len(s2t.tgt_vocab), tgt_vocab_size=len(s2t.src_vocab)
    )
    path = tmp_path / "t2s.pt"
    save_checkpoint(
        path,
        model_payload(Seq2Seq(config), s2t.tgt_vocab, s2t.src_vocab, s2t.tgt_tok, s2t.src_tok),
    )
    bundles = assign_directions([s2t, load_model(path)], None)
    assert [b.direction for b in bundles] == ["s2t", "t2s"]
    assert "target-to-source" in bundles[1].kind
    with pytest.raises(CheckpointError, match="no source-to-target model"):
        assign_directions(bundles[1:], "en")
    cfg = ScoringConfig(chunk_sentences=CHUNK)
    res = score_nbest(NBEST, sources, bundles, cfg, tmp_path / "cache")
    hyps = [h for g in groups for h in g]
    owner = [i for i, g in enumerate(groups) for _ in g]
    direct = score_source_given_hypotheses(
        bundles[1], sources, hyps, owner, cfg, escaped=res.escaped
    )
    np.testing.assert_allclose(res.logprob[:, 1], direct.logprob, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.n_tokens, [len(h) + 1 for h in hyps])
    assert res.model_sha256[1].endswith("-t2s")


def test_repeated_chunks_are_scored_once(
    tmp_path: Path, sources: list[str], bundles: list[ModelBundle]
) -> None:
    """The real slice twice over (ids shifted by 30, sources repeated): the second copy's chunks
    have the same content, so they are loaded, not scored again, and their scores are the first
    copy's bit for bit."""
    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    shifted = [f"{int(i) + 30} ||| {rest}" for i, _, rest in (x.partition(" ||| ") for x in lines)]
    doubled = tmp_path / "doubled.nbest"
    doubled.write_text("".join(lines + shifted), encoding="utf-8")
    got = score_nbest(doubled, sources * 2, bundles, _cfg(), tmp_path / "cache")
    assert got.timing["chunk_files_scored"] == 20  # 10 distinct chunks x 2 models
    assert got.timing["chunk_files"] == 40
    half = len(got.logprob) // 2
    assert got.logprob[:half].tobytes() == got.logprob[half:].tobytes()
    once = score_nbest(NBEST, sources, bundles, _cfg(), None)
    assert got.logprob[:half].tobytes() == once.logprob.tobytes()
